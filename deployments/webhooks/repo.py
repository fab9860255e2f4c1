"""All SQL of outbound webhooks (the unsharded `integration` database). Each
function runs inside the one transaction the catalog's ShardManager opened."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from deployments._kit.sql import Params, Stale, keyset_page
from deployments.webhooks.schemas import (
    DeliveryListQuery,
    DeliveryRead,
    WebhookCreate,
    WebhookListQuery,
    WebhookRead,
)
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn

_SUB = (
    "id, url, event_types, description, active, disabled_reason, owner_id, version,"
    " created_at, updated_at"
)
_DELIVERY = (
    "id, subscription_id, event_id, event_type, status, attempts, response_status, last_error,"
    " next_attempt_at, last_attempt_at, delivered_at, created_at"
)
_UPDATABLE = {"url", "event_types", "description", "active"}


@dataclass(frozen=True)
class Due:
    """A claimed delivery with what an attempt needs."""

    id: int
    subscription_id: int
    event_id: uuid.UUID
    body: str
    failures_before: int  # failed attempts since the last replay, this one excluded
    url: str | None  # None: the subscription is gone or disabled
    secret: str


# -- subscriptions -------------------------------------------------------------------
async def create_subscription(
    conn: WriteConn, data: WebhookCreate, sealed_secret: str, owner_id: int
) -> WebhookRead:
    """`sealed_secret`: the signing secret as `_kit.sealed.SecretBox.seal` gives it."""
    row = await conn.fetchrow(
        f"""INSERT INTO webhook_subscriptions (url, event_types, secret, description, active,
                                               owner_id)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_SUB}""",
        data.url, data.event_types, sealed_secret, data.description, data.active, owner_id,
    )  # fmt: skip
    return WebhookRead.model_validate(dict(row))


async def secrets_to_reseal(conn: ReadConn, current_prefix: str) -> list[tuple[int, str]]:
    """(id, stored secret) of every subscription, deleted ones too, whose secret is not
    sealed under the current key (`current_prefix`): plain text from before secrets
    were sealed, or sealed under a previous key."""
    rows = await conn.fetch(
        "SELECT id, secret FROM webhook_subscriptions WHERE left(secret, $2) <> $1",
        current_prefix, len(current_prefix),
    )  # fmt: skip
    return [(r["id"], r["secret"]) for r in rows]


async def reseal(conn: WriteConn, sub_id: int, stored: str, sealed: str) -> bool:
    """Replace a secret's stored form if it is still `stored` (another replica may
    have done it first); the secret itself, and so every signature, is unchanged."""
    done = await conn.execute(
        "UPDATE webhook_subscriptions SET secret = $3 WHERE id = $1 AND secret = $2",
        sub_id, stored, sealed,
    )  # fmt: skip
    return str(done) == "UPDATE 1"


async def get_subscription(conn: ReadConn, sub_id: int) -> WebhookRead | None:
    row = await conn.fetchrow(
        f"SELECT {_SUB} FROM webhook_subscriptions WHERE id = $1 AND deleted_at IS NULL", sub_id
    )
    return None if row is None else WebhookRead.model_validate(dict(row))


async def list_subscriptions(
    conn: ReadConn, query: WebhookListQuery, order: Order, position: Position | None
) -> list[WebhookRead]:
    p = Params()
    where = ["deleted_at IS NULL"]
    if query.active is not None:
        where.append(f"active = {p(query.active)}")
    sql = keyset_page(
        "webhook_subscriptions", _SUB, where, "created_at", order, position, query.limit, p
    )
    rows = await conn.fetch(sql, *p.values)
    return [WebhookRead.model_validate(dict(r)) for r in rows]


async def update_subscription(
    conn: WriteConn, sub_id: int, changes: dict[str, Any], if_version: int | None
) -> WebhookRead | Stale | None:
    current = await conn.fetchrow(
        "SELECT version FROM webhook_subscriptions WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        sub_id,
    )
    if current is None:
        return None
    if if_version is not None and current["version"] != if_version:
        return Stale(current["version"])
    p = Params()
    sets = [f"{col} = {p(changes[col])}" for col in sorted(changes) if col in _UPDATABLE]
    if changes.get("active") is True:
        sets.append("disabled_reason = NULL")
    sets += ["version = version + 1", "updated_at = now()"]
    row = await conn.fetchrow(
        f"UPDATE webhook_subscriptions SET {', '.join(sets)} WHERE id = {p(sub_id)}"
        f" RETURNING {_SUB}",
        *p.values,
    )
    return WebhookRead.model_validate(dict(row))


async def delete_subscription(
    conn: WriteConn, sub_id: int, if_version: int | None
) -> WebhookRead | Stale | None:
    current = await conn.fetchrow(
        "SELECT version FROM webhook_subscriptions WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        sub_id,
    )
    if current is None:
        return None
    if if_version is not None and current["version"] != if_version:
        return Stale(current["version"])
    row = await conn.fetchrow(
        f"""UPDATE webhook_subscriptions
            SET deleted_at = now(), active = false, version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {_SUB}""",
        sub_id,
    )
    # Nothing more goes to a deleted subscription.
    await conn.execute(
        """UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_at = NULL,
                  updated_at = now()
           WHERE subscription_id = $1 AND status = 'pending'""",
        sub_id,
    )
    return WebhookRead.model_validate(dict(row))


async def active_subscriptions(conn: ReadConn) -> list[tuple[int, list[str]]]:
    rows = await conn.fetch(
        "SELECT id, event_types FROM webhook_subscriptions"
        " WHERE active AND deleted_at IS NULL ORDER BY id"
    )
    return [(r["id"], list(r["event_types"])) for r in rows]


# -- deliveries ----------------------------------------------------------------------
async def create_deliveries(
    conn: WriteConn, sub_ids: list[int], event_id: uuid.UUID, event_type: str, body: str
) -> int:
    """One pending delivery per subscription, due now; a repeat of the same event
    adds nothing. Returns how many were new."""
    result = await conn.execute(
        """INSERT INTO webhook_deliveries (subscription_id, event_id, event_type, body,
                                           next_attempt_at)
           SELECT s.id, $2, $3, $4, now()
           FROM webhook_subscriptions s
           WHERE s.id = ANY($1::bigint[]) AND s.active AND s.deleted_at IS NULL
           ON CONFLICT (subscription_id, event_id) DO NOTHING""",
        sub_ids, event_id, event_type, body,
    )  # fmt: skip
    return int(result.split()[-1])


async def claim_due(conn: WriteConn, limit: int, lease_s: float) -> list[Due]:
    """Take up to `limit` due deliveries for this worker: their next attempt moves
    `lease_s` ahead (so no other worker takes them meanwhile; a worker that dies leaves
    them due again after the lease) and the attempt is counted now."""
    rows = await conn.fetch(
        """WITH due AS (
               SELECT id FROM webhook_deliveries
               WHERE status = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at, id
               LIMIT $1
               FOR UPDATE SKIP LOCKED)
           UPDATE webhook_deliveries d
           SET attempts = d.attempts + 1, last_attempt_at = now(),
               next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
           FROM due WHERE d.id = due.id
           RETURNING d.id, d.subscription_id, d.event_id, d.body,
                     d.attempts - 1 - d.replay_base AS failures_before""",
        limit, lease_s,
    )  # fmt: skip
    if not rows:
        return []
    subs = {
        r["id"]: r
        for r in await conn.fetch(
            """SELECT id, url, secret FROM webhook_subscriptions
               WHERE id = ANY($1::bigint[]) AND active AND deleted_at IS NULL""",
            list({r["subscription_id"] for r in rows}),
        )
    }
    out = []
    for r in rows:
        sub = subs.get(r["subscription_id"])
        out.append(
            Due(
                id=r["id"],
                subscription_id=r["subscription_id"],
                event_id=r["event_id"],
                body=r["body"],
                failures_before=r["failures_before"],
                url=None if sub is None else sub["url"],
                secret="" if sub is None else sub["secret"],
            )
        )
    return out


async def record_attempt(
    conn: WriteConn,
    delivery_id: int,
    status: str,
    response_status: int | None,
    error: str | None,
    retry_in_s: float | None,
    disable_reason: str | None = None,
) -> None:
    """The outcome of an attempt: `status` pending (retry in `retry_in_s`), succeeded,
    failed or cancelled; `disable_reason` also disables the subscription."""
    row = await conn.fetchrow(
        """UPDATE webhook_deliveries
           SET status = $2, response_status = $3, last_error = $4,
               next_attempt_at = CASE WHEN $2 = 'pending'
                                      THEN now() + make_interval(secs => $5) END,
               delivered_at = CASE WHEN $2 = 'succeeded' THEN now() END,
               updated_at = now()
           WHERE id = $1 RETURNING subscription_id""",
        delivery_id, status, response_status, error, retry_in_s or 0.0,
    )  # fmt: skip
    if row is not None and disable_reason is not None:
        await conn.execute(
            """UPDATE webhook_subscriptions
               SET active = false, disabled_reason = $2, version = version + 1,
                   updated_at = now()
               WHERE id = $1 AND active""",
            row["subscription_id"],
            disable_reason,
        )


async def list_deliveries(
    conn: ReadConn, sub_id: int, query: DeliveryListQuery, order: Order, position: Position | None
) -> list[DeliveryRead]:
    p = Params()
    where = [f"subscription_id = {p(sub_id)}"]
    if query.status is not None:
        where.append(f"status = {p(query.status)}")
    sql = keyset_page(
        "webhook_deliveries", _DELIVERY, where, "created_at", order, position, query.limit, p
    )
    rows = await conn.fetch(sql, *p.values)
    return [DeliveryRead.model_validate(dict(r)) for r in rows]


async def get_delivery(conn: ReadConn, sub_id: int, delivery_id: int) -> DeliveryRead | None:
    row = await conn.fetchrow(
        f"SELECT {_DELIVERY} FROM webhook_deliveries WHERE id = $1 AND subscription_id = $2",
        delivery_id,
        sub_id,
    )
    return None if row is None else DeliveryRead.model_validate(dict(row))


async def replay_delivery(conn: WriteConn, sub_id: int, delivery_id: int) -> DeliveryRead | None:
    """Due again now, whatever its state, with a fresh retry schedule."""
    row = await conn.fetchrow(
        f"""UPDATE webhook_deliveries
            SET status = 'pending', next_attempt_at = now(), replay_base = attempts,
                updated_at = now()
            WHERE id = $1 AND subscription_id = $2 RETURNING {_DELIVERY}""",
        delivery_id,
        sub_id,
    )
    return None if row is None else DeliveryRead.model_validate(dict(row))
