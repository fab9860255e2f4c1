"""Unique custom fields: one record per value, across every shard.

A record's custom field values live on its own shard, so no index can see two shards
at once. A value of a unique field is therefore *claimed* first in one place, the
auth database's `custom_field_claims` (key: the field and a digest of the value),
and the record written after:

    claim = await fields.claim(data.custom_fields, key=once)  # 409 naming each taken key
    async with claim:                       # kept on a clean exit, let go on an error
        created = await write(...)

How it holds:
- **A claim is taken with a token** (random, or derived from the write's
  `Idempotency-Key`, batch item key or import row key, so a retried write finds its own
  claim), and kept once the record is written (off the write's path). A claim another
  token holds is only taken over when no live record other than the writer's holds
  the value: the records are asked (one lookup on each server, answered by the GIN
  index on the table's `custom_fields`); a claim taken less than `CLAIM_GRACE_S` ago
  and not kept yet is a write in flight, and the value is taken.
- **The record is the truth, the claim a lock**: a value a record stops holding (an
  update, a delete) keeps its claim until somebody wants the value, who then finds no
  holder and takes it over. A crash between the claim and the write leaves a claim not
  kept, taken over after `CLAIM_GRACE_S`.
- A deleted record holds nothing (restoring it claims its values again: 409 when
  another record took one meanwhile).
- Values compare in stored form (an e-mail field's stored lower-case when unique;
  numbers by value), so `1` and `1.0` are one value and `ACME-1` and `acme-1` two.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol

import orjson

from deployments._kit.sql import Params, on_shards
from gateway.errors import Conflict
from gateway.idempotency import Once
from shards import ReadConn, WriteConn
from shards.client import Database, Shards

log = logging.getLogger("nextflow.unique_values")
CLAIM_GRACE_S = 120.0
ASKING = 8  # lookups of a value's holders at once (each asks every server)
UNIQUE_TYPES = frozenset({"text", "email", "url", "phone", "number", "decimal"})


Want = tuple[int, bytes, str]  # (field id, value digest, the wanting write's token)


@dataclass(frozen=True)
class Held:
    """A claim another token holds on a value a write wants."""

    field_id: int
    digest: bytes
    token: str  # the holder's
    wanted_by: str
    in_flight: bool  # taken less than CLAIM_GRACE_S ago and not kept yet


class ClaimStore(Protocol):
    """Where claims are kept (deployments/auth/fields.py, the auth database)."""

    async def claim(self, wanted: Sequence[Want]) -> list[Held]: ...

    async def take_over(self, held: Held) -> bool: ...

    async def settle(self, wanted: Sequence[Want], kept: bool) -> None: ...


def digest(kind: str, value: Any) -> bytes:
    """A stored value's digest, equal for equal values (numbers by value)."""
    if kind == "number" and not isinstance(value, bool):
        text = format(Decimal(str(value)).normalize(), "f")
    else:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return hashlib.sha256(f"{kind}:{text}".encode()).digest()


def token_of(key: Once | str | None, scope: str = "") -> str:
    """The claim token of a write: its idempotency key's (so a retry owns the claim
    it took), a stable row key's, or a fresh one; `scope` (the object) keeps one key
    used on two objects apart."""
    if key is None:
        return secrets.token_hex(16)
    text = key if isinstance(key, str) else f"{key.caller}\x00{key.key}"
    return hashlib.sha256(f"{scope}\x00{text}".encode()).hexdigest()[:32]


# -- the records: who holds a value ------------------------------------------------------
async def holding(
    conn: ReadConn | WriteConn,
    shards: list[int] | None,
    table: str,
    identity: str,
    key: str,
    value: Any,
) -> list[tuple[int, str | None]]:
    """Live records of `table` (of these logical shards; None: unsharded) whose custom
    field `key` holds `value`, with their `identity` (an SQL expression: how an import
    row names its record), at most two: enough to tell "only this one"."""
    params = Params()
    where = [f"custom_fields @> {params({key: value})}::jsonb",
             "deleted_at IS NULL"]  # fmt: skip
    if shards is not None:
        where.append(on_shards(params, shards))
    rows = await conn.fetch(
        f"SELECT id, {identity} AS identity FROM {table} WHERE {' AND '.join(where)} LIMIT 2",
        *params.values,
    )
    return [(int(r["id"]), r["identity"]) for r in rows]


async def deleted_values(conn: ReadConn | WriteConn, table: str, record_id: int) -> Any:
    """The custom field values of a deleted record (None: no such deleted record; the
    jsonb arrives decoded, shards/manager.py)."""
    return await conn.fetchval(
        f"SELECT custom_fields FROM {table} WHERE id = $1 AND deleted_at IS NOT NULL", record_id
    )


