"""Who hears about what: a pure function from an event to its recipients.

    ticket.assigned      -> the assignee
    ticket.sla_breached  -> the assignee and every manager
    deal.won             -> the deal's owner
    task.assigned        -> the task's new assignee
    task.reminder        -> the task's assignee (its owner if nobody is assigned)

Each recipient gets one entry per channel (`in_app`, `email`); the user's preferences
decide later which are kept. Event payloads are read leniently: an id may sit at the
top of `data` or inside the record (`data["ticket"]["assignee_id"]`), as int or string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from deployments._kit.events import Event

Channel = Literal["in_app", "email"]
CHANNELS: tuple[Channel, ...] = ("in_app", "email")
RULES: tuple[str, ...] = (
    "ticket.assigned", "ticket.sla_breached", "deal.won", "task.assigned", "task.reminder",
)  # fmt: skip
# Events whose recipients include the managers (asked of the Auth service).
NEEDS_MANAGERS = frozenset({"ticket.sla_breached"})


class Recipient(NamedTuple):
    user_id: int
    channel: Channel
    title: str
    body: str


def _id(data: Mapping[str, Any], record: str, field: str) -> int | None:
    nested = data.get(record)
    value = data.get(field)
    if value is None and isinstance(nested, Mapping):
        value = nested.get(field)
    try:
        number = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and number > 0 else None


def _label(data: Mapping[str, Any], record: str, field: str, fallback: str) -> str:
    nested = data.get(record)
    value = data.get(field)
    if value is None and isinstance(nested, Mapping):
        value = nested.get(field)
    return str(value) if value else fallback


def recipients(event: Event, managers: Sequence[int] = ()) -> list[Recipient]:
    """Every (user, channel, title, body) this event notifies, without repeats."""
    data = event.data
    people: list[int] = []
    if event.type == "ticket.assigned":
        subject = _label(data, "ticket", "subject", f"#{event.aggregate_id}")
        title = f"Ticket assigned to you: {subject}"
        body = f"Ticket {subject} (id {event.aggregate_id}) is now assigned to you."
        people = [uid] if (uid := _id(data, "ticket", "assignee_id")) else []
    elif event.type == "ticket.sla_breached":
        subject = _label(data, "ticket", "subject", f"#{event.aggregate_id}")
        title = f"SLA breached: {subject}"
        body = f"Ticket {subject} (id {event.aggregate_id}) has breached its SLA."
        assignee = _id(data, "ticket", "assignee_id")
        people = ([assignee] if assignee else []) + list(managers)
    elif event.type == "deal.won":
        name = _label(data, "deal", "name", f"#{event.aggregate_id}")
        title = f"Deal won: {name}"
        body = f"Your deal {name} (id {event.aggregate_id}) was won."
        people = [uid] if (uid := _id(data, "deal", "owner_id")) else []
    elif event.type in ("task.assigned", "task.reminder"):
        subject = _label(data, "activity", "subject", f"#{event.aggregate_id}")
        due = _label(data, "activity", "due_at", "")
        when = f", due {due}" if due else ""
        if event.type == "task.assigned":
            title = f"Task assigned to you: {subject}"
            body = f"Task {subject} (id {event.aggregate_id}{when}) is now assigned to you."
        else:
            title = f"Reminder: {subject}"
            body = f"Your task {subject} (id {event.aggregate_id}{when}) is waiting."
        whom = _id(data, "activity", "assignee_id")
        if whom is None and event.type == "task.reminder":
            whom = _id(data, "activity", "owner_id")
        people = [whom] if whom else []
    else:
        return []
    unique = list(dict.fromkeys(people))
    return [Recipient(uid, channel, title, body) for uid in unique for channel in CHANNELS]
