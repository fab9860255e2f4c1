"""Webhook subscription and delivery models, shared by HTTP routes and handles."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from deployments._kit.types import Id
from gateway.inputs import Input, Patch
from gateway.listing import ListQuery
from gateway.records import Record

_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.([a-z][a-z0-9_]*|\*))*)$")
DeliveryStatus = Literal["pending", "succeeded", "failed", "cancelled"]



def _check_types(types: list[str]) -> list[str]:
    for t in types:
        if not _PATTERN.match(t):
            raise ValueError(f"{t!r} is not an event type pattern such as deal.won, deal.* or *")
    return sorted(set(types))


class WebhookCreate(Input):
    url: str = Field(min_length=8, max_length=2000, description="http(s) URL of the receiver.")
    event_types: list[str] = Field(
        min_length=1,
        max_length=50,
        description="Event types to send: exact (`deal.won`) or with `*` (`deal.*`, `*`).",
    )
    description: str | None = Field(default=None, max_length=500)
    active: bool = True

    _types = field_validator("event_types")(_check_types)


class WebhookUpdate(Patch, creates=WebhookCreate):
    url: str | None = Field(default=None, min_length=8, max_length=2000)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    active: bool | None = Field(default=None, description="true re-enables a disabled one.")

    @field_validator("event_types")
    @classmethod
    def _types(cls, types: list[str] | None) -> list[str] | None:
        return None if types is None else _check_types(types)


class WebhookRead(Record):
    id: Id
    url: str
    event_types: list[str]
    description: str | None
    active: bool
    disabled_reason: str | None = Field(description="Why it was disabled (e.g. HTTP 410).")
    owner_id: Id | None
    version: int
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="The signing secret, shown only in this response: keep it to verify "
        "`X-NextFlow-Signature`."
    )


class DeliveryRead(BaseModel):
    id: Id
    subscription_id: Id
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    attempts: int
    response_status: int | None = Field(description="HTTP code of the last attempt.")
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="When pending: the next try.")
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class WebhookListQuery(ListQuery):
    active: bool | None = None

    query_params: ClassVar[dict[str, str]] = {**ListQuery.query_params, "active": "active"}


class DeliveryListQuery(ListQuery):
    status: DeliveryStatus | None = None

    query_params: ClassVar[dict[str, str]] = {**ListQuery.query_params, "status": "status"}
