"""The rules of a ticket's life, as pure functions (no SQL, no clock of their own:
every function that needs the time takes `now`).

Status (Zendesk's New/Open/Pending/Solved/Closed, with Open called "assigned"):

    new ──────► assigned ◄──────► pending
     │  ╲          │   ▲             │
     │   ╲         ▼   │ reopen      ▼
     └────╲───► resolved ◄───────────┘
           ╲       │
            pending  ▼
                 closed  (final)

SLA clocks, per the priority's policy:
- first response: due `first_response_s` after creation; stops at the first public
  agent comment (or when the ticket is resolved without one).
- resolution: due `resolution_s` after creation; **stopped while the ticket is
  pending or resolved** (waiting on the customer). When it starts again, the due time
  moves later by exactly the stopped time, which also adds to `sla_paused_s`.
- a clock is breached when it stopped after its due time, or is still running past
  it. Breach flags, once stored, are never cleared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

Status = Literal["new", "assigned", "pending", "resolved", "closed"]
Priority = Literal["low", "normal", "high", "urgent"]
Strategy = Literal["round_robin", "least_busy", "manual"]
Channel = Literal["email", "phone", "web", "chat", "api"]

STATUSES: tuple[Status, ...] = ("new", "assigned", "pending", "resolved", "closed")
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")
PRIORITY_RANK: dict[str, int] = {p: i + 1 for i, p in enumerate(PRIORITIES)}
OPEN_STATUSES: frozenset[str] = frozenset({"new", "assigned", "pending"})
# Statuses in which the resolution clock does not run.
CLOCK_STOPPED: frozenset[str] = frozenset({"pending", "resolved", "closed"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"assigned", "pending", "resolved"}),
    "assigned": frozenset({"new", "pending", "resolved"}),
    "pending": frozenset({"new", "assigned", "resolved"}),
    "resolved": frozenset({"new", "assigned", "closed"}),  # reopen, or close
    "closed": frozenset(),
}


class TransitionRefused(ValueError):
    """A status change the workflow does not allow (the service makes it a 409)."""


def check_transition(current: str, target: str, assignee_id: int | None) -> None:
    """Raise `TransitionRefused` unless `current -> target` is allowed for a ticket
    with this assignee ("assigned" needs one; "new" means nobody has it)."""
    if current == target:
        raise TransitionRefused(f"the ticket is already {current}")
    if target not in TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (final)"
        raise TransitionRefused(f"cannot go from {current} to {target}; allowed: {allowed}")
    if target == "assigned" and assignee_id is None:
        raise TransitionRefused("cannot be assigned without an assignee; assign someone first")
    if target == "new" and assignee_id is not None:
        raise TransitionRefused("an assigned ticket goes back to new only by unassigning it")


def reopened_status(assignee_id: int | None) -> Status:
    """Where a ticket goes when work on it starts again."""
    return "assigned" if assignee_id is not None else "new"


# -- SLA clocks ------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    first_response_s: int
    resolution_s: int


@dataclass(frozen=True)
class Clock:
    """The SLA state a ticket stores."""

    status: str
    created_at: datetime
    first_response_due_at: datetime
    resolution_due_at: datetime
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    sla_paused_at: datetime | None = None
    sla_paused_s: float = 0.0
    first_response_breached: bool = False
    resolution_breached: bool = False


def due_times(
    created_at: datetime, policy: Policy, paused_s: float = 0.0
) -> tuple[datetime, datetime]:
    """(first_response_due_at, resolution_due_at) of a ticket created at `created_at`;
    the resolution one is pushed by the time its clock has already been stopped."""
    return (
        created_at + timedelta(seconds=policy.first_response_s),
        created_at + timedelta(seconds=policy.resolution_s + paused_s),
    )


def change_status(clock: Clock, target: str, now: datetime) -> Clock:
    """The clock after the ticket moves to `target` at `now` (transition already checked):
    stopping the resolution clock on entering pending/resolved, starting it again (and
    pushing its due time) on leaving them, stamping resolved_at."""
    paused_at, paused_s, due = clock.sla_paused_at, clock.sla_paused_s, clock.resolution_due_at
    resolved_at = clock.resolved_at
    if target in CLOCK_STOPPED and paused_at is None:
        paused_at = now
    elif target not in CLOCK_STOPPED and paused_at is not None:
        stopped = max(0.0, (now - paused_at).total_seconds())
        paused_s += stopped
        due += timedelta(seconds=stopped)
        paused_at = None
    if target == "resolved":
        resolved_at = now
    elif target in ("new", "assigned"):
        resolved_at = None
    moved = replace(
        clock,
        status=target,
        resolution_due_at=due,
        resolved_at=resolved_at,
        sla_paused_at=paused_at,
        sla_paused_s=paused_s,
    )
    return with_breaches(moved, now)


def first_response(clock: Clock, now: datetime) -> Clock:
    """The clock after a public agent reply at `now`: the first one stops the
    first-response clock (later ones change nothing)."""
    if clock.first_response_at is not None:
        return clock
    return with_breaches(replace(clock, first_response_at=now), now)


def reprioritised(clock: Clock, policy: Policy, now: datetime) -> Clock:
    """The clock under another priority's policy: both targets counted again from
    creation (the resolution one still pushed by the time already stopped). Breach
    flags already set stay set."""
    first_due, resolution_due = due_times(clock.created_at, policy, clock.sla_paused_s)
    return with_breaches(
        replace(clock, first_response_due_at=first_due, resolution_due_at=resolution_due), now
    )


def first_response_breached(clock: Clock, now: datetime) -> bool:
    if clock.first_response_breached:
        return True
    if clock.first_response_at is not None:
        stopped_at = clock.first_response_at
    elif clock.status in ("resolved", "closed") and clock.resolved_at is not None:
        stopped_at = clock.resolved_at
    elif clock.status in ("resolved", "closed"):
        return False
    else:
        stopped_at = now
    return stopped_at > clock.first_response_due_at


def resolution_breached(clock: Clock, now: datetime) -> bool:
    if clock.resolution_breached:
        return True
    stopped_at = clock.sla_paused_at if clock.sla_paused_at is not None else now
    return stopped_at > clock.resolution_due_at


def with_breaches(clock: Clock, now: datetime) -> Clock:
    """The clock with its breach flags as of `now` (set once, never cleared)."""
    return replace(
        clock,
        first_response_breached=first_response_breached(clock, now),
        resolution_breached=resolution_breached(clock, now),
    )


def resolution_remaining_s(clock: Clock, now: datetime) -> float:
    """Seconds left before the resolution target (negative once late), frozen while
    the clock is stopped."""
    at = clock.sla_paused_at if clock.sla_paused_at is not None else now
    return (clock.resolution_due_at - at).total_seconds()


# -- assignment ------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    user_id: int
    active: bool = True


def round_robin_order(members: Sequence[Member], last_assigned_id: int | None) -> list[int]:
    """Active members in the order round-robin will give them tickets: by user id,
    starting with the first one after the cursor (wrapping around)."""
    active = sorted(m.user_id for m in members if m.active)
    if last_assigned_id is None:
        return active
    after = [u for u in active if u > last_assigned_id]
    return after + [u for u in active if u <= last_assigned_id]


def next_round_robin(members: Sequence[Member], last_assigned_id: int | None) -> int | None:
    """The next active member after the cursor, or None when nobody is active."""
    order = round_robin_order(members, last_assigned_id)
    return order[0] if order else None


def least_busy(
    members: Sequence[Member], open_counts: Mapping[int, int], last_assigned_id: int | None
) -> int | None:
    """The active member with the fewest open tickets; ties go to whoever comes first
    in round-robin order (so equal loads still rotate)."""
    order = round_robin_order(members, last_assigned_id)
    if not order:
        return None
    return min(order, key=lambda user_id: (open_counts.get(user_id, 0), order.index(user_id)))
