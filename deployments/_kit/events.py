"""Domain events and the transactional outbox.

A repo function that changes something others care about calls `emit()` with the
same connection, so the event is stored in the same transaction as the change (and
vanishes with it on a rollback). The relay (`shards/relay.py`) publishes stored events
to the Redis stream `EVENT_STREAM`; consumers read it with consumer groups and apply
each event at most once by its `id`. Delivery is at-least-once, effects exactly-once.
The schema of every event type is in `docs/events.md`.

    await emit(conn, "deal.won", "deal", deal.id, {"deal": deal_json}, actor_id)
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from deployments._kit.history import plain
from shards import WriteConn
from shards.ids import shard_sql
from shards.outbox import EVENT_STREAM, SCHEMA_VERSION, Event

# The services' consumer groups. The outbox relays make sure each exists before they
# publish (the `event_consumer_groups` setting lists them; tests/unit/test_events.py
# holds the two equal): an event written before a service's first replica was up
# waits in its group (tests/integration/test_events.py).
NOTIFICATION_GROUP = "notification"
WEBHOOKS_GROUP = "webhooks"
ANALYTICS_GROUP = "analytics"
AI_GROUP = "ai"  # keeps the search index up to date (deployments/ai/indexing.py)
# Keeps the match keys of likely duplicates (deployments/customer/duplicates/).
CUSTOMER_GROUP = "customer"
CONSUMER_GROUPS = (NOTIFICATION_GROUP, WEBHOOKS_GROUP, ANALYTICS_GROUP, AI_GROUP, CUSTOMER_GROUP)


async def emit(
    conn: WriteConn,
    type: str,
    aggregate_type: str,
    aggregate_id: int,
    data: dict[str, Any],
    actor_id: int | None = None,
    *,
    version: int = SCHEMA_VERSION,
    shard: int | None = None,
) -> uuid.UUID:
    """Store an event in the outbox of this transaction's database. Its id carries the
    aggregate's logical shard, or `shard` for an aggregate that is not a record of
    this database (an import job), so the event moves with the rows it is about.
    Returns the event id."""
    event_id = uuid.uuid4()
    where = shard_sql("$5::bigint") if shard is None else "$8"
    await conn.execute(
        f"""INSERT INTO outbox
               (id, event_id, type, version, aggregate_type, aggregate_id, actor_id, data)
            VALUES (nextflow_id({where}::int), $1, $2, $3, $4, $5, $6, $7)""",
        event_id, type, version, aggregate_type, aggregate_id, actor_id, plain(data),
        *(() if shard is None else (shard,)),
    )  # fmt: skip
    return event_id


def record_data(
    name: str, record: BaseModel, changes: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """An event's `data`: the record as the API returns it under its aggregate's name,
    `changes` ({field: [old, new]}, ids as strings) for an update, and any extra context."""
    data: dict[str, Any] = {name: record.model_dump(mode="json")}
    if changes is not None:
        data["changes"] = {k: _ids_as_text(k, plain(v)) for k, v in changes.items()}
    data.update(plain(extra))
    return data


def _ids_as_text(field: str, value: Any) -> Any:
    """Ids in `changes` are strings, as in records (64-bit ids overflow JSON numbers)."""
    if not (field == "id" or field.endswith("_id")):
        return value
    if isinstance(value, list):
        return [_ids_as_text(field, v) for v in value]
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


__all__ = [
    "AI_GROUP",
    "ANALYTICS_GROUP",
    "CONSUMER_GROUPS",
    "EVENT_STREAM",
    "NOTIFICATION_GROUP",
    "SCHEMA_VERSION",
    "WEBHOOKS_GROUP",
    "Event",
    "emit",
    "record_data",
]
