"""All SQL of the Notification service (the sharded `notification` database). Every
row of a user lives on that user's logical shard; each function is one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from deployments._kit.sql import Params, keyset_page, on_shards
from deployments.notification.rules import RULES, Recipient
from deployments.notification.schemas import (
    ChannelPreferences,
    NotificationListQuery,
    NotificationRead,
    PreferencesRead,
)
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement

_NOTE = (
    "id, recipient_id, event_id, event_type, title, body, data, read_at IS NOT NULL AS read,"
    " read_at, version, created_at, updated_at"
)
EMAIL_LEASE_S = 300  # a sender that died mid-send leaves its claim this long
MAX_EMAIL_ATTEMPTS = 5


@dataclass(frozen=True)
class Email:
    id: int
    to_address: str
    subject: str
    body: str


def _preferences(stored: dict[str, Any] | None) -> dict[str, ChannelPreferences]:
    stored = stored or {}
    return {rule: ChannelPreferences.model_validate(stored.get(rule, {})) for rule in RULES}


async def _stored_rules(conn: ReadConn, user_id: int) -> tuple[dict[str, Any] | None, int]:
    row = await conn.fetchrow(
        "SELECT rules, version FROM notification_preferences WHERE user_id = $1", user_id
    )
    return (None, 0) if row is None else (row["rules"], row["version"])


# -- applying an event -----------------------------------------------------------------
async def apply_event(
    conn: WriteConn,
    shard: int,
    user_id: int,
    event_id: uuid.UUID,
    event_type: str,
    data: dict[str, Any],
    items: list[Recipient],
    email_to: str | None,
) -> list[int]:
    """The effects of one event for one user, each at most once (unique per event and
    recipient in each channel's table), as the user's preferences allow. Returns the
    ids of this event's e-mails to this user that still need sending."""
    prefs = _preferences((await _stored_rules(conn, user_id))[0]).get(event_type)
    for item in items:
        if item.channel == "in_app" and (prefs is None or prefs.in_app):
            await conn.execute(
                """INSERT INTO notifications (id, recipient_id, event_id, event_type, title,
                                              body, data)
                   VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (event_id, recipient_id) DO NOTHING""",
                shard, user_id, event_id, event_type, item.title, item.body, data,
            )  # fmt: skip
        elif item.channel == "email" and email_to and (prefs is None or prefs.email):
            await conn.execute(
                """INSERT INTO notification_emails (id, recipient_id, event_id, to_address,
                                                    subject, body)
                   VALUES (nextflow_id($1), $2, $3, $4, $5, $6)
                   ON CONFLICT (event_id, recipient_id) DO NOTHING""",
                shard, user_id, event_id, email_to, item.title, item.body,
            )  # fmt: skip
    rows = await conn.fetch(
        f"""SELECT id FROM notification_emails
            WHERE event_id = $1 AND recipient_id = $2
              AND (status = 'pending' OR (status = 'sending'
                   AND claimed_at < now() - interval '{EMAIL_LEASE_S} seconds'))""",
        event_id,
        user_id,
    )
    return [r["id"] for r in rows]


async def claim_email(conn: WriteConn, email_id: int) -> Email | None:
    """Take an unsent e-mail to send it (None: sent already, or another sender has it)."""
    row = await conn.fetchrow(
        f"""UPDATE notification_emails
            SET status = 'sending', claimed_at = now(), attempts = attempts + 1,
                updated_at = now()
            WHERE id = $1 AND (status = 'pending' OR (status = 'sending'
                  AND claimed_at < now() - interval '{EMAIL_LEASE_S} seconds'))
            RETURNING id, to_address, subject, body""",
        email_id,
    )
    return None if row is None else Email(**dict(row))


async def email_sent(conn: WriteConn, email_id: int) -> None:
    await conn.execute(
        """UPDATE notification_emails SET status = 'sent', sent_at = now(), last_error = NULL,
                  updated_at = now()
           WHERE id = $1""",
        email_id,
    )


async def email_failed(conn: WriteConn, email_id: int, error: str) -> bool:
    """Back to pending for the next try, or failed for good after MAX_EMAIL_ATTEMPTS.
    Returns whether it will be tried again."""
    row = await conn.fetchrow(
        """UPDATE notification_emails
           SET status = CASE WHEN attempts >= $3 THEN 'failed' ELSE 'pending' END,
               last_error = $2, updated_at = now()
           WHERE id = $1 RETURNING status""",
        email_id, error[:500], MAX_EMAIL_ATTEMPTS,
    )  # fmt: skip
    return row is not None and row["status"] == "pending"


# -- the inbox -------------------------------------------------------------------------
@single_statement
async def list_notifications(
    conn: ReadConn,
    user_id: int,
    query: NotificationListQuery,
    order: Order,
    position: Position | None,
) -> list[NotificationRead]:
    p = Params()
    where = [f"recipient_id = {p(user_id)}", "deleted_at IS NULL"]
    if query.unread is True:
        where.append("read_at IS NULL")
    elif query.unread is False:
        where.append("read_at IS NOT NULL")
    sql = keyset_page("notifications", _NOTE, where, "created_at", order, position, query.limit, p)
    rows = await conn.fetch(sql, *p.values)
    return [NotificationRead.model_validate(dict(r)) for r in rows]


# Record references a notification's event data may carry (ids as strings, at any depth).
ABOUT_FIELDS = frozenset({"customer_id", "contact_id", "lead_id"})


@single_statement
async def about(
    conn: ReadConn, shards: list[int], field: str, record_id: int
) -> list[NotificationRead]:
    """Every user's notifications (deleted ones too) whose event data names the record
    as `field` anywhere (a deal's `customer_id`, a task's `lead_id`): a scan of this
    server's notifications, for a privacy export (a job), not a request path."""
    if field not in ABOUT_FIELDS:
        raise ValueError(f"not a record reference: {field}")
    p = Params()
    rows = await conn.fetch(
        f"""SELECT {_NOTE} FROM notifications
            WHERE {on_shards(p, shards)}
              AND jsonb_path_exists(data, '$.** ? (@.{field} == $id)',
                                    jsonb_build_object('id', {p(str(record_id))}::text))
            ORDER BY created_at, id""",
        *p.values,
    )
    return [NotificationRead.model_validate(dict(r)) for r in rows]


async def unread_count(conn: ReadConn, user_id: int) -> int:
    count = await conn.fetchval(
        """SELECT count(*) FROM notifications
           WHERE recipient_id = $1 AND read_at IS NULL AND deleted_at IS NULL""",
        user_id,
    )
    return int(count)


async def mark_read(conn: WriteConn, user_id: int, note_id: int) -> NotificationRead | None:
    row = await conn.fetchrow(
        f"""UPDATE notifications
            SET read_at = coalesce(read_at, now()),
                version = version + (read_at IS NULL)::int,
                updated_at = CASE WHEN read_at IS NULL THEN now() ELSE updated_at END
            WHERE id = $1 AND recipient_id = $2 AND deleted_at IS NULL
            RETURNING {_NOTE}""",
        note_id,
        user_id,
    )
    return None if row is None else NotificationRead.model_validate(dict(row))


async def mark_all_read(conn: WriteConn, user_id: int) -> int:
    result = await conn.execute(
        """UPDATE notifications SET read_at = now(), version = version + 1, updated_at = now()
           WHERE recipient_id = $1 AND read_at IS NULL AND deleted_at IS NULL""",
        user_id,
    )
    return int(result.split()[-1])


# -- preferences -----------------------------------------------------------------------
async def get_preferences(conn: ReadConn, user_id: int) -> PreferencesRead:
    stored, version = await _stored_rules(conn, user_id)
    return PreferencesRead(user_id=user_id, rules=_preferences(stored), version=version)


async def put_preferences(
    conn: WriteConn, shard: int, user_id: int, rules: dict[str, ChannelPreferences]
) -> PreferencesRead:
    changes = {rule: prefs.model_dump() for rule, prefs in rules.items()}
    row = await conn.fetchrow(
        """INSERT INTO notification_preferences (id, user_id, rules)
           VALUES (nextflow_id($1), $2, $3)
           ON CONFLICT (user_id) DO UPDATE
           SET rules = notification_preferences.rules || EXCLUDED.rules,
               version = notification_preferences.version + 1, updated_at = now()
           RETURNING rules, version""",
        shard,
        user_id,
        changes,
    )
    return PreferencesRead(
        user_id=user_id, rules=_preferences(row["rules"]), version=row["version"]
    )
