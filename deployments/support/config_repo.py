"""All SQL of the support configuration (the unsharded `support_config` database on
the catalog server): queues, their members and round-robin cursor, SLA policies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from deployments._kit.history import diff, record_change
from deployments._kit.sql import Params, Stale, keyset_after, order_by
from deployments.support import rules
from deployments.support.schemas import QueueCreate, QueueRead, SlaPolicyPut, SlaPolicyRead
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn

_QUEUE = """q.id, q.name, q.description, q.strategy, q.is_default, q.last_assigned_id,
    q.version, q.created_at, q.updated_at,
    COALESCE((SELECT json_agg(json_build_object(
                  'user_id', m.user_id, 'active', m.active, 'added_at', m.added_at)
                  ORDER BY m.user_id)
              FROM queue_members m WHERE m.queue_id = q.id), '[]'::json) AS members"""
_POLICY = "id, priority, first_response_s, resolution_s, version, updated_at"
_QUEUE_UPDATABLE = {"name", "description", "strategy", "is_default"}
_SORT_COLUMNS = {"created_at": "q.created_at", "name": "q.name"}
# Audited (change history). Membership changes are their own actions on the queue
# (`member_added`, `member_activated`, `member_deactivated`, `member_removed`).
QUEUE_AUDITED = ("name", "strategy")
POLICY_AUDITED = ("first_response_s", "resolution_s")


async def _change(
    conn: WriteConn,
    record_type: str,
    record_id: int,
    action: str,
    changes: dict[str, list[Any]],
    actor_id: int | None,
) -> None:
    await record_change(conn, record_type, record_id, action, changes, actor_id, sharded=False)


@dataclass(frozen=True)
class Routing:
    """What ticket creation needs of a queue."""

    queue_id: int
    strategy: str


async def get_queue(conn: ReadConn, queue_id: int) -> QueueRead | None:
    row = await conn.fetchrow(
        f"SELECT {_QUEUE} FROM queues q WHERE q.id = $1 AND q.deleted_at IS NULL", queue_id
    )
    return None if row is None else QueueRead.model_validate(dict(row))


async def list_queues(
    conn: ReadConn, limit: int, order: Order, position: Position | None
) -> list[QueueRead]:
    params = Params()
    column = _SORT_COLUMNS[order.field]
    where = ["q.deleted_at IS NULL"]
    after = keyset_after(column, order, position, params)
    if after:
        where.append(after)
    rows = await conn.fetch(
        f"SELECT {_QUEUE} FROM queues q WHERE {' AND '.join(where)}"
        f" {order_by(column, order)} LIMIT {params(limit + 1)}",
        *params.values,
    )
    return [QueueRead.model_validate(dict(r)) for r in rows]


async def create_queue(conn: WriteConn, data: QueueCreate, actor_id: int | None) -> QueueRead:
    if data.is_default:
        await _clear_default(conn)
    queue_id = await conn.fetchval(
        """INSERT INTO queues (name, description, strategy, is_default)
           VALUES ($1, $2, $3, $4) RETURNING id""",
        data.name, data.description, data.strategy, data.is_default,
    )  # fmt: skip
    if data.members:
        await conn.executemany(
            "INSERT INTO queue_members (queue_id, user_id) VALUES ($1, $2)",
            [(queue_id, user_id) for user_id in data.members],
        )
    created = await _fetch(conn, queue_id)
    changes = diff(None, created.model_dump(), QUEUE_AUDITED)
    if created.members:
        changes["members"] = [None, [str(m.user_id) for m in created.members]]
    await _change(conn, "queue", queue_id, "created", changes, actor_id)
    return created


async def update_queue(
    conn: WriteConn,
    queue_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
) -> QueueRead | Stale | None:
    found = await _lock(conn, queue_id, if_version)
    if found is not True:
        return found
    before = await _fetch(conn, queue_id)
    if changes.get("is_default"):
        await _clear_default(conn)
    params = Params()
    sets = [f"{k} = {params(v)}" for k, v in changes.items() if k in _QUEUE_UPDATABLE]
    sets += ["version = version + 1", "updated_at = now()"]
    await conn.execute(
        f"UPDATE queues SET {', '.join(sets)} WHERE id = {params(queue_id)}", *params.values
    )
    after = await _fetch(conn, queue_id)
    changed = diff(before.model_dump(), after.model_dump(), QUEUE_AUDITED)
    await _change(conn, "queue", queue_id, "updated", changed, actor_id)
    return after


async def delete_queue(
    conn: WriteConn, queue_id: int, if_version: int | None, actor_id: int | None
) -> QueueRead | Stale | None:
    found = await _lock(conn, queue_id, if_version)
    if found is not True:
        return found
    await conn.execute(
        """UPDATE queues SET deleted_at = now(), is_default = false, version = version + 1,
               updated_at = now() WHERE id = $1""",
        queue_id,
    )
    await _change(conn, "queue", queue_id, "deleted", {}, actor_id)
    return await _fetch(conn, queue_id)


async def restore_queue(conn: WriteConn, queue_id: int, actor_id: int | None) -> QueueRead | None:
    restored = await conn.fetchval(
        """UPDATE queues SET deleted_at = NULL, version = version + 1, updated_at = now()
           WHERE id = $1 AND deleted_at IS NOT NULL RETURNING id""",
        queue_id,
    )
    if restored is not None:
        await _change(conn, "queue", queue_id, "restored", {}, actor_id)
    return await get_queue(conn, queue_id)


async def put_member(
    conn: WriteConn, queue_id: int, user_id: int, active: bool, actor_id: int | None
) -> QueueRead | None:
    """Add an agent to the queue, or set whether they take tickets."""
    if await _lock(conn, queue_id, None) is not True:
        return None
    was = await conn.fetchval(
        "SELECT active FROM queue_members WHERE queue_id = $1 AND user_id = $2", queue_id, user_id
    )
    if was is None:
        action = "member_added"
    elif was != active:
        action = "member_activated" if active else "member_deactivated"
    else:
        action = ""
    if action:
        member = str(user_id)
        changes = {"user_id": [None if was is None else member, member], "active": [was, active]}
        await _change(conn, "queue", queue_id, action, changes, actor_id)
    await conn.execute(
        """INSERT INTO queue_members (queue_id, user_id, active) VALUES ($1, $2, $3)
           ON CONFLICT (queue_id, user_id) DO UPDATE SET active = EXCLUDED.active""",
        queue_id, user_id, active,
    )  # fmt: skip
    await _touch(conn, queue_id)
    return await _fetch(conn, queue_id)


async def remove_member(
    conn: WriteConn, queue_id: int, user_id: int, actor_id: int | None
) -> tuple[QueueRead | None, bool]:
    """(the queue, whether the user was a member); the queue is None when absent."""
    if await _lock(conn, queue_id, None) is not True:
        return None, False
    was = await conn.fetchval(
        "DELETE FROM queue_members WHERE queue_id = $1 AND user_id = $2 RETURNING active",
        queue_id,
        user_id,
    )
    removed = was is not None
    if removed:
        await _touch(conn, queue_id)
        changes = {"user_id": [str(user_id), None], "active": [was, None]}
        await _change(conn, "queue", queue_id, "member_removed", changes, actor_id)
    return await _fetch(conn, queue_id), bool(removed)


async def routing(conn: ReadConn, queue_id: int | None) -> Routing | None:
    """The queue a new ticket goes to: the one named, else the default (if any)."""
    if queue_id is None:
        row = await conn.fetchrow(
            "SELECT id, strategy FROM queues WHERE is_default AND deleted_at IS NULL"
        )
    else:
        row = await conn.fetchrow(
            "SELECT id, strategy FROM queues WHERE id = $1 AND deleted_at IS NULL", queue_id
        )
    return None if row is None else Routing(int(row["id"]), row["strategy"])


async def queue_exists(conn: ReadConn, queue_id: int) -> bool:
    return bool(
        await conn.fetchval("SELECT 1 FROM queues WHERE id = $1 AND deleted_at IS NULL", queue_id)
    )


async def active_members(conn: ReadConn, queue_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT user_id FROM queue_members WHERE queue_id = $1 AND active ORDER BY user_id",
        queue_id,
    )
    return [int(r["user_id"]) for r in rows]


async def pick_assignee(
    conn: WriteConn, queue_id: int, open_counts: Mapping[int, int] | None
) -> int | None:
    """Choose the next agent of a round-robin (no counts) or least-busy (counts) queue
    and move the cursor to them, under the queue's row lock: concurrent creations each
    get the next agent in turn."""
    row = await conn.fetchrow(
        "SELECT last_assigned_id FROM queues WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        queue_id,
    )
    if row is None:
        return None
    members = [
        rules.Member(int(r["user_id"]), r["active"])
        for r in await conn.fetch(
            "SELECT user_id, active FROM queue_members WHERE queue_id = $1", queue_id
        )
    ]
    last = row["last_assigned_id"]
    if open_counts is None:
        chosen = rules.next_round_robin(members, last)
    else:
        chosen = rules.least_busy(members, open_counts, last)
    if chosen is not None:
        await conn.execute(
            "UPDATE queues SET last_assigned_id = $2 WHERE id = $1", queue_id, chosen
        )
    return chosen


async def _lock(
    conn: WriteConn, queue_id: int, if_version: int | None
) -> Literal[True] | Stale | None:
    version = await conn.fetchval(
        "SELECT version FROM queues WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", queue_id
    )
    if version is None:
        return None
    if if_version is not None and version != if_version:
        return Stale(version)
    return True


async def _touch(conn: WriteConn, queue_id: int) -> None:
    await conn.execute(
        "UPDATE queues SET version = version + 1, updated_at = now() WHERE id = $1", queue_id
    )


async def _clear_default(conn: WriteConn) -> None:
    await conn.execute(
        "UPDATE queues SET is_default = false, version = version + 1, updated_at = now()"
        " WHERE is_default AND deleted_at IS NULL"
    )


async def _fetch(conn: ReadConn, queue_id: int) -> QueueRead:
    row = await conn.fetchrow(f"SELECT {_QUEUE} FROM queues q WHERE q.id = $1", queue_id)
    return QueueRead.model_validate(dict(row))


# -- SLA policies ----------------------------------------------------------------------
async def list_policies(conn: ReadConn) -> list[SlaPolicyRead]:
    rows = await conn.fetch(
        f"""SELECT {_POLICY} FROM sla_policies ORDER BY
            CASE priority WHEN 'urgent' THEN 1 WHEN 'high' THEN 2
                          WHEN 'normal' THEN 3 ELSE 4 END"""
    )
    return [SlaPolicyRead.model_validate(dict(r)) for r in rows]


async def get_policy(conn: ReadConn, priority: str) -> rules.Policy:
    row = await conn.fetchrow(
        "SELECT first_response_s, resolution_s FROM sla_policies WHERE priority = $1", priority
    )
    if row is None:  # every priority has a row from the migration; be safe anyway
        return rules.Policy(first_response_s=8 * 3600, resolution_s=72 * 3600)
    return rules.Policy(int(row["first_response_s"]), int(row["resolution_s"]))


async def policy_id(conn: ReadConn, priority: str) -> int | None:
    """The stable id of a priority's policy (the record id of its history)."""
    value = await conn.fetchval("SELECT id FROM sla_policies WHERE priority = $1", priority)
    return None if value is None else int(value)


