"""An `Idempotency-Key` kept with its effect: in the same shard database and the same
transaction as the record a create makes (table `idempotency_keys`, migration
`_sharded/0009`), so a retried create is exactly-once and costs nothing elsewhere.

    once = idempotency.effect_key(request)              # in the route (gateway)
    shard = self.shards.place(key=once.slot if once else None)
    created = await write_once(self.shards, shard, once, CustomerRead,
                               repo.create_customer, shard, data, owner_id, actor_id)

How it holds (PostgreSQL does the work):
- The key's row is inserted first in the effect's transaction. A repeat finds it
  committed and gets the stored result (`once.replayed`); a concurrent repeat waits on
  the unique (caller, key) until the first commits (then the same) or rolls back (then
  it runs). The same key with another request (`fingerprint`) is refused, 422.
- An effect that made nothing (its repo function answered None, or a refusal such as
  `Denied`/`Stale`) keeps no key: a retry is checked again.
- Rows carry an id of their logical shard (a shard move takes them along) and are
  deleted after `idempotency_retention_s` (`sweep`, run by each service now and then).
A key lives in the database of the service whose route took it and on the shard its
record is on; another service's route, or a record placed elsewhere (a contact goes
where its customer is), does not see it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from cluster.settings import get_settings
from deployments._kit.sql import Params, on_shards
from gateway.idempotency import KeyReused, Once
from shards import WriteConn
from shards.client import Shards

log = logging.getLogger("nextflow.idempotency")
M = TypeVar("M", bound=BaseModel)
SWEEP_EVERY_S = 300.0


@dataclass(frozen=True)
class Outcome(Generic[M]):
    """What `once` did: `value` is the effect's result (a new one, or the stored one
    when `replayed`); `reused`: the key was taken by another request, nothing ran."""

    value: M | Any
    replayed: bool = False
    reused: bool = False


async def once(
    conn: WriteConn,
    key: Once | None,
    shard: int,
    model: type[M],
    effect: Callable[..., Awaitable[M | Any]],
    *args: Any,
) -> Outcome[M]:
    """Run `effect(conn, *args)` once per `key` in this transaction (see the module)."""
    if key is None:
        return Outcome(await effect(conn, *args))
    row_id = await conn.fetchval(
        """INSERT INTO idempotency_keys (id, caller, key, fingerprint)
           VALUES (nextflow_id($1), $2, $3, $4)
           ON CONFLICT (caller, key) DO NOTHING RETURNING id""",
        shard, key.caller, key.key, key.fingerprint,
    )  # fmt: skip
    if row_id is None:
        found = await conn.fetchrow(
            "SELECT fingerprint, result FROM idempotency_keys WHERE caller = $1 AND key = $2",
            key.caller,
            key.key,
        )
        if bytes(found["fingerprint"]) != key.fingerprint:
            return Outcome(None, reused=True)
        return Outcome(model.model_validate_json(found["result"]), replayed=True)
    value = await effect(conn, *args)
    if isinstance(value, model):
        await conn.execute(
            "UPDATE idempotency_keys SET result = $2 WHERE id = $1",
            row_id,
            value.model_dump_json().encode(),
        )
    else:  # nothing made (not found, refused): a retry is checked again
        await conn.execute("DELETE FROM idempotency_keys WHERE id = $1", row_id)
    return Outcome(value)


async def kept(conn: WriteConn, key: Once) -> bool:
    """Whether `key` is kept: its create ran (or runs) and a repeat replays it. Run as a
    write, on the primary: a replica may not have the key yet."""
    found = await conn.fetchval(
        "SELECT true FROM idempotency_keys WHERE caller = $1 AND key = $2", key.caller, key.key
    )
    return found is not None


async def write_once(
    shards: Shards,
    shard: int,
    key: Once | None,
    model: type[M],
    effect: Callable[..., Awaitable[M | Any]],
    *args: Any,
) -> M | Any:
    """`shards.write(shard, effect, *args)` once per `key` (None: just the write).
    Raises `KeyReused` (422) for a key another request took; marks `key.replayed`."""
    if key is not None:
        _sweep_when_due(shards)
    outcome: Outcome[M] = await shards.write(shard, once, key, shard, model, effect, *args)
    if outcome.reused:
        raise KeyReused()
    if key is not None and outcome.replayed:
        key.replayed = True
    return outcome.value


async def sweep(conn: WriteConn, shards: list[int], retention_s: float, batch: int) -> int:
    """Delete up to `batch` keys of these logical shards older than the retention (a
    server keeps to the shards it owns: rows still arriving by a move are not its own
    yet); how many went."""
    params = Params()
    deleted = await conn.fetchval(
        f"""WITH gone AS (
                DELETE FROM idempotency_keys WHERE id IN (
                    SELECT id FROM idempotency_keys
                    WHERE created_at < now() - make_interval(secs => {params(retention_s)})
                      AND {on_shards(params, shards)}
                    LIMIT {params(batch)})
                RETURNING 1)
            SELECT count(*) FROM gone""",
        *params.values,
    )
    return int(deleted or 0)


_SWEPT: dict[str, float] = {}  # database -> when this process last swept it
_SWEEPING: set[asyncio.Task[None]] = set()


def _sweep_when_due(shards: Shards) -> None:
    """Delete the database's expired keys on every server, in the background of the
    writes that add them, at most every `SWEEP_EVERY_S` per process."""
    now = time.monotonic()
    if now - _SWEPT.get(shards.database, 0.0) < SWEEP_EVERY_S:
        return
    _SWEPT[shards.database] = now
    task = asyncio.get_running_loop().create_task(_sweep_all(shards))
    _SWEEPING.add(task)
    task.add_done_callback(_SWEEPING.discard)


async def _sweep_all(shards: Shards) -> None:
    retention = get_settings().idempotency_retention_s
    try:
        gone = sum(await shards.write_each_server(sweep, retention, 5000))
        if gone:
            log.info("swept %d expired idempotency keys of %s", gone, shards.database)
    except Exception as exc:  # the next sweep tries again
        log.warning("idempotency key sweep of %s failed: %r", shards.database, exc)
