"""Extractive ticket summaries and next-best-action rules (ai/advice.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

from ai import advice

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_summary_keeps_the_thread_sentences_that_carry_its_topic_in_order() -> None:
    parts = [
        ("description", "The invoice export fails. Every invoice export since Monday "
                        "shows an error. Nice weather today."),
        ("user 1", "Hi! Thanks for writing."),
        ("user 2", "The invoice export error comes from the new tax field. "
                   "A fix for the export ships tomorrow."),
    ]  # fmt: skip
    got = advice.summarize(parts, 3)
    texts = [s["text"] for s in got["sentences"]]
    assert "Nice weather today." not in texts and "Hi!" not in texts
    assert texts[0] == "The invoice export fails."
    # Thread order is kept.
    order = [t for _, text in parts for t in advice.sentences(text)]
    assert [order.index(t) for t in texts] == sorted(order.index(t) for t in texts)
    assert advice.summarize([], 3) == {"summary": "", "sentences": []}


def _ticket(**kw: object) -> SimpleNamespace:
    base = dict(status="assigned", priority="normal", sla_breached=False, assignee_id=7,
                first_response_at=NOW - timedelta(hours=1),
                first_response_due_at=NOW + timedelta(hours=5), updated_at=NOW)  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_ticket_rules() -> None:
    assert advice.ticket_actions(_ticket(), NOW)[0].action == "work_ticket"
    assert advice.ticket_actions(_ticket(status="closed"), NOW)[0].action == "none"
    first = advice.ticket_actions(_ticket(assignee_id=None, sla_breached=True), NOW)
    assert [a.action for a in first] == ["escalate", "assign"]
    due = _ticket(first_response_at=None, first_response_due_at=NOW + timedelta(minutes=20))
    assert advice.ticket_actions(due, NOW)[0].action == "respond_now"
    waiting = _ticket(status="pending", updated_at=NOW - timedelta(days=4))
    assert advice.ticket_actions(waiting, NOW)[0].action == "follow_up_customer"


def _deal(**kw: object) -> SimpleNamespace:
    base = dict(status="open", probability=10, expected_close_date=None, contact_id=3,
                stage_entered_at=datetime.now(UTC))  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_deal_rules_and_the_score() -> None:
    assert advice.deal_actions(_deal(), None)[0].action == "qualify"
    assert advice.deal_actions(_deal(status="won"), None)[0].action == "none"
    late = _deal(expected_close_date=date.today() - timedelta(days=1))
    assert advice.deal_actions(late, None)[0].action == "update_close_date"
    stale = _deal(stage_entered_at=datetime.now(UTC) - timedelta(days=20))
    assert advice.deal_actions(stale, None)[0].action == "follow_up"
    assert advice.deal_actions(_deal(probability=80), None)[0].action == "prepare_order"
    # A strong lead score moves an early deal on; a weak one does not.
    assert advice.deal_actions(_deal(), 0.9)[0].action == "advance_stage"
    assert advice.deal_actions(_deal(), 0.1)[0].action == "qualify"
