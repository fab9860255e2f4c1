"""All SQL of tickets and comments (the sharded `support` database). Each function
runs inside the one transaction the ShardManager opened on the ticket's shard; the
workflow and SLA arithmetic come from `rules` (pure), applied to the locked row.

A ticket belongs to its assignee: `owners` (`Principal.owners`; None: anyone) limits
a read or write to tickets assigned to one of them; unassigned tickets are reached
only by None."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from deployments._kit.custom_fields import CustomSort, TypedFilter, filter_sql
from deployments._kit.events import emit, record_data
from deployments._kit.history import ChangeRead, diff, list_changes, record_change
from deployments._kit.sql import (
    Denied,
    Params,
    Stale,
    by_id,
    keyset_page,
    locked_row,
    on_shards,
    owned_by,
)
from deployments._kit.timeline import TimelineItem, Window
from deployments._kit.timeline import fetch as fetch_timeline
from deployments._kit.timeline import source as timeline_source
from deployments._kit.versioned import Merge, Versioned, restore_row, soft_delete_row
from deployments.support import rules
from deployments.support.schemas import (
    CommentCreate,
    CommentRead,
    TicketCreate,
    TicketListQuery,
    TicketRead,
)
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement
from shards.ids import shard_sql

_TICKET = (
    "id, customer_id, contact_id, subject, description, priority, status, queue_id,"
    " assignee_id, channel, tags, requester_id, first_response_at, resolved_at, closed_at,"
    " first_response_due_at, resolution_due_at, sla_paused_at, sla_paused_s,"
    " first_response_breached, resolution_breached, custom_fields, version, created_at,"
    " updated_at"
)
# Tickets as the shared versioned-row helper sees them (deployments/_kit/versioned.py):
# a ticket is its assignee's.
_TICKETS = Versioned("tickets", _TICKET, frozenset(), owner="assignee_id")
_COMMENT = "id, ticket_id, author_id, body, public, version, created_at, updated_at"
# Fields a ticket write may change (columns, never from the client directly).
_WRITABLE = (
    "subject", "description", "priority", "channel", "tags", "contact_id", "queue_id",
    "status", "assignee_id", "first_response_at", "resolved_at", "closed_at",
    "first_response_due_at", "resolution_due_at", "sla_paused_at", "sla_paused_s",
    "first_response_breached", "resolution_breached", "custom_fields",
)  # fmt: skip
AUDITED = (
    "status", "priority", "assignee_id", "queue_id", "subject",
    "first_response_due_at", "resolution_due_at",
    "first_response_breached", "resolution_breached",
)  # fmt: skip
_SORT_COLUMNS = {
    "created_at": "created_at",
    "priority": "priority_rank",
    "resolution_due_at": "resolution_due_at",
}
# The breach state as of now, in SQL (what `rules.*_breached` compute in Python).
FIRST_RESPONSE_BREACHED_SQL = (
    "(first_response_breached OR (first_response_at IS NULL"
    " AND status NOT IN ('resolved', 'closed') AND first_response_due_at < now()))"
)
RESOLUTION_BREACHED_SQL = (
    "(resolution_breached OR (sla_paused_at IS NULL AND resolution_due_at < now()))"
)


@dataclass(frozen=True)
class Refused:
    """A write the workflow does not allow (the service makes it a 409)."""

    reason: str


def ticket(row: Any) -> TicketRead:
    values = dict(row)
    values["sla_breached"] = values["first_response_breached"] or values["resolution_breached"]
    return TicketRead.model_validate(values)


def clock(values: dict[str, Any]) -> rules.Clock:
    return rules.Clock(
        status=values["status"],
        created_at=values["created_at"],
        first_response_due_at=values["first_response_due_at"],
        resolution_due_at=values["resolution_due_at"],
        first_response_at=values["first_response_at"],
        resolved_at=values["resolved_at"],
        sla_paused_at=values["sla_paused_at"],
        sla_paused_s=values["sla_paused_s"],
        first_response_breached=values["first_response_breached"],
        resolution_breached=values["resolution_breached"],
    )


def _with_clock(values: dict[str, Any], c: rules.Clock) -> dict[str, Any]:
    return {
        **values,
        "status": c.status,
        "first_response_at": c.first_response_at,
        "resolved_at": c.resolved_at,
        "first_response_due_at": c.first_response_due_at,
        "resolution_due_at": c.resolution_due_at,
        "sla_paused_at": c.sla_paused_at,
        "sla_paused_s": c.sla_paused_s,
        "first_response_breached": c.first_response_breached,
        "resolution_breached": c.resolution_breached,
    }


async def _now(conn: ReadConn) -> datetime:
    now: datetime = await conn.fetchval("SELECT now()")
    return now


# -- tickets ---------------------------------------------------------------------------
async def create_ticket(
    conn: WriteConn,
    shard: int,
    data: TicketCreate,
    queue_id: int | None,
    assignee_id: int | None,
    policy: rules.Policy,
    requester_id: int | None,
) -> TicketRead:
    now = await _now(conn)
    first_due, resolution_due = rules.due_times(now, policy)
    row = await conn.fetchrow(
        f"""INSERT INTO tickets
               (id, customer_id, contact_id, subject, description, priority, status, queue_id,
                assignee_id, channel, tags, requester_id, first_response_due_at,
                resolution_due_at, created_at, updated_at, custom_fields)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                    $15, $15, $16)
            RETURNING {_TICKET}""",
        shard, data.customer_id, data.contact_id, data.subject, data.description,
        data.priority, "assigned" if assignee_id is not None else "new", queue_id,
        assignee_id, data.channel, data.tags, requester_id, first_due, resolution_due, now,
        data.custom_fields,
    )  # fmt: skip
    created = dict(row)
    await record_change(
        conn, "ticket", created["id"], "created", diff(None, created, AUDITED), requester_id
    )
    made = ticket(row)
    await _emit(conn, "ticket.created", made, requester_id)
    if assignee_id is not None:
        await _emit(
            conn, "ticket.assigned", made, requester_id, {"assignee_id": [None, made.assignee_id]}
        )
    return made


_EVENTS = {
    "updated": "ticket.updated",
    "status_changed": "ticket.status_changed",
    "assigned": "ticket.assigned",
}


async def _emit(
    conn: WriteConn,
    type: str,
    record: TicketRead,
    actor_id: int | None,
    changes: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    data = record_data("ticket", record, changes, **extra)
    await emit(conn, type, "ticket", record.id, data, actor_id)


@single_statement
async def get_ticket(
    conn: ReadConn, ticket_id: int, owners: frozenset[int] | None = None
) -> TicketRead | None:
    """The live ticket, if `owners` (None: anyone) holds its assignee."""
    params = Params()
    where = by_id(params, ticket_id, "assignee_id", owners)
    row = await conn.fetchrow(
        f"SELECT {_TICKET} FROM tickets WHERE {' AND '.join(where)}", *params.values
    )
    return None if row is None else ticket(row)


async def _locked(
    conn: WriteConn,
    ticket_id: int,
    if_version: int | None,
    owners: frozenset[int] | None = None,
    take_unassigned: bool = False,
) -> dict[str, Any] | Stale | Denied | None:
    """The live ticket's row, locked; Denied when `owners` (None: anyone) does not
    hold its assignee (an unassigned one passes when `take_unassigned`), Stale for a
    stale `if_version`."""
    found = await locked_row(
        conn, "tickets", _TICKET, ticket_id, if_version, "assignee_id", owners,
        unowned_passes=take_unassigned,
    )  # fmt: skip
    return dict(found) if isinstance(found, asyncpg.Record) else found


async def _save(
    conn: WriteConn,
    before: dict[str, Any],
    after: dict[str, Any],
    action: str,
    actor_id: int | None,
) -> TicketRead:
    params = Params()
    sets = [f"{name} = {params(after[name])}" for name in _WRITABLE if after[name] != before[name]]
    sets += ["version = version + 1", "updated_at = now()"]
    row = await conn.fetchrow(
        f"UPDATE tickets SET {', '.join(sets)} WHERE id = {params(before['id'])}"
        f" RETURNING {_TICKET}",
        *params.values,
    )
    changes = diff(before, after, AUDITED)
    await record_change(conn, "ticket", before["id"], action, changes, actor_id)
    saved = ticket(row)
    if action in _EVENTS:
        await _emit(conn, _EVENTS[action], saved, actor_id, changes)
    return saved


async def update_ticket(
    conn: WriteConn,
    ticket_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    policy: rules.Policy | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> TicketRead | Stale | Denied | Refused | None:
    """Field changes; `policy` (the new priority's) when the priority changes."""
    before = await _locked(conn, ticket_id, if_version, owners)
    if before is None or isinstance(before, (Stale, Denied)):
        return before
    if before["status"] == "closed":
        return Refused(f"ticket {ticket_id} is closed; closed tickets cannot be changed")
    after = {**before, **{k: v for k, v in changes.items() if k in _WRITABLE}}
    if isinstance(merged := after["custom_fields"], Merge):  # the keys given change
        kept = {k: v for k, v in before["custom_fields"].items() if k not in merged.remove}
        after["custom_fields"] = {**kept, **merged.set}
    now = await _now(conn)
    if policy is not None and after["priority"] != before["priority"]:
        after = _with_clock(after, rules.reprioritised(clock(after), policy, now))
    return await _save(conn, before, after, "updated", actor_id)


async def change_status(
    conn: WriteConn,
    ticket_id: int,
    target: str,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> TicketRead | Stale | Denied | Refused | None:
    before = await _locked(conn, ticket_id, if_version, owners)
    if before is None or isinstance(before, (Stale, Denied)):
        return before
    try:
        rules.check_transition(before["status"], target, before["assignee_id"])
    except rules.TransitionRefused as exc:
        return Refused(str(exc))
    now = await _now(conn)
    after = _with_clock(before, rules.change_status(clock(before), target, now))
    after["closed_at"] = now if target == "closed" else None
    return await _save(conn, before, after, "status_changed", actor_id)


async def assign_ticket(
    conn: WriteConn,
    ticket_id: int,
    assignee_id: int | None,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
    take_unassigned: bool = False,
) -> TicketRead | Stale | Denied | Refused | None:
    """Give the ticket to someone (new -> assigned) or to nobody (assigned -> new);
    pending and resolved tickets keep their status. Denied when `owners` does not
    hold the current assignee, unless the ticket is unassigned and `take_unassigned`
    (the caller picks it up from the desk)."""
    before = await _locked(conn, ticket_id, if_version, owners, take_unassigned)
    if before is None or isinstance(before, (Stale, Denied)):
        return before
    if before["status"] == "closed":
        return Refused(f"ticket {ticket_id} is closed; closed tickets cannot be reassigned")
    after = {**before, "assignee_id": assignee_id}
    target = before["status"]
    if assignee_id is not None and target == "new":
        target = "assigned"
    elif assignee_id is None and target == "assigned":
        target = "new"
    if target != before["status"]:
        after = _with_clock(after, rules.change_status(clock(after), target, await _now(conn)))
    return await _save(conn, before, after, "assigned", actor_id)


async def delete_ticket(
    conn: WriteConn,
    ticket_id: int,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> TicketRead | Stale | Denied | None:
    row = await soft_delete_row(conn, _TICKETS, ticket_id, if_version, owners)
    if row is None or isinstance(row, (Stale, Denied)):
        return row
    await record_change(conn, "ticket", ticket_id, "deleted", {}, actor_id)
    return ticket(row)


async def restore_ticket(
    conn: WriteConn, ticket_id: int, actor_id: int | None, owners: frozenset[int] | None = None
) -> TicketRead | None:
    """The restored ticket (or the live one); None when absent or its assignee is
    outside `owners`."""
    row = await restore_row(conn, _TICKETS, ticket_id, owners)
    if row is None:
        return await get_ticket(conn, ticket_id, owners)
    await record_change(conn, "ticket", ticket_id, "restored", {}, actor_id)
    return ticket(row)


def _ticket_filters(
    query: TicketListQuery,
    shards: list[int],
    owners: frozenset[int] | None,
    params: Params,
    custom: Sequence[TypedFilter] = (),
) -> list[str]:
    where = [
        "deleted_at IS NULL", on_shards(params, shards),
        *filter_sql(params, "custom_fields", custom),
    ]  # fmt: skip
    if scope := owned_by("assignee_id", owners, params):
        where.append(scope)
    if query.statuses:
        where.append(f"status = ANY({params(list(query.statuses))}::text[])")
    if query.priorities:
        where.append(f"priority = ANY({params(list(query.priorities))}::text[])")
    if query.queue_id is not None:
        where.append(f"queue_id = {params(query.queue_id)}")
    if query.assignee_id is not None:
        where.append(f"assignee_id = {params(query.assignee_id)}")
    if query.unassigned is not None:
        where.append("assignee_id IS NULL" if query.unassigned else "assignee_id IS NOT NULL")
    if query.customer_id is not None:
        where.append(f"customer_id = {params(query.customer_id)}")
    if query.tags:
        where.append(f"tags && {params(list(query.tags))}::text[]")
    if query.created_from is not None:
        where.append(f"created_at >= {params(query.created_from)}")
    if query.created_before is not None:
        where.append(f"created_at < {params(query.created_before)}")
    if query.due_before is not None:
        where.append(f"resolution_due_at < {params(query.due_before)}")
    for wanted, expression in (
        (query.first_response_breached, FIRST_RESPONSE_BREACHED_SQL),
        (query.resolution_breached, RESOLUTION_BREACHED_SQL),
        (query.sla_breached, f"({FIRST_RESPONSE_BREACHED_SQL} OR {RESOLUTION_BREACHED_SQL})"),
    ):
        if wanted is not None:
            where.append(expression if wanted else f"NOT {expression}")
    return where


@single_statement
async def list_tickets(
    conn: ReadConn,
    shards: list[int],
    query: TicketListQuery,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
    sort: CustomSort | None = None,
) -> list[TicketRead]:
    """Up to `limit + 1` tickets on these shards after `position` (the caller
    merges), assigned to one of `owners` (None: anyone's, and unassigned ones),
    matching the `cf.` filters."""
    params = Params()
    column = sort.sql() if sort else _SORT_COLUMNS[order.field]
    where = _ticket_filters(query, shards, owners, params, custom)
    sql = keyset_page("tickets", _TICKET, where, column, order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [ticket(r) for r in rows]


@single_statement
async def count_tickets(
    conn: ReadConn,
    shards: list[int],
    query: TicketListQuery,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
) -> int:
    params = Params()
    where = _ticket_filters(query, shards, owners, params, custom)
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM tickets WHERE {' AND '.join(where)}", *params.values
        )
    )


async def open_counts(conn: ReadConn, shards: list[int], user_ids: list[int]) -> dict[int, int]:
    """Open (new, assigned, pending) tickets per assignee, for least-busy assignment."""
    params = Params()
    rows = await conn.fetch(
        f"""SELECT assignee_id, count(*) AS n FROM tickets
            WHERE deleted_at IS NULL AND {on_shards(params, shards)}
              AND assignee_id = ANY({params(user_ids)}::bigint[])
              AND status = ANY({params(sorted(rules.OPEN_STATUSES))}::text[])
            GROUP BY assignee_id""",
        *params.values,
    )
    return {int(r["assignee_id"]): int(r["n"]) for r in rows}


async def sweep_sla(conn: WriteConn, shards: list[int]) -> tuple[list[int], list[int]]:
    """Store the breach flags of clocks that ran out since the last sweep, with a
    history row for each; idempotent (a flag set once is never matched again), so
    several replicas may sweep at once. Returns the ids flagged (first response,
    resolution)."""
    flagged: list[list[int]] = []
    for flag, condition in (
        (
            "first_response_breached",
            "first_response_at IS NULL AND status NOT IN ('resolved', 'closed')"
            " AND first_response_due_at < now()",
        ),
        ("resolution_breached", "sla_paused_at IS NULL AND resolution_due_at < now()"),
    ):
        params = Params()
        rows = await conn.fetch(
            f"""WITH flagged AS (
                    UPDATE tickets SET {flag} = true, version = version + 1, updated_at = now()
                    WHERE deleted_at IS NULL AND NOT {flag} AND {condition}
                      AND {on_shards(params, shards)}
                    RETURNING id)
                INSERT INTO record_changes (id, record_type, record_id, action, changes)
                SELECT nextflow_id({shard_sql("f.id")}::int), 'ticket', f.id, 'sla_breached',
                       jsonb_build_object({params(flag)}::text, jsonb_build_array(false, true))
                FROM flagged f
                RETURNING record_id""",
            *params.values,
        )
        flagged.append(sorted(int(r["record_id"]) for r in rows))
        if rows:
            breached = await conn.fetch(
                f"SELECT {_TICKET} FROM tickets WHERE id = ANY($1::bigint[]) ORDER BY id",
                flagged[-1],
            )
            for row in breached:
                await _emit(conn, "ticket.sla_breached", ticket(row), None, breach=flag)
    return flagged[0], flagged[1]


# -- comments --------------------------------------------------------------------------
async def add_comment(
    conn: WriteConn,
    shard: int,
    ticket_id: int,
    data: CommentCreate,
    author_id: int | None,
    owners: frozenset[int] | None = None,
) -> CommentRead | Denied | Refused | None:
    """A comment on the ticket's shard; the first public one stops the first-response
    clock. None when the ticket is absent, Denied when `owners` (None: anyone) does
    not hold its assignee."""
    before = await _locked(conn, ticket_id, None, owners)
    if before is None or isinstance(before, (Stale, Denied)):
        return before if isinstance(before, Denied) else None  # no version asked: never Stale
    if before["status"] == "closed":
        return Refused(f"ticket {ticket_id} is closed; open a new ticket instead")
    row = await conn.fetchrow(
        f"""INSERT INTO ticket_comments (id, ticket_id, author_id, body, public)
            VALUES (nextflow_id($1), $2, $3, $4, $5) RETURNING {_COMMENT}""",
        shard, ticket_id, author_id, data.body, data.public,
    )  # fmt: skip
    if data.public and before["first_response_at"] is None:
        now = await _now(conn)
        after = _with_clock(before, rules.first_response(clock(before), now))
        await _save(conn, before, after, "first_response", author_id)
    comment = CommentRead.model_validate(dict(row))
    payload = record_data("comment", comment, ticket=ticket(before).model_dump(mode="json"))
    await emit(conn, "comment.added", "ticket", ticket_id, payload, author_id)
    return comment


async def list_comments(
    conn: ReadConn,
    ticket_id: int,
    limit: int,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
) -> list[CommentRead] | None:
    """None when the ticket is absent (or its assignee outside `owners`); else up to
    `limit + 1` comments after `position`."""
    if not await _ticket_reached(conn, ticket_id, owners, live=True):
        return None
    params = Params()
    where = [f"ticket_id = {params(ticket_id)}", "deleted_at IS NULL"]
    sql = keyset_page(
        "ticket_comments", _COMMENT, where, "created_at", order, position, limit, params
    )
    rows = await conn.fetch(sql, *params.values)
    return [CommentRead.model_validate(dict(r)) for r in rows]


# -- history ---------------------------------------------------------------------------
async def list_ticket_changes(
    conn: ReadConn,
    ticket_id: int,
    limit: int,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
) -> list[ChangeRead] | None:
    """None when there is no such ticket, live or deleted (or its assignee is outside
    `owners`); else up to `limit + 1` of its history rows after `position`."""
    if not await _ticket_reached(conn, ticket_id, owners, live=False):
        return None
    return await list_changes(conn, "ticket", ticket_id, limit, order, position)


async def _ticket_reached(
    conn: ReadConn, ticket_id: int, owners: frozenset[int] | None, live: bool
) -> bool:
    """Whether the ticket exists (and is not deleted, when `live`) with its assignee
    in `owners` (None: anyone)."""
    params = Params()
    where = by_id(params, ticket_id, "assignee_id", owners, deleted=False if live else None)
    found = await conn.fetchval(
        f"SELECT 1 FROM tickets WHERE {' AND '.join(where)}", *params.values
    )
    return found is not None


# -- a customer's timeline (deployments/_kit/timeline.py) ------------------------------
@single_statement
async def timeline(
    conn: ReadConn, customer_id: int, window: Window, owners: frozenset[int] | None
) -> list[TimelineItem]:
    """The customer's tickets (`ticket`) and their comments (`comment`) that
    `owners` (the caller's `ticket:read` scope; None: all) reaches."""
    params = Params()
    scope = [f"t.customer_id = {params(customer_id)}", "t.deleted_at IS NULL"]
    if owned := owned_by("t.assignee_id", owners, params):
        scope.append(owned)
    parts = []
    if window.wants("ticket"):
        parts.append(timeline_source(
            params, window, kind="'ticket'", table="tickets t", where=scope,
            at="t.created_at", row_id="t.id", record_type="'ticket'", record_id="t.id",
            title="'Ticket opened: ' || t.subject", actor="t.requester_id",
            data="""jsonb_build_object('subject', t.subject, 'status', t.status,
                        'priority', t.priority, 'channel', t.channel,
                        'assignee_id', t.assignee_id::text)""",
        ))  # fmt: skip
    if window.wants("comment"):
        parts.append(timeline_source(
            params, window, kind="'comment'",
            table="ticket_comments c JOIN tickets t ON t.id = c.ticket_id",
            where=[*scope, "c.deleted_at IS NULL"], at="c.created_at", row_id="c.id",
            record_type="'ticket'", record_id="c.ticket_id",
            title="CASE WHEN c.public THEN 'Reply on ' ELSE 'Internal note on ' END || t.subject",
            actor="c.author_id",
            data="jsonb_build_object('body', left(c.body, 500), 'public', c.public)",
        ))  # fmt: skip
    return await fetch_timeline(conn, params, window, parts)
