"""All SQL of activities and of the customer database's part of a timeline. Each
function runs inside the one transaction the ShardManager opened on the shard of the
activity's customer (or, for a lead not yet converted, of the lead)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deployments._kit.events import emit, record_data
from deployments._kit.sql import Denied, Params, Stale, denied, on_shards, owned_by
from deployments._kit.timeline import TimelineItem, Window, sorted_run
from deployments._kit.versioned import (
    Updated,
    Versioned,
    restore_row,
    soft_delete_row,
    update_row,
)
from deployments.customer.activities.schemas import ActivityCreate, ActivityRead
from deployments.customer.repo import customer_alive
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement

_ACTIVITY = (
    "id, kind, customer_id, lead_id, contact_id, deal_id, ticket_id, subject, body, owner_id,"
    " due_at, assignee_id, priority, done_at IS NOT NULL AS done, done_at, remind_at,"
    " reminded_at, occurred_at, duration_minutes, participants, outcome, direction, at,"
    " version, created_at, updated_at"
)
_UPDATABLE = frozenset({
    "subject", "body", "contact_id", "deal_id", "ticket_id", "due_at", "assignee_id",
    "priority", "remind_at", "done_at", "reminded_at", "occurred_at", "duration_minutes",
    "participants", "outcome", "direction",
})  # fmt: skip
# Tasks without a due date come last in "my open tasks".
NO_DUE = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class Absent:
    """A create or update that names a record this database does not have live (or
    that the caller's scope does not reach): which field."""

    field: str
    message: str


def _table(me: int) -> Versioned:
    """Activities as a versioned table whose owner, for the scope check, is the
    caller when they are the task's assignee (an assignee may change their task),
    else whoever logged it."""
    me = int(me)  # a literal in the SQL: an int and nothing else
    return Versioned(
        "activities", _ACTIVITY, _UPDATABLE,
        owner=f"CASE WHEN assignee_id = {me} THEN {me} ELSE owner_id END",
    )  # fmt: skip


def _readable(params: Params, owners: frozenset[int] | None, me: int, alias: str = "") -> str:
    """What `activity:read` reaches: the owners' activities, and the caller's tasks."""
    scope = owned_by(f"{alias}owner_id", owners, params)
    return "TRUE" if scope is None else f"({scope} OR {alias}assignee_id = {params(me)})"


def _read(row: Mapping[str, Any]) -> ActivityRead:
    return ActivityRead.model_validate(dict(row))


# -- writes --------------------------------------------------------------------------
async def create_activity(
    conn: WriteConn,
    shard: int,
    data: ActivityCreate,
    owner_id: int,
    assignee_id: int | None,
    customer_owners: frozenset[int] | None,
) -> ActivityRead | Absent:
    """The new activity; Absent when its customer (reached by `customer_owners`) or
    its contact (one of that customer's) is not there."""
    if data.customer_id is not None:
        if not await customer_alive(conn, data.customer_id, customer_owners):
            return Absent("customer_id", f"customer {data.customer_id} not found")
        if data.contact_id is not None and not await _contact_of(
            conn, data.contact_id, data.customer_id
        ):
            return Absent("contact_id", f"contact {data.contact_id} is not one of the customer's")
    elif data.contact_id is not None:
        return Absent("contact_id", "a lead's activity has no contact until the lead converts")
    task = data.kind == "task"
    row = await conn.fetchrow(
        f"""INSERT INTO activities
               (id, kind, customer_id, lead_id, contact_id, deal_id, ticket_id, subject, body,
                owner_id, due_at, assignee_id, priority, remind_at, occurred_at,
                duration_minutes, participants, outcome, direction)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                    $15, $16, $17, $18, $19)
            RETURNING {_ACTIVITY}""",
        shard, data.kind, data.customer_id, data.lead_id, data.contact_id, data.deal_id,
        data.ticket_id, data.subject, data.body, owner_id, data.due_at,
        assignee_id if task else None, (data.priority or "normal") if task else None,
        data.remind_at, data.occurred_at, data.duration_minutes,
        [p.model_dump(mode="json", exclude_none=True) for p in data.participants],
        data.outcome, data.direction,
    )  # fmt: skip
    made = _read(row)
    await _emit(conn, "activity.created", made, owner_id)
    if task and assignee_id is not None and assignee_id != owner_id:
        await _emit(conn, "task.assigned", made, owner_id, {"assignee_id": [None, assignee_id]})
    return made


async def update_activity(
    conn: WriteConn,
    activity_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int,
    owners: frozenset[int] | None,
) -> ActivityRead | Absent | Stale | Denied | None:
    """The activity as changed (`changes` in API names; `done` completes or reopens a
    task); Absent for a task field on another kind or a contact not the customer's."""
    table = _table(actor_id)
    current = await conn.fetchrow(
        f"SELECT kind, customer_id, done_at, {table.owner} AS owned_by FROM activities"
        " WHERE id = $1 AND deleted_at IS NULL",
        activity_id,
    )
    if current is None:
        return None
    if refused := denied(owners, current["owned_by"]):  # before telling anything of it
        return refused
    columns = dict(changes)
    if current["kind"] != "task":
        given = [f for f in ("due_at", "assignee_id", "priority", "remind_at", "done")
                 if columns.get(f) is not None]  # fmt: skip
        if given:
            return Absent(given[0], f"only a task has {', '.join(given)}")
    if "done" in columns:
        done = columns.pop("done")
        if done is not None and done != (current["done_at"] is not None):
            columns["done_at"] = datetime.now(UTC) if done else None
    if "remind_at" in columns:
        columns["reminded_at"] = None  # a new reminder time is sent again
    if "participants" in columns and columns["participants"] is not None:
        columns["participants"] = [
            {k: v for k, v in p.items() if v is not None} for p in columns["participants"]
        ]
    contact, customer = columns.get("contact_id"), current["customer_id"]
    if contact is not None and not (
        customer is not None and await _contact_of(conn, contact, customer)
    ):
        return Absent("contact_id", f"contact {contact} is not one of the customer's")
    found = await update_row(conn, table, activity_id, columns, if_version, owners)
    if not isinstance(found, Updated):
        return found
    before = _read(found.before | {"done": found.before["done_at"] is not None})
    after = _read(found.after)
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    changed = {
        k: [old[k], new[k]] for k in sorted(old) if k not in _BOOKKEEPING and old[k] != new[k]
    }
    await _emit(conn, "activity.updated", after, actor_id, changed)
    if after.done and not before.done:
        await _emit(conn, "task.completed", after, actor_id)
    if after.kind == "task" and after.assignee_id not in (None, before.assignee_id, actor_id):
        await _emit(
            conn, "task.assigned", after, actor_id,
            {"assignee_id": [before.assignee_id, after.assignee_id]},
        )  # fmt: skip
    return after


_BOOKKEEPING = frozenset({"version", "updated_at", "at"})


async def delete_activity(
    conn: WriteConn,
    activity_id: int,
    if_version: int | None,
    actor_id: int,
    owners: frozenset[int] | None,
) -> ActivityRead | Stale | Denied | None:
    row = await soft_delete_row(conn, _table(actor_id), activity_id, if_version, owners)
    if row is None or isinstance(row, Stale | Denied):
        return row
    gone = _read(row)
    await _emit(conn, "activity.deleted", gone, actor_id)
    return gone


async def restore_activity(
    conn: WriteConn, activity_id: int, actor_id: int, owners: frozenset[int] | None
) -> ActivityRead | None:
    """The restored activity (or the live one); None when absent or not reached."""
    row = await restore_row(conn, _table(actor_id), activity_id, owners)
    if row is None:
        return await get_activity(conn, activity_id, owners, actor_id)
    return _read(row)


# -- reads ---------------------------------------------------------------------------
@single_statement
async def get_activity(
    conn: ReadConn, activity_id: int, owners: frozenset[int] | None, me: int
) -> ActivityRead | None:
    params = Params()
    row = await conn.fetchrow(
        f"""SELECT {_ACTIVITY} FROM activities
            WHERE id = {params(activity_id)} AND deleted_at IS NULL
              AND {_readable(params, owners, me)}""",
        *params.values,
    )
    return None if row is None else _read(row)


async def list_activities(
    conn: ReadConn,
    parent: str,
    parent_id: int,
    kinds: Sequence[str] | None,
    open_tasks: bool | None,
    order: Order,
    position: Position | None,
    limit: int,
    owners: frozenset[int] | None,
    me: int,
    customer_owners: frozenset[int] | None,
) -> list[ActivityRead] | None:
    """Up to `limit + 1` activities of a customer (`parent` "customer") or of a lead
    ("lead") after `position`; None when the customer is not there for the caller."""
    if parent == "customer" and not await customer_alive(conn, parent_id, customer_owners):
        return None
    params = Params()
    column = "customer_id" if parent == "customer" else "lead_id"
    where = [f"{column} = {params(parent_id)}", "deleted_at IS NULL", _readable(params, owners, me)]
    if kinds:
        where.append(f"kind = ANY({params(list(kinds))}::text[])")
    if open_tasks is not None:
        where.append("kind = 'task' AND done_at IS NULL" if open_tasks
                     else "NOT (kind = 'task' AND done_at IS NULL)")  # fmt: skip
    if position is not None:
        op = "<" if order.descending else ">"
        where.append(f"(at, id) {op} ({params(position.value)}, {params(position.id)})")
    direction = "DESC" if order.descending else "ASC"
    rows = await conn.fetch(
        f"SELECT {_ACTIVITY} FROM activities WHERE {' AND '.join(where)}"
        f" ORDER BY at {direction}, id {direction} LIMIT {params(limit + 1)}",
        *params.values,
    )
    return [_read(r) for r in rows]


@single_statement
async def open_tasks(
    conn: ReadConn,
    shards: list[int],
    assignee_id: int,
    due_before: datetime | None,
    position: Position | None,
    limit: int,
) -> list[ActivityRead]:
    """Up to `limit + 1` open tasks of `assignee_id` on this server's shards, soonest
    due first (none due: last), after `position` (due or NO_DUE, id)."""
    params = Params()
    due = f"coalesce(due_at, {params(NO_DUE)})"
    where = [
        "kind = 'task'", "done_at IS NULL", "deleted_at IS NULL",
        f"assignee_id = {params(assignee_id)}", on_shards(params, shards),
    ]  # fmt: skip
    if due_before is not None:
        where.append(f"due_at < {params(due_before)}")
    if position is not None:
        where.append(f"({due}, id) > ({params(position.value)}, {params(position.id)})")
    rows = await conn.fetch(
        f"SELECT {_ACTIVITY} FROM activities WHERE {' AND '.join(where)}"
        f" ORDER BY {due}, id LIMIT {params(limit + 1)}",
        *params.values,
    )
    return [_read(r) for r in rows]


def due_key(task: ActivityRead) -> tuple[datetime, int]:
    """A task's place in "my open tasks" (for merging the servers' runs)."""
    return (task.due_at or NO_DUE, task.id)


# -- reminders -----------------------------------------------------------------------
async def send_due_reminders(conn: WriteConn, shards: list[int], batch: int) -> int:
    """Mark up to `batch` open tasks of these shards whose reminder time has come as
    reminded, with a `task.reminder` event each (Notification tells the assignee), in
    this one transaction; how many. Rows another sweep holds are skipped."""
    params = Params()
    rows = await conn.fetch(
        f"""UPDATE activities SET reminded_at = now()
            WHERE id IN (
                SELECT id FROM activities
                WHERE remind_at <= now() AND reminded_at IS NULL AND done_at IS NULL
                  AND deleted_at IS NULL AND {on_shards(params, shards)}
                ORDER BY remind_at LIMIT {params(batch)}
                FOR UPDATE SKIP LOCKED)
            RETURNING {_ACTIVITY}""",
        *params.values,
    )
    for row in rows:
        await _emit(conn, "task.reminder", _read(row), None)
    return len(rows)


# -- a lead's activities at its conversion -------------------------------------------
async def adopt_lead(conn: WriteConn, lead_id: int, customer_id: int) -> int:
    """Give the customer the activities of its lead that live on the customer's own
    shard (the usual case: a conversion makes the customer on the lead's shard);
    how many."""
    rows = await conn.fetch(
        """UPDATE activities SET customer_id = $2, version = version + 1, updated_at = now()
           WHERE lead_id = $1 AND customer_id IS NULL RETURNING id""",
        lead_id, customer_id,
    )  # fmt: skip
    return len(rows)


async def lead_orphans(conn: WriteConn, lead_id: int) -> list[dict[str, Any]]:
    """The lead's activities still without a customer (deleted ones too), as rows to
    copy to the customer's shard."""
    rows = await conn.fetch(
        """SELECT id, kind, contact_id, deal_id, ticket_id, subject, body, owner_id, due_at,
                  assignee_id, priority, done_at, remind_at, reminded_at, occurred_at,
                  duration_minutes, participants, outcome, direction, created_at, deleted_at
           FROM activities WHERE lead_id = $1 AND customer_id IS NULL ORDER BY id""",
        lead_id,
    )
    return [dict(r) for r in rows]


async def take_over(
    conn: WriteConn, shard: int, lead_id: int, customer_id: int, rows: list[dict[str, Any]]
) -> int:
    """Copies of a lead's activities on the customer's shard (new ids there, the old
    one kept as `origin_id`: a repeat copies nothing twice); how many were new."""
    made = 0
    for r in rows:
        new = await conn.fetchval(
            """INSERT INTO activities
                   (id, kind, customer_id, lead_id, contact_id, deal_id, ticket_id, subject,
                    body, owner_id, due_at, assignee_id, priority, done_at, remind_at,
                    reminded_at, occurred_at, duration_minutes, participants, outcome,
                    direction, created_at, deleted_at, origin_id)
               VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                       $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)
               ON CONFLICT (origin_id) DO NOTHING RETURNING id""",
            shard, r["kind"], customer_id, lead_id, r["contact_id"], r["deal_id"],
            r["ticket_id"], r["subject"], r["body"], r["owner_id"], r["due_at"],
            r["assignee_id"], r["priority"], r["done_at"], r["remind_at"], r["reminded_at"],
            r["occurred_at"], r["duration_minutes"], r["participants"], r["outcome"],
            r["direction"], r["created_at"], r["deleted_at"], r["id"],
        )  # fmt: skip
        made += new is not None
    return made


async def drop_moved(conn: WriteConn, lead_id: int, ids: list[int]) -> int:
    """Delete the lead's originals once their copies are on the customer's shard."""
    rows = await conn.fetch(
        "DELETE FROM activities WHERE lead_id = $1 AND customer_id IS NULL"
        " AND id = ANY($2::bigint[]) RETURNING id",
        lead_id, ids,
    )  # fmt: skip
    return len(rows)


# -- the customer database's part of a timeline ----------------------------------------
@single_statement
async def timeline(
    conn: ReadConn,
    customer_id: int,
    window: Window,
    customer_owners: frozenset[int] | None,
    activity_owners: frozenset[int] | None,
    me: int,
    activities: bool,
) -> list[TimelineItem] | None:
    """The customer's activities (when `activities`: the caller may read them) and the
    field changes of it and its contacts, in the window; None when the customer is
    not there for the caller."""
    params = Params()
    customer = params(customer_id)
    owner = owned_by("owner_id", customer_owners, params)
    kinds = [k for k in ("note", "task", "call", "meeting", "email") if window.wants(k)]
    parts = []
    if activities and kinds:
        where = [
            f"customer_id = {customer}", "deleted_at IS NULL",
            f"kind = ANY({params(kinds)}::text[])", _readable(params, activity_owners, me),
            *window.where(params, "at", "id"),
        ]  # fmt: skip
        parts.append(
            f"""(SELECT 'activity' AS source, id, at, row_to_json(a)::jsonb AS row
                 FROM (SELECT {_ACTIVITY} FROM activities WHERE {" AND ".join(where)}
                       {window.tail(params)}) a)"""
        )
    if window.wants("change"):
        where = [
            f"""((record_type = 'customer' AND record_id = {customer}) OR
                 (record_type = 'contact' AND record_id IN
                    (SELECT id FROM contacts WHERE customer_id = {customer})))""",
            *window.where(params, "created_at", "id"),
        ]
        parts.append(
            f"""(SELECT 'change' AS source, id, created_at AS at,
                        jsonb_build_object('record_type', record_type, 'record_id', record_id,
                                           'action', action, 'changes', changes,
                                           'actor_id', actor_id) AS row
                 FROM record_changes WHERE {" AND ".join(where)} {window.tail(params)})"""
        )
    alive = f"EXISTS (SELECT 1 FROM customers WHERE id = {customer} AND deleted_at IS NULL"
    alive += f" AND {owner})" if owner else ")"
    if not parts:
        return [] if await conn.fetchval(f"SELECT {alive}", *params.values) else None
    rows = await conn.fetch(
        f"""SELECT {alive} AS alive, t.* FROM (SELECT 1) one
            LEFT JOIN ({" UNION ALL ".join(parts)}) t ON true""",
        *params.values,
    )
    if not rows or not rows[0]["alive"]:
        return None
    items = [_item(r) for r in rows if r["source"] is not None]
    return sorted_run(items, window)


def _item(r: Mapping[str, Any]) -> TimelineItem:
    row = r["row"]
    if r["source"] == "activity":
        activity = _read(row)
        return TimelineItem(
            kind=activity.kind, id=activity.id, at=activity.at, record_type="activity",
            record_id=activity.id, title=activity.subject, actor_id=activity.owner_id,
            data=activity.model_dump(mode="json"),
        )  # fmt: skip
    fields = ", ".join(sorted(row["changes"]))
    what = f"{row['record_type']} {row['action']}"
    return TimelineItem(
        kind="change", id=r["id"], at=r["at"], record_type=row["record_type"],
        record_id=int(row["record_id"]), title=f"{what}: {fields}" if fields else what,
        actor_id=row["actor_id"], data={"action": row["action"], "changes": row["changes"]},
    )  # fmt: skip


# -- shared --------------------------------------------------------------------------
async def _contact_of(conn: ReadConn | WriteConn, contact_id: int, customer_id: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM contacts WHERE id = $1 AND customer_id = $2 AND deleted_at IS NULL",
            contact_id,
            customer_id,
        )  # fmt: skip
    )


async def _emit(
    conn: WriteConn,
    type: str,
    activity: ActivityRead,
    actor_id: int | None,
    changes: dict[str, Any] | None = None,
) -> None:
    await emit(
        conn, type, "activity", activity.id, record_data("activity", activity, changes), actor_id
    )
