"""Activities (notes, tasks, calls, meetings, logged e-mails) and the customer's
timeline: the models HTTP routes and deployment handles share."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, EmailStr, Field, model_validator

from deployments._kit.types import Id, When
from gateway.inputs import Input, Patch, when_given
from gateway.listing import ListQuery
from gateway.records import Record

ActivityKind = Literal["note", "task", "call", "meeting", "email"]
ACTIVITY_KINDS: tuple[str, ...] = ("note", "task", "call", "meeting", "email")
Priority = Literal["low", "normal", "high", "urgent"]
Direction = Literal["inbound", "outbound"]
# What only a task has.
TASK_FIELDS = ("due_at", "assignee_id", "priority", "remind_at")
_NULL: Any = {"type": "null"}


class Participant(Input):
    """Who took part in a call, meeting or e-mail: a user, a contact or an address
    (at least one of the three)."""

    model_config = ConfigDict(
        json_schema_extra={
            "not": {"properties": {"user_id": _NULL, "contact_id": _NULL, "email": _NULL}}
        }
    )

    user_id: Id | None = None
    contact_id: Id | None = None
    email: EmailStr | None = None
    name: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _someone(self) -> Participant:
        if self.user_id is None and self.contact_id is None and self.email is None:
            raise ValueError("a participant names a user_id, a contact_id or an email")
        return self


class ActivityCreate(Input):
    """An activity on a customer (`customer_id`), or on a lead not yet converted
    (`lead_id` alone); optionally about one of the customer's contacts, deals or
    tickets. Task fields (`due_at`, `assignee_id`, `priority`, `remind_at`) are for
    tasks only."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                when_given(
                    "customer_id",
                    then={},
                    otherwise={
                        "required": ["lead_id"],
                        "properties": {"lead_id": {"type": "string"}},
                    },
                ),
                {
                    "if": {"properties": {"kind": {"not": {"const": "task"}}}},
                    "then": {"properties": dict.fromkeys(TASK_FIELDS, _NULL)},
                },
            ]
        }
    )  # fmt: skip

    kind: ActivityKind
    customer_id: Id | None = Field(default=None, description="The customer it is about.")
    lead_id: Id | None = Field(
        default=None,
        description="The lead it is about; alone (no customer_id) for a lead not yet "
        "converted: its conversion gives the activity the new customer.",
    )
    contact_id: Id | None = Field(default=None, description="One of the customer's contacts.")
    deal_id: Id | None = Field(default=None, description="One of the customer's deals.")
    ticket_id: Id | None = Field(default=None, description="One of the customer's tickets.")
    subject: str = Field(min_length=1, max_length=300)
    body: str | None = Field(default=None, max_length=20000)
    # tasks
    due_at: When | None = None
    assignee_id: Id | None = Field(
        default=None, description="Who does the task; defaults to the caller."
    )
    priority: Priority | None = Field(default=None, description="Tasks: normal when left out.")
    remind_at: When | None = Field(
        default=None, description="When the assignee is reminded (a notification)."
    )
    # calls, meetings, e-mails
    occurred_at: When | None = Field(
        default=None, description="When it happened (or will); its place on the timeline."
    )
    duration_minutes: int | None = Field(default=None, ge=0, le=10080)
    participants: list[Participant] = Field(default_factory=list, max_length=100)
    outcome: str | None = Field(default=None, max_length=2000)
    direction: Direction | None = None

    @model_validator(mode="after")
    def _placed_and_task_only(self) -> ActivityCreate:
        if self.customer_id is None and self.lead_id is None:
            raise ValueError("an activity names its customer_id (or a lead_id)")
        if self.kind != "task":
            given = [f for f in TASK_FIELDS if getattr(self, f) is not None]
            if given:
                raise ValueError(f"only a task has {', '.join(given)}")
        return self


class ActivityUpdate(Patch, creates=ActivityCreate):
    """A partial update; `done: true` completes a task, `done: false` reopens it."""

    subject: str | None = Field(default=None, min_length=1, max_length=300)
    body: str | None = Field(default=None, max_length=20000)
    contact_id: Id | None = None
    deal_id: Id | None = None
    ticket_id: Id | None = None
    due_at: When | None = None
    assignee_id: Id | None = None
    priority: Priority | None = None
    remind_at: When | None = None
    done: bool | None = Field(default=None, description="Tasks: complete (true) or reopen.")
    occurred_at: When | None = None
    duration_minutes: int | None = Field(default=None, ge=0, le=10080)
    participants: list[Participant] | None = Field(default=None, max_length=100)
    outcome: str | None = Field(default=None, max_length=2000)
    direction: Direction | None = None


class ActivityRead(Record):
    id: Id
    kind: ActivityKind
    customer_id: Id | None
    lead_id: Id | None
    contact_id: Id | None
    deal_id: Id | None
    ticket_id: Id | None
    subject: str
    body: str | None
    owner_id: Id | None = Field(description="Who logged it.")
    due_at: datetime | None
    assignee_id: Id | None
    priority: Priority | None
    done: bool
    done_at: datetime | None
    remind_at: datetime | None
    reminded_at: datetime | None
    occurred_at: datetime | None
    duration_minutes: int | None
    participants: list[dict[str, Any]]
    outcome: str | None
    direction: Direction | None
    at: datetime = Field(description="Its place on the timeline: occurred_at, else created_at.")
    version: int
    created_at: datetime
    updated_at: datetime


class ActivityListQuery(ListQuery):
    """A customer's (or a lead's) activities, newest first."""

    kinds: list[ActivityKind] | None = Field(default=None, max_length=5)
    open_tasks: bool | None = Field(default=None, description="true: tasks not done")
    sort: str = "-at"
    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "kind": "kinds",
        "kind[in]": "kinds",
        "open": "open_tasks",
    }
    list_params: ClassVar[frozenset[str]] = frozenset({"kinds"})
    countable: ClassVar[bool] = False
    sort_fields: ClassVar[dict[str, type]] = {"at": datetime}


class TaskListQuery(ListQuery):
    """The caller's open tasks on every shard, soonest due first (no due date last)."""

    due_before: datetime | None = Field(default=None, description="due_at < this")
    sort: str = "due_at"
    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "due_at[lt]": "due_before",
    }
    countable: ClassVar[bool] = False
    ascending_only: ClassVar[bool] = True
    sort_fields: ClassVar[dict[str, type]] = {"due_at": datetime}