@dataclass(frozen=True)
class Records:
    """Where an object's records are: a sharded database (`Shards`) or one database;
    `identity`: how an import row names its record (SQL over the table's columns)."""

    place: Shards | Database
    table: str
    identity: str = "NULL::text"

    async def holding(self, key: str, value: Any) -> list[tuple[int, str | None]]:
        """Every server asked at once, on its primary (a holder just written counts)."""
        args = (self.table, self.identity, key, value)
        if isinstance(self.place, Database):
            return await self.place.write(holding, None, *args)
        found = await self.place.write_each_server(holding, *args)
        return [h for holders in found for h in holders]

    async def deleted_values(self, record_id: int) -> dict[str, Any] | None:
        if isinstance(self.place, Database):
            return await self.place.write(deleted_values, self.table, record_id)
        shard = self.place.shard_for_id(record_id)
        return await self.place.write(shard, deleted_values, self.table, record_id)


# -- a write's claim -----------------------------------------------------------------
@dataclass
class Claim:
    """The unique values one write is about to store, claimed for it. Used as `async
    with`: a clean exit keeps them, an error lets them go (`settle` says which, for a
    batch item)."""

    store: ClaimStore | None = None
    wanted: list[Want] = field(default_factory=list)
    settled: bool = False

    async def settle(self, kept: bool) -> None:
        """Keep the claims or let them go, off the write's path (measured: awaiting it
        cost a quarter of a create's time): the records are the truth, and a claim not
        kept is checked against them before it is taken over, so a settle that never
        lands only holds a value back for `CLAIM_GRACE_S`."""
        if self.store is None or not self.wanted or self.settled:
            return
        self.settled = True
        task = asyncio.get_running_loop().create_task(self._settle(self.store, kept))
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)

    async def _settle(self, store: ClaimStore, kept: bool) -> None:
        try:
            await store.settle(self.wanted, kept)
        except Exception as exc:  # noqa: BLE001 (logged: the claim stays as taken)
            log.warning("unique values not %s: %s", "kept" if kept else "let go", exc)

    async def __aenter__(self) -> Claim:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.settle(kept=kind is None)


NO_CLAIM = Claim()
_SETTLING: set[asyncio.Task[None]] = set()  # settles under way (kept referenced)


async def claim(
    store: ClaimStore,
    records: Records,
    unique: Mapping[str, tuple[int, str]],
    values: Mapping[str, Any],
    *,
    record: int | None,
    token: str,
    field: str,
) -> Claim:
    """Claim the values of unique fields (`unique`: key -> (field id, type)) a write
    stores; `record`: the record it writes (None: a new one). 409 naming each key whose
    value another record holds or another write is storing now."""
    claimed, refused = await claim_rows(
        store, records, unique, [(values, token, record)], field=field
    )
    if refused:
        raise Conflict("a unique custom field's value is taken", refused[0])
    return claimed


async def claim_rows(
    store: ClaimStore,
    records: Records,
    unique: Mapping[str, tuple[int, str]],
    rows: Sequence[tuple[Mapping[str, Any], str, int | str | None]],
    *,
    field: str,
) -> tuple[Claim, dict[int, list[dict[str, str]]]]:
    """Claim the unique values of many writes at once (an import's chunk): each row its
    values, its token and its record (an id, or the `Records.identity` an import row
    names it by; None: a new one). The claims got (settle them when the rows are
    written) and, by row index, the errors of the rows refused (whose claims are let go)."""
    wants: dict[Want, tuple[int, str, Any]] = {}  # -> (row, key, value)
    for i, (values, token, _) in enumerate(rows):
        for key, value in values.items():
            if key in unique and value is not None:
                field_id, kind = unique[key]
                wants[(field_id, digest(kind, value), token)] = (i, key, value)
    if not wants:
        return NO_CLAIM, {}
    ours = {token for _, _, token in wants}
    refused: dict[int, list[dict[str, str]]] = {}
    mine: set[Want] = set()  # values the record holds already: nothing to claim
    asking = asyncio.Semaphore(ASKING)

    async def decide(held: Held) -> None:
        want = (held.field_id, held.digest, held.wanted_by)
        i, key, value = wants[want]
        record = rows[i][2]
        problem = None
        if held.token in ours:
            problem = "another row of the file has this value"
        elif held.in_flight:
            problem = "another write is storing this value now"
        else:
            async with asking:
                holders = await records.holding(key, value)
            if any(record is None or record not in (h, name) for h, name in holders):
                problem = "another record has this value"
            elif holders:
                mine.add(want)
            elif not await store.take_over(held):
                problem = "another write is storing this value now"
        if problem is not None:
            refused.setdefault(i, []).append({"field": f"{field}.{key}", "message": problem})

    await asyncio.gather(*(decide(held) for held in await store.claim(list(wants))))
    got = Claim(store, [w for w in wants if w not in mine and wants[w][0] not in refused])
    gone = [w for w in wants if w not in mine and wants[w][0] in refused]
    if gone:  # only these tokens' claims not kept yet go
        await store.settle(gone, kept=False)
    return got, refused
