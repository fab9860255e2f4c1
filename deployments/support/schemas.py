"""Ticket, comment, queue and SLA policy models, shared by HTTP routes and handles."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field, field_validator, model_validator

from deployments._kit.batch import (
    Batch,
    BatchCreate,
    BatchResult,
    BatchUpdate,
    ItemResult,
)
from deployments._kit.types import Id, Tag, distinct
from deployments.support.rules import Channel, Priority, Status, Strategy
from gateway.inputs import Input, JsonObject, Patch
from gateway.listing import ListQuery, SearchBody, SmallInt, search_body
from gateway.records import Record

_YEAR_S = 366 * 24 * 3600


# -- tickets ---------------------------------------------------------------------------
class TicketCreate(Input):
    customer_id: Id = Field(description="Must exist; the ticket lives on its shard.")
    contact_id: Id | None = Field(default=None, description="A contact of that customer.")
    subject: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=20000)
    priority: Priority = "normal"
    channel: Channel = "web"
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    queue_id: Id | None = Field(default=None, description="Defaults to the default queue.")
    assignee_id: Id | None = Field(
        default=None,
        description="Assign at once (needs `ticket:assign` unless it is the caller); "
        "otherwise a round-robin or least-busy queue picks an agent.",
    )
    custom_fields: JsonObject = Field(default_factory=dict, max_length=100)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return distinct(tags)


# A ticket is always in a queue (a create without one goes to the default queue).
class TicketUpdate(Patch, creates=TicketCreate, nullable={"contact_id"}):
    """Partial update. Status and assignee change through their own actions
    (`/status`, `/assign`), which enforce the workflow."""

    # A ticket is always in a queue (a create without one goes to the default queue).
    subject: str | None = Field(default=None, min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=20000)
    priority: Priority | None = None
    channel: Channel | None = None
    tags: list[Tag] | None = Field(default=None, max_length=50)
    contact_id: Id | None = None
    queue_id: Id | None = None
    custom_fields: JsonObject | None = Field(
        default=None, max_length=100, description="The keys given change; null clears one."
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else distinct(tags)


class TicketRead(Record):
    id: Id
    customer_id: Id
    contact_id: Id | None
    subject: str
    description: str
    priority: Priority
    status: Status
    queue_id: Id | None
    assignee_id: Id | None
    channel: Channel
    tags: list[str]
    requester_id: Id | None = Field(description="The user who created the ticket.")
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    first_response_due_at: datetime
    resolution_due_at: datetime
    sla_paused_at: datetime | None = Field(
        description="When the resolution clock stopped (pending or resolved), else null."
    )
    sla_paused_s: float = Field(description="Seconds the resolution clock has been stopped.")
    first_response_breached: bool = Field(description="As of this response, not just stored.")
    resolution_breached: bool = Field(description="As of this response, not just stored.")
    sla_breached: bool = Field(default=False, description="Either target breached.")
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    version: int
    created_at: datetime
    updated_at: datetime


class TicketBatchCreate(BatchCreate[TicketCreate]):
    pass


class TicketBatchUpdate(BatchUpdate[TicketUpdate]):
    pass


class TicketBatch(Batch[TicketBatchCreate, TicketBatchUpdate]):
    """Up to 100 creates, updates and deletes of tickets, each with its own result
    (`POST /v1/support/tickets/batch`, deployments/_kit/batch.py)."""


class TicketBatchItem(ItemResult[TicketRead]):
    pass


class TicketBatchResult(BatchResult[TicketRead]):
    results: Sequence[TicketBatchItem]


class TicketStatusChange(Input):
    status: Status = Field(
        description="new | assigned | pending | resolved | closed; allowed moves: "
        "new->assigned|pending|resolved, assigned->new|pending|resolved, "
        "pending->new|assigned|resolved, resolved->new|assigned (reopen)|closed; "
        "closed is final."
    )


class TicketAssign(Input):
    assignee_id: Id | None = Field(description="null unassigns (the ticket goes back to new).")


class TicketListQuery(ListQuery):
    view_object: ClassVar[str | None] = "tickets"
    custom_fields: ClassVar[str | None] = "tickets"
    statuses: list[Status] | None = Field(default=None, max_length=5)
    priorities: list[Priority] | None = Field(default=None, max_length=4)
    queue_id: Id | None = None
    assignee_id: Id | None = None
    unassigned: bool | None = None
    customer_id: Id | None = None
    tags: list[str] | None = Field(default=None, max_length=40)
    sla_breached: bool | None = None
    first_response_breached: bool | None = None
    resolution_breached: bool | None = None
    created_from: datetime | None = Field(default=None, description="created_at >= this")
    created_before: datetime | None = Field(default=None, description="created_at < this")
    due_before: datetime | None = Field(default=None, description="resolution_due_at < this")

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "status": "statuses",
        "status[in]": "statuses",
        "priority": "priorities",
        "priority[in]": "priorities",
        "queue_id": "queue_id",
        "assignee_id": "assignee_id",
        "unassigned": "unassigned",
        "customer_id": "customer_id",
        "tag": "tags",
        "tag[in]": "tags",
        "sla_breached": "sla_breached",
        "first_response_breached": "first_response_breached",
        "resolution_breached": "resolution_breached",
        "created_at[gte]": "created_from",
        "created_at[lt]": "created_before",
        "resolution_due_at[lt]": "due_before",
    }
    list_params: ClassVar[frozenset[str]] = frozenset({"statuses", "priorities", "tags"})
    sort_fields: ClassVar[dict[str, type]] = {
        "created_at": datetime,
        "priority": SmallInt,  # priority_rank
        "resolution_due_at": datetime,
    }


if TYPE_CHECKING:  # made at import (`search_body`); typed as its base
    TicketSearch = SearchBody
else:
    TicketSearch = search_body(TicketListQuery)


class SweepResult(BaseModel):
    """What one SLA sweep flagged (ids of tickets whose flag it set just now)."""

    first_response_breached: list[Id]
    resolution_breached: list[Id]


# -- comments --------------------------------------------------------------------------
class CommentCreate(Input):
    body: str = Field(min_length=1, max_length=20000)
    public: bool = Field(
        default=False,
        description="true: a reply the customer sees (the first one is the first "
        "response); false: an internal note.",
    )


class CommentRead(Record):
    id: Id
    ticket_id: Id
    author_id: Id | None
    body: str
    public: bool
    version: int
    created_at: datetime
    updated_at: datetime


class CommentListQuery(ListQuery):
    sort: str = "created_at"
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime}


# -- queues ----------------------------------------------------------------------------
class QueueMember(BaseModel):
    user_id: Id
    active: bool
    added_at: datetime


class QueueCreate(Input):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    strategy: Strategy = "manual"
    members: list[Id] = Field(default_factory=list, max_length=200, description="User ids.")
    is_default: bool = False

    @field_validator("members")
    @classmethod
    def _unique(cls, members: list[int]) -> list[int]:
        return list(dict.fromkeys(members))


class QueueUpdate(Patch, creates=QueueCreate):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    strategy: Strategy | None = None
    is_default: bool | None = None


class QueueRead(Record):
    id: Id
    name: str
    description: str | None
    strategy: Strategy
    is_default: bool
    last_assigned_id: Id | None = Field(description="Round-robin cursor.")
    members: list[QueueMember]
    version: int
    created_at: datetime
    updated_at: datetime


class QueueMemberPut(Input):
    active: bool = True


class QueueListQuery(ListQuery):
    countable: ClassVar[bool] = False
    sort: str = "created_at"
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime, "name": str}


# -- SLA policies ----------------------------------------------------------------------
class SlaPolicyRead(Record):
    id: Id = Field(description="Stable; the record id of the policy's change history.")
    priority: Priority
    first_response_s: int = Field(description="First-response target, in seconds.")
    resolution_s: int = Field(description="Resolution target, in seconds.")
    version: int
    updated_at: datetime


class SlaPolicyPut(Input):
    first_response_s: int = Field(ge=1, le=_YEAR_S)
    resolution_s: int = Field(ge=1, le=_YEAR_S)

    @model_validator(mode="after")
    def _order(self) -> SlaPolicyPut:
        if self.resolution_s < self.first_response_s:
            raise ValueError("resolution_s must be at least first_response_s")
        return self
