"""Inbox and preference models, shared by HTTP routes and deployment handles."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployments._kit.types import Id
from deployments.notification.rules import RULES
from gateway.inputs import Input
from gateway.listing import ListQuery
from gateway.records import Record


class NotificationRead(Record):
    id: Id
    recipient_id: Id
    event_id: uuid.UUID
    event_type: str
    title: str
    body: str
    data: dict[str, Any]
    read: bool
    read_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class NotificationListQuery(ListQuery):
    unread: bool | None = Field(default=None, description="true: only unread ones.")

    query_params: ClassVar[dict[str, str]] = {**ListQuery.query_params, "unread": "unread"}


class UnreadCount(BaseModel):
    unread: int


class ReadAllResult(Record):
    marked: int = Field(description="How many notifications were marked read.")


class ChannelPreferences(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_app: bool = True
    email: bool = True


class PreferencesUpdate(Input):
    """The channels of each named rule (rules not named keep their setting)."""

    rules: dict[str, ChannelPreferences] = Field(max_length=len(RULES))

    @field_validator("rules")
    @classmethod
    def _known(cls, rules: dict[str, ChannelPreferences]) -> dict[str, ChannelPreferences]:
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rules {unknown}; the rules are {list(RULES)}")
        return rules


class PreferencesRead(Record):
    user_id: Id
    rules: dict[str, ChannelPreferences] = Field(description="Every rule, defaults filled in.")
    version: int
