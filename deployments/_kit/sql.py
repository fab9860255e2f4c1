"""Small helpers for repos that build a statement from validated filters.

Column names only ever come from a repo's own whitelist; values always go through
numbered parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from gateway.errors import Forbidden, NotFound, PreconditionFailed
from gateway.listing import Order, Position
from gateway.principal import Principal
from shards.connections import WriteConn
from shards.ids import shard_sql


class Params:
    """Collects statement parameters and hands out `$n` placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def keyset_after(
    column: str, order: Order, position: Position | None, params: Params
) -> str | None:
    """`(column, id) > (v, i)` in the order's direction, or None on the first page."""
    if position is None:
        return None
    op = "<" if order.descending else ">"
    return f"({column}, id) {op} ({params(position.value)}, {params(position.id)})"


def keyset_page(
    table: str,
    columns: str,
    where: list[str],
    column: str,
    order: Order,
    position: Position | None,
    limit: int,
    params: Params,
) -> str:
    """`SELECT columns FROM table` for one cursor page: the `where` conditions, strictly
    after `position` in `order` by (`column`, id), `limit + 1` rows (the extra row says
    whether there is a next page)."""
    conditions = list(where)
    after = keyset_after(column, order, position, params)
    if after:
        conditions.append(after)
    return (
        f"SELECT {columns} FROM {table} WHERE {' AND '.join(conditions)}"
        f" {order_by(column, order)} LIMIT {params(limit + 1)}"
    )


def order_by(column: str, order: Order) -> str:
    direction = "DESC" if order.descending else "ASC"
    return f"ORDER BY {column} {direction}, id {direction}"


def on_shards(params: Params, shards: list[int], column: str = "id") -> str:
    """Rows whose global id carries one of these logical shards (see shards/ids.py)."""
    return f"{shard_sql(column)} = ANY({params(shards)}::int[])"


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Stale:
    """An update or delete whose `If-Match` version is no longer current."""

    current_version: int


@dataclass(frozen=True)
class Denied:
    """A write to a record whose owner the caller's scope does not reach."""

    owner_id: int | None


def owned_by(column: str, owners: frozenset[int] | None, params: Params) -> str | None:
    """`column = ANY(owners)`, or None when the caller's scope reaches every record
    (`Principal.owners`)."""
    if owners is None:
        return None
    return f"{column} = ANY({params(sorted(owners))}::bigint[])"


def by_id(
    params: Params,
    record_id: int,
    owner: str,
    owners: frozenset[int] | None,
    deleted: bool | None = False,
) -> list[str]:
    """The conditions of one record by id: live (`deleted` False), deleted (True) or
    either (None), and owned by one of `owners` when the caller is scoped (`owned_by`
    on the `owner` expression)."""
    where = [f"id = {params(record_id)}"]
    if deleted is not None:
        where.append("deleted_at IS NOT NULL" if deleted else "deleted_at IS NULL")
    if scope := owned_by(owner, owners, params):
        where.append(scope)
    return where


def denied(owners: frozenset[int] | None, owner_id: int | None) -> Denied | None:
    """Denied when a row owned by `owner_id` lies outside `owners` (None: all)."""
    if owners is None or (owner_id is not None and owner_id in owners):
        return None
    return Denied(owner_id)


async def locked_row(
    conn: WriteConn,
    table: str,
    columns: str,
    record_id: int,
    if_version: int | None,
    owner: str,
    owners: frozenset[int] | None,
    *,
    unowned_passes: bool = False,
) -> asyncpg.Record | Stale | Denied | None:
    """The live row, locked for the change that follows; Denied when `owners` (None:
    anyone) does not hold its `owner` column (a row nobody owns passes with
    `unowned_passes`), Stale when not at `if_version`, None when absent. The owner is
    checked before the version: a caller outside the scope learns nothing of it."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {columns} FROM {table} WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        record_id,
    )
    if row is None:
        return None
    if not (unowned_passes and row[owner] is None) and (refused := denied(owners, row[owner])):
        return refused
    if if_version is not None and row["version"] != if_version:
        return Stale(row["version"])
    return row


T = TypeVar("T")


def written(
    outcome: T | Stale | Denied | None,
    kind: str,
    record_id: int,
    principal: Principal | None = None,
) -> T:
    """The record a guarded write (`If-Match`, scope) returned, or the error its
    absence means: 404 when there is no such record (or the caller may not even read
    it), 403 when the caller may read it but their role's scope does not reach it for
    this change, 412 when the version was stale."""
    if isinstance(outcome, Denied):
        if principal is not None and principal.reaches(f"{kind}:read", outcome.owner_id):
            raise Forbidden(f"your role may not change {kind} {record_id}: it is not yours")
        outcome = None
    if outcome is None:
        raise NotFound(f"{kind} {record_id} not found")
    if isinstance(outcome, Stale):
        raise PreconditionFailed(
            f"{kind} {record_id} is at version {outcome.current_version}; reload and retry"
        )
    return outcome
