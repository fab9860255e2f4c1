"""Lead conversion as a recorded, resumable sequence of idempotent steps.

There is no distributed transaction: the customer, the contact and the deal live in
other services and maybe on other servers. A `lead_conversions` row on the lead's
shard records how far a conversion got and the ids made so far:

    started -> customer_done -> contact_done -> deal_done -> completed

Each step is idempotent on its own (the records it makes carry the source key
`lead:<id>`, so repeating a step finds them), and each state change is a
compare-and-set from the state the step started in. A retry, or `resume_conversions`
for a conversion left in progress, runs from the recorded state; only the last step
marks the lead converted, in the transaction that marks the conversion completed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import Unavailable

State = Literal["started", "customer_done", "contact_done", "deal_done", "completed"]
Step = Literal["customer", "contact", "deal", "complete"]

STATES: tuple[State, ...] = ("started", "customer_done", "contact_done", "deal_done", "completed")
_STEP_FROM: dict[State, Step] = {
    "started": "customer",
    "customer_done": "contact",
    "contact_done": "deal",
    "deal_done": "complete",
}
# The steps after which a fault can be injected (before their state is recorded).
FAULT_POINTS: tuple[str, ...] = ("customer", "contact", "deal")


def source_key(lead_id: int) -> str:
    """The key every record a lead's conversion makes carries (idempotency)."""
    return f"lead:{lead_id}"


def step_for(state: State) -> Step | None:
    """The step that moves a conversion on from `state` (None once completed)."""
    return _STEP_FROM.get(state)


def next_state(state: State) -> State:
    """The state after `state`'s step succeeded; a completed conversion stays so."""
    if state == "completed":
        raise ValueError("a completed conversion has no next state")
    return STATES[STATES.index(state) + 1]


def is_transition(before: State, after: State) -> bool:
    """Whether `before -> after` is one step forward (the only change ever recorded)."""
    return before != "completed" and next_state(before) == after


def is_open(state: State) -> bool:
    return state != "completed"


class InjectedFault(Unavailable):
    """A crash between steps, injected by a test through the deployment's
    `user_config`; it leaves the conversion exactly as a real crash would."""


@dataclass(frozen=True)
class ConversionFaults:
    """A fault-injection seam, off unless the Serve `user_config` sets
    `fail_conversion_after` to a step: the step's work is done, its state is not
    recorded, and the call fails as if the process had died there."""

    fail_after: str | None = None

    @classmethod
    def from_user_config(cls, config: dict[str, Any] | None) -> ConversionFaults:
        value = (config or {}).get("fail_conversion_after")
        if value is not None and value not in FAULT_POINTS:
            raise ValueError(f"fail_conversion_after must be one of {', '.join(FAULT_POINTS)}")
        return cls(value)

    def after(self, step: Step) -> None:
        if self.fail_after == step:
            raise InjectedFault(f"injected fault after the {step} step")
