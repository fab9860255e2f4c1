"""What the outbox relay (`shards/relay.py`) publishes: the Redis stream every domain
event goes to, the envelope of one event on it, and the making of consumer groups.
Services write events into their database's `outbox` (`deployments/_kit/events.py:
emit`) and read the stream with consumer groups (`deployments/_kit/consumer.py`); the
relay only moves them, and knows no service: the groups it makes sure of before it
publishes are the deployment's `event_consumer_groups` setting."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ResponseError

from shards.ids import JsonId

EVENT_STREAM = "nextflow:events"
SCHEMA_VERSION = 1


class Event(BaseModel):
    """One event as it travels on the stream and reaches consumers and webhooks."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(description="Unique per event: consumers de-duplicate by it.")
    type: str = Field(description="`<aggregate>.<what happened>`, e.g. `deal.won`.")
    version: int = Field(default=SCHEMA_VERSION, description="Schema version of `data`.")
    occurred_at: datetime
    aggregate_type: str
    aggregate_id: JsonId
    actor_id: JsonId | None = None
    data: dict[str, Any]


async def ensure_groups(
    redis: aioredis.Redis, groups: Iterable[str], stream: str = EVENT_STREAM, start_id: str = "$"
) -> None:
    """Create each group (and the stream) if missing, at `start_id`; existing ones are
    kept as they are."""
    for group in groups:
        try:
            await redis.xgroup_create(stream, group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