async def put_policy(
    conn: WriteConn,
    priority: str,
    data: SlaPolicyPut,
    if_version: int | None,
    actor_id: int | None,
) -> SlaPolicyRead | Stale:
    before = await conn.fetchrow(
        f"SELECT {_POLICY} FROM sla_policies WHERE priority = $1 FOR UPDATE", priority
    )
    params = Params()
    where = [f"sla_policies.priority = {params(priority)}"]
    first, resolution = params(data.first_response_s), params(data.resolution_s)
    if if_version is not None:
        where.append(f"sla_policies.version = {params(if_version)}")
    row = await conn.fetchrow(
        f"""INSERT INTO sla_policies (priority, first_response_s, resolution_s)
            VALUES ($1, {first}, {resolution})
            ON CONFLICT (priority) DO UPDATE SET first_response_s = EXCLUDED.first_response_s,
                resolution_s = EXCLUDED.resolution_s, version = sla_policies.version + 1,
                updated_at = now()
            WHERE {" AND ".join(where)}
            RETURNING {_POLICY}""",
        *params.values,
    )
    if row is None:
        current = await conn.fetchval(
            "SELECT version FROM sla_policies WHERE priority = $1", priority
        )
        return Stale(int(current))
    action = "created" if before is None else "updated"
    changes = diff(None if before is None else dict(before), dict(row), POLICY_AUDITED)
    await _change(conn, "sla_policy", row["id"], action, changes, actor_id)
    return SlaPolicyRead.model_validate(dict(row))
