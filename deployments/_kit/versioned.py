"""The row plumbing every repo shares for a record with a `version`, an `updated_at`
and a soft delete (`deleted_at`): a versioned update, a soft delete, a restore, and
telling a write that found nothing apart (absent, stale `If-Match`, outside the
caller's scope). Each runs in the caller's transaction and answers rows; the repo
adds its history rows and events (which differ by record).

    CUSTOMERS = Versioned("customers", _CUSTOMER, frozenset({"name", ...}), owner="owner_id")
    found = await update_row(conn, CUSTOMERS, customer_id, changes, if_version, owners)
    if not isinstance(found, Updated):
        return found  # None (absent), Stale or Denied
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployments._kit.sql import Denied, Params, Stale, by_id, denied
from shards import WriteConn

BUMP = "version = version + 1, updated_at = now()"


@dataclass(frozen=True)
class Versioned:
    """A soft-deleted, versioned table. `columns`: what a write returns; `updatable`:
    the columns an update may set (others in `changes` are ignored); `owner`: the
    row's owner as an SQL expression over the table's row (what a role's own/team
    scope is checked against), None for a table without owners."""

    name: str
    columns: str
    updatable: frozenset[str]
    owner: str | None = "owner_id"


@dataclass(frozen=True)
class Merge:
    """A change of a jsonb column key by key (custom fields): `set` these keys, `remove`
    those; `update_row` writes `column = (column || set) - remove`."""

    set: dict[str, Any]
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Updated:
    """An update's row before (locked, as it was) and after."""

    before: dict[str, Any]
    after: Mapping[str, Any]


async def update_row(
    conn: WriteConn,
    table: Versioned,
    record_id: int,
    changes: Mapping[str, Any],
    if_version: int | None,
    owners: frozenset[int] | None = None,
) -> Updated | Stale | Denied | None:
    """Lock the live row, check scope and version, set the `updatable` changes and bump
    the version: Updated, Stale for a stale `if_version`, Denied when its owner is
    outside `owners` (None: anyone), None when absent."""
    owned = f", {table.owner} AS owned_by" if table.owner else ""
    found = await conn.fetchrow(
        f"SELECT {table.columns}{owned} FROM {table.name}"
        " WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        record_id,
    )
    if found is None:
        return None
    if table.owner and (refused := denied(owners, found["owned_by"])):
        return refused
    before = {k: v for k, v in found.items() if k != "owned_by"}
    if if_version is not None and before["version"] != if_version:
        return Stale(before["version"])
    params = Params()
    sets = [
        f"{k} = ({k} || {params(v.set)}::jsonb) - {params(list(v.remove))}::text[]"
        if isinstance(v, Merge)
        else f"{k} = {params(v)}"
        for k, v in changes.items()
        if k in table.updatable
    ]
    row = await conn.fetchrow(
        f"UPDATE {table.name} SET {', '.join([*sets, BUMP])} WHERE id = {params(record_id)}"
        f" RETURNING {table.columns}",
        *params.values,
    )
    return Updated(before, row)


async def soft_delete_row(
    conn: WriteConn,
    table: Versioned,
    record_id: int,
    if_version: int | None,
    owners: frozenset[int] | None = None,
) -> Mapping[str, Any] | Stale | Denied | None:
    """The row as deleted; Stale, Denied or None as `update_row`."""
    params = Params()
    where = _where(params, table, record_id, owners, deleted=False)
    if if_version is not None:
        where.append(f"version = {params(if_version)}")
    row: Mapping[str, Any] | None = await conn.fetchrow(
        f"UPDATE {table.name} SET deleted_at = now(), {BUMP}"
        f" WHERE {' AND '.join(where)} RETURNING {table.columns}",
        *params.values,
    )
    if row is None:
        return await missing_stale_or_denied(conn, table, record_id, owners)
    return row


async def restore_row(
    conn: WriteConn, table: Versioned, record_id: int, owners: frozenset[int] | None = None
) -> Mapping[str, Any] | None:
    """The row as restored; None when it is not deleted (live, or absent) or its owner
    is outside `owners` (the repo then answers with the live record, if any)."""
    params = Params()
    where = _where(params, table, record_id, owners, deleted=True)
    row: Mapping[str, Any] | None = await conn.fetchrow(
        f"UPDATE {table.name} SET deleted_at = NULL, {BUMP}"
        f" WHERE {' AND '.join(where)} RETURNING {table.columns}",
        *params.values,
    )
    return row


async def missing_stale_or_denied(
    conn: WriteConn, table: Versioned, record_id: int, owners: frozenset[int] | None = None
) -> Stale | Denied | None:
    """Why a write that names a version found no row: None (absent or deleted), Denied
    (outside `owners`), else Stale with the current version."""
    owned = f", {table.owner} AS owned_by" if table.owner else ""
    found = await conn.fetchrow(
        f"SELECT version{owned} FROM {table.name} WHERE id = $1 AND deleted_at IS NULL",
        record_id,
    )
    if found is None:
        return None
    if table.owner and (refused := denied(owners, found["owned_by"])):
        return refused
    return Stale(found["version"])


def _where(
    params: Params,
    table: Versioned,
    record_id: int,
    owners: frozenset[int] | None,
    *,
    deleted: bool,
) -> list[str]:
    if table.owner is None:
        return [f"id = {params(record_id)}", "deleted_at IS NOT NULL" if deleted else
                "deleted_at IS NULL"]  # fmt: skip
    return by_id(params, record_id, table.owner, owners, deleted=deleted)
