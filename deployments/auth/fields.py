"""Custom field definitions in the auth database: their SQL (run by the auth service,
which alone changes them) and `FieldCache`, through which every object's service
reads its live definitions: the database once per object and `FIELD_CACHE_TTL_S`,
not once per write. A change reaches the other ingresses within that time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from deployments._kit.custom_fields import FieldDefinition, FieldListQuery
from deployments._kit.sql import Denied, Params, Stale, keyset_page
from deployments._kit.unique_values import CLAIM_GRACE_S, Held, Want
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
    "id, object, key, label, description, type, required, unique_values AS unique,"
    " default_value AS default, options, deleted_at IS NOT NULL AS deleted, purged_at, version,"
    " created_at, updated_at"
)


def _read(row: Any) -> FieldDefinition:
    return FieldDefinition.model_validate(dict(row))


async def create_field(
    conn: WriteConn, data: dict[str, Any], created_by: int
) -> FieldDefinition | None:
    """The new definition; None when the object has (or had) a field with that key."""
    row = await conn.fetchrow(
        f"""INSERT INTO custom_fields
               (object, key, label, description, type, required, unique_values, default_value,
                options, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (object, key) DO NOTHING RETURNING {_FIELD}""",
        data["object"], data["key"], data["label"], data["description"], data["type"],
        data["required"], data["unique"], data["default"], data["options"], created_by,
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
    """Note that a deleted definition's values are gone, and so are the claims on them
    (None: not deleted now)."""
    await conn.execute("DELETE FROM custom_field_claims WHERE field_id = $1", field_id)
    row = await conn.fetchrow(
        f"""UPDATE custom_fields SET purged_at = now(), version = version + 1,
                   updated_at = now()
            WHERE id = $1 AND deleted_at IS NOT NULL RETURNING {_FIELD}""",
        field_id,
    )
    return None if row is None else _read(row)


# -- claims on unique values (deployments/_kit/unique_values.py) -----------------------
_WANTED = (
    "SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[]) AS w(field_id, digest, token)"
)


def _columns(wanted: Sequence[Want]) -> tuple[list[int], list[bytes], list[str]]:
    return [w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted]


async def claim_values(conn: WriteConn, wanted: Sequence[Want], grace_s: float) -> list[Held]:
    """Claim each (field, digest) for its token; the claims other tokens hold instead
    (a claim another transaction is taking is waited for: the primary key)."""
    columns = _columns(wanted)
    await conn.execute(
        f"""INSERT INTO custom_field_claims (field_id, digest, token)
            SELECT field_id, digest, token FROM ({_WANTED}) w
            ON CONFLICT (field_id, digest) DO NOTHING""",
        *columns,
    )
    rows = await conn.fetch(
        f"""SELECT c.field_id, c.digest, c.token, w.token AS wanted_by,
                   NOT c.kept AND c.claimed_at > now() - make_interval(secs => $4) AS in_flight
            FROM custom_field_claims c JOIN ({_WANTED}) w USING (field_id, digest)
            WHERE c.token <> w.token""",
        *columns, grace_s,
    )  # fmt: skip
    return [
        Held(r["field_id"], bytes(r["digest"]), r["token"], r["wanted_by"], r["in_flight"])
        for r in rows
    ]


async def take_over(conn: WriteConn, held: Held) -> bool:
    """Give `held`'s claim to the write that wants it, if nobody changed it since."""
    done = await conn.fetchval(
        """UPDATE custom_field_claims SET token = $4, kept = false, claimed_at = now()
           WHERE field_id = $1 AND digest = $2 AND token = $3 RETURNING true""",
        held.field_id, held.digest, held.token, held.wanted_by,
    )  # fmt: skip
    return bool(done)


async def settle_claims(conn: WriteConn, wanted: Sequence[Want], kept: bool) -> None:
    """Keep these claims (their records are written: taken again if one was let go
    meanwhile), or let go of those not kept yet."""
    if kept:
        await conn.execute(
            f"""INSERT INTO custom_field_claims (field_id, digest, token, kept)
                SELECT field_id, digest, token, true FROM ({_WANTED}) w
                ON CONFLICT (field_id, digest) DO UPDATE SET kept = true
                WHERE custom_field_claims.token = EXCLUDED.token""",
            *_columns(wanted),
        )
        return
    await conn.execute(
        f"""DELETE FROM custom_field_claims c USING ({_WANTED}) w
            WHERE c.field_id = w.field_id AND c.digest = w.digest AND c.token = w.token
              AND NOT c.kept""",
        *_columns(wanted),
    )


class FieldCache:
    """Each object's live definitions by key, read at most every `ttl_s`; and the
    claims on unique fields' values (one auth database call each)."""

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

    async def claim(self, wanted: Sequence[Want]) -> list[Held]:
        return await self._db.write(claim_values, wanted, CLAIM_GRACE_S)

    async def take_over(self, held: Held) -> bool:
        return await self._db.write(take_over, held)

    async def settle(self, wanted: Sequence[Want], kept: bool) -> None:
        await self._db.write(settle_claims, wanted, kept)
