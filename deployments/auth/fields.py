"""Custom field definitions in the auth database: their SQL (run by the auth service,
which alone changes them) and `FieldCache`, through which every object's service
reads its live definitions: the database once per object and `FIELD_CACHE_TTL_S`,
not once per write. A change reaches the other ingresses within that time."""

from __future__ import annotations

import time
from typing import Any

from deployments._kit.custom_fields import FieldDefinition, FieldListQuery
from deployments._kit.sql import Denied, Params, Stale, keyset_page
from deployments._kit.versioned import (
    Updated,
    Versioned,
    restore_row,
    soft_delete_row,
    update_row,
)
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement
from shards.client import Database

FIELD_CACHE_TTL_S = 5.0
_FIELD = (
    "id, object, key, label, description, type, required, default_value AS default, options,"
    " deleted_at IS NOT NULL AS deleted, purged_at, version, created_at, updated_at"
)


def _read(row: Any) -> FieldDefinition:
    return FieldDefinition.model_validate(dict(row))


async def create_field(
    conn: WriteConn, data: dict[str, Any], created_by: int
) -> FieldDefinition | None:
    """The new definition; None when the object has (or had) a field with that key."""
    row = await conn.fetchrow(
        f"""INSERT INTO custom_fields
               (object, key, label, description, type, required, default_value, options,
                created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (object, key) DO NOTHING RETURNING {_FIELD}""",
        data["object"], data["key"], data["label"], data["description"], data["type"],
        data["required"], data["default"], data["options"], created_by,
    )  # fmt: skip
    return None if row is None else _read(row)


@single_statement
async def get_field(conn: ReadConn, field_id: int) -> FieldDefinition | None:
    row = await conn.fetchrow(f"SELECT {_FIELD} FROM custom_fields WHERE id = $1", field_id)
    return None if row is None else _read(row)


@single_statement
async def list_fields(
    conn: ReadConn, query: FieldListQuery, order: Order, position: Position | None
) -> list[FieldDefinition]:
    params = Params()
    where = ["deleted_at IS NOT NULL" if query.deleted else "deleted_at IS NULL"]
    if query.object is not None:
        where.append(f"object = {params(query.object)}")
    sql = keyset_page(
        "custom_fields", _FIELD, where, order.field, order, position, query.limit, params
    )
    return [_read(r) for r in await conn.fetch(sql, *params.values)]


@single_statement
async def live_fields(conn: ReadConn, object_name: str) -> list[FieldDefinition]:
    """An object's live definitions, oldest first (the order forms show them in)."""
    rows = await conn.fetch(
        f"""SELECT {_FIELD} FROM custom_fields
            WHERE object = $1 AND deleted_at IS NULL ORDER BY created_at, id""",
        object_name,
    )
    return [_read(r) for r in rows]


# Definitions as the shared versioned-row helper sees them (deployments/_kit/versioned.py):
# nobody owns one (changing them is `field:write`, checked by the service).
_FIELDS = Versioned(
    "custom_fields", _FIELD,
    frozenset({"label", "description", "required", "default_value", "options"}), owner=None,
)  # fmt: skip


async def update_field(
    conn: WriteConn, field_id: int, changes: dict[str, Any], if_version: int | None
) -> FieldDefinition | Stale | None:
    """None when there is no such live definition (`changes` in API names)."""
    columns = {("default_value" if k == "default" else k): v for k, v in changes.items()}
    found = await update_row(conn, _FIELDS, field_id, columns, if_version)
    if isinstance(found, Updated):
        return _read(found.after)
    return found if isinstance(found, Stale) else None  # (no owner: never Denied)


async def set_deleted(
    conn: WriteConn, field_id: int, deleted: bool, if_version: int | None
) -> FieldDefinition | Stale | None:
    """Delete (hide) or restore a definition; None when it is not in the other state."""
    if deleted:
        row = await soft_delete_row(conn, _FIELDS, field_id, if_version)
        if row is None or isinstance(row, Stale | Denied):
            return row if isinstance(row, Stale) else None  # (no owner: never Denied)
        return _read(row)
    restored = await restore_row(conn, _FIELDS, field_id)
    return None if restored is None else _read(restored)


async def mark_purged(conn: WriteConn, field_id: int) -> FieldDefinition | None:
    """Note that a deleted definition's values are gone (None: not deleted now)."""
    row = await conn.fetchrow(
        f"""UPDATE custom_fields SET purged_at = now(), version = version + 1,
                   updated_at = now()
            WHERE id = $1 AND deleted_at IS NOT NULL RETURNING {_FIELD}""",
        field_id,
    )
    return None if row is None else _read(row)


class FieldCache:
    """Each object's live definitions by key, read at most every `ttl_s`."""

    def __init__(self, db: Database, ttl_s: float = FIELD_CACHE_TTL_S) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._known: dict[str, tuple[float, dict[str, FieldDefinition]]] = {}

    async def of(self, object_name: str) -> dict[str, FieldDefinition]:
        now = time.monotonic()
        cached = self._known.get(object_name)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = {d.key: d for d in await self._db.read(live_fields, object_name)}
        self._known[object_name] = (now + self._ttl_s, found)
        return found

    def forget(self, object_name: str) -> None:
        self._known.pop(object_name, None)
