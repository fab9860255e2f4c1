"""Notification rules as a pure function of the event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from deployments._kit.events import Event
from deployments.notification.rules import Recipient, recipients
from deployments.notification.schemas import PreferencesUpdate


def event(type: str, data: dict[str, Any], aggregate_id: int = 77) -> Event:
    return Event(
        id=uuid.uuid4(),
        type=type,
        occurred_at=datetime.now(UTC),
        aggregate_type=type.split(".")[0],
        aggregate_id=aggregate_id,
        data=data,
    )


def users(found: list[Recipient]) -> list[tuple[int, str]]:
    return [(r.user_id, r.channel) for r in found]


def test_ticket_assigned_goes_to_the_assignee_on_both_channels() -> None:
    found = recipients(event("ticket.assigned", {"ticket": {"assignee_id": "5", "subject": "X"}}))
    assert users(found) == [(5, "in_app"), (5, "email")]
    assert "X" in found[0].title
    assert users(recipients(event("ticket.assigned", {"assignee_id": 6}))) == [
        (6, "in_app"),
        (6, "email"),
    ]


def test_unassigned_ticket_notifies_nobody() -> None:
    assert recipients(event("ticket.assigned", {"ticket": {"assignee_id": None}})) == []
    assert recipients(event("ticket.assigned", {"assignee_id": "not a number"})) == []


def test_sla_breach_goes_to_the_assignee_and_managers_once_each() -> None:
    data = {"ticket": {"assignee_id": 5}}
    found = recipients(event("ticket.sla_breached", data), managers=[8, 5, 9])
    assert users(found) == [
        (5, "in_app"), (5, "email"), (8, "in_app"), (8, "email"), (9, "in_app"), (9, "email"),
    ]  # fmt: skip
    no_assignee = recipients(event("ticket.sla_breached", {"ticket": {}}), managers=[8])
    assert users(no_assignee) == [(8, "in_app"), (8, "email")]


def test_deal_won_goes_to_the_owner() -> None:
    found = recipients(event("deal.won", {"deal": {"owner_id": "3", "name": "Big"}}))
    assert users(found) == [(3, "in_app"), (3, "email")]
    assert found[0].title == "Deal won: Big"


def test_other_events_notify_nobody() -> None:
    assert recipients(event("customer.created", {"owner_id": 1}), managers=[2]) == []


def test_preferences_name_only_known_rules() -> None:
    PreferencesUpdate.model_validate({"rules": {"deal.won": {"email": False}}})
    with pytest.raises(ValidationError):
        PreferencesUpdate.model_validate({"rules": {"deal.lost": {"email": False}}})
    with pytest.raises(ValidationError):
        PreferencesUpdate.model_validate({"rules": {"deal.won": {"sms": False}}})


def test_task_events_go_to_the_assignee_and_a_reminder_without_one_to_the_owner() -> None:
    task = {"subject": "Call back", "assignee_id": "8", "owner_id": "3", "due_at": "2026-12-08"}
    assigned = recipients(event("task.assigned", {"activity": task}))
    assert users(assigned) == [(8, "in_app"), (8, "email")]
    assert assigned[0].title == "Task assigned to you: Call back"
    reminder = recipients(event("task.reminder", {"activity": task}))
    assert users(reminder) == [(8, "in_app"), (8, "email")]
    assert reminder[0].title == "Reminder: Call back" and "2026-12-08" in reminder[0].body
    unassigned = {**task, "assignee_id": None}
    assert users(recipients(event("task.reminder", {"activity": unassigned}))) == [
        (3, "in_app"),
        (3, "email"),
    ]
    assert recipients(event("task.assigned", {"activity": unassigned})) == []
