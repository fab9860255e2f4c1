"""Pure marketing logic: the conversion state machine and its fault seam, capture
payload validation, and whose address a capture is limited by."""

from __future__ import annotations

import pytest

from deployments.marketing.capture import MAX_LENGTH, parse_capture
from deployments.marketing.conversion import (
    STATES,
    ConversionFaults,
    InjectedFault,
    is_open,
    is_transition,
    next_state,
    source_key,
    step_for,
)
from gateway.errors import Validation
from gateway.trust import client_address, trusted_networks


def test_conversion_moves_one_step_at_a_time_to_completed() -> None:
    state = "started"
    steps = []
    while (step := step_for(state)) is not None:  # type: ignore[arg-type]
        steps.append(step)
        after = next_state(state)  # type: ignore[arg-type]
        assert is_transition(state, after)  # type: ignore[arg-type]
        state = after
    assert steps == ["customer", "contact", "deal", "complete"]
    assert state == "completed" and not is_open("completed") and is_open("deal_done")


def test_no_skipping_backwards_or_past_completed() -> None:
    assert not is_transition("started", "contact_done")
    assert not is_transition("contact_done", "customer_done")
    assert not is_transition("completed", "started")
    with pytest.raises(ValueError, match="no next state"):
        next_state("completed")
    assert STATES[0] == "started" and STATES[-1] == "completed"
    assert source_key(42) == "lead:42"


def test_faults_are_off_by_default_and_fire_only_after_their_step() -> None:
    ConversionFaults.from_user_config(None).after("customer")
    ConversionFaults.from_user_config({}).after("deal")
    faults = ConversionFaults.from_user_config({"fail_conversion_after": "contact"})
    faults.after("customer")
    with pytest.raises(InjectedFault) as raised:
        faults.after("contact")
    assert raised.value.status == 503
    with pytest.raises(ValueError, match="fail_conversion_after"):
        ConversionFaults.from_user_config({"fail_conversion_after": "everything"})


FIELDS = ["first_name", "email", "company", "message"]


def _errors(payload: dict[str, object], required: list[str] | None = None) -> list[str]:
    with pytest.raises(Validation) as raised:
        parse_capture(FIELDS, required or ["email"], payload)
    return [e["field"] for e in raised.value.errors]


def test_capture_cleans_a_good_payload() -> None:
    data = parse_capture(
        FIELDS, ["email"], {"email": "  Ada@Example.COM ", "first_name": " Ada ", "company": ""}
    )
    assert data.email == "Ada@example.com" and data.first_name == "Ada"
    assert data.company is None  # blank is absent


def test_capture_refuses_what_the_form_does_not_allow() -> None:
    assert _errors({"email": "a@b.co", "phone": "1"}) == ["phone"]  # not on this form
    assert _errors({"email": "a@b.co", "score": 99}) == ["score"]
    assert _errors({"first_name": "A"}) == ["email"]  # required
    assert _errors({"email": "nope"}) == ["email"]
    assert _errors({"email": ["a@b.co"]}) == ["email"]  # not a string
    assert _errors({"email": "a@b.co", "company": "x" * (MAX_LENGTH["company"] + 1)}) == ["company"]
    assert _errors({"email": "a@b.co", "first_name": "A\x00B"}) == ["first_name"]
    assert _errors({"email": "a@b.co"}, ["email", "company"]) == ["company"]


def test_client_address_uses_the_peer_unless_a_trusted_proxy_forwards() -> None:
    none = trusted_networks([])
    assert client_address("10.0.0.5", "1.2.3.4", none) == "10.0.0.5"
    lb = trusted_networks(["10.0.0.0/8"])
    assert client_address("10.0.0.5", "1.2.3.4", lb) == "1.2.3.4"
    # The client wrote the left part: only the hop the proxy added counts.
    assert client_address("10.0.0.5", "6.6.6.6, 1.2.3.4", lb) == "1.2.3.4"
    assert client_address("10.0.0.5", "1.2.3.4, 10.0.0.9", lb) == "1.2.3.4"
    assert client_address("8.8.8.8", "1.2.3.4", lb) == "8.8.8.8"  # untrusted peer
    assert client_address("10.0.0.5", "garbage", lb) == "10.0.0.5"
    assert client_address(None, None, lb) == "unknown"
