"""Online move of one logical shard to another server (`nextflow shards move`).

While writes go on, for every sharded database (`SHARDED_TABLES`):

1. validate (unknown shard or server, same server, a move already in progress, rows
   of the shard already on the target) and record the move in `shard_moves`;
2. copy and catch up with logical replication: a publication on the source primary
   with a row filter on the shard (`((id >> 12) & 1023) = L`), a subscription on the
   target primary with `copy_data`; wait for the initial sync of every table, then
   for the stream to reach the source's current WAL position;
3. pause writes to that one shard: the source's ShardManager holds new writes and
   waits for those in flight (`freeze`); the stream catches up to the source's WAL
   position taken then; row count and checksum of every table must match on both
   sides; one catalog transaction points the shard at the target (version + 1);
   every ShardManager re-reads the catalog; `thaw` releases the held writes, which
   the source now refuses (`ShardMoved`, nothing ran) and the callers' `Shards`
   retry on the target;
4. clean up: drop subscription (and its slot on the source) and publication, delete
   the shard's rows from the source in batches.

A failure before the flip undoes everything (thaw, drop subscription and
publication, delete what reached the target, the move recorded as failed): the
source stays the owner and nothing is lost.

Global ids stay unique: after the flip the target makes ids of the shard with its
own sequence and its own clock (`nextflow_id(L)`). Every id the source made for L
carries a timestamp from before the freeze, and the target makes none before the
flip, which comes after the freeze; so a new id of L on the target has a newer
millisecond part than any id of L made on the source, as long as the target's clock
is not behind the source's by more than the pause (one machine here: one clock)
and clocks do not go back. Copied rows keep their ids.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from cluster.settings import Settings
from shards.databases import SHARDED_TABLES
from shards.ids import shard_sql
from shards.manager import DEFAULT_FREEZE_LEASE_S, NAMESPACE, actor_name, manager_handle
from shards.routing import ServerSpec

CATALOG = "catalog"
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_DELETE_BATCH = 5000
_POLL_S = 0.05
_SESSION = {"TimeZone": "UTC", "DateStyle": "ISO, MDY", "application_name": "nextflow-move"}


class MoveError(RuntimeError):
    """A move that was refused or failed; the message is one line for an operator."""


def shard_filter(shard: int, column: str = "id") -> str:
    """SQL: rows whose global id carries logical shard `shard` (see shards/ids.py)."""
    return f"({shard_sql(column)} = {int(shard)})"


# -- who holds writes ----------------------------------------------------------------
class Controls(Protocol):
    """Reaches the ShardManagers: hold and release one shard's writes, re-read the map."""

    async def freeze(self, server: str, shard: int, lease_s: float) -> dict[str, Any]: ...

    async def thaw(self, server: str, shard: int) -> dict[str, Any]: ...

    async def refresh(self, server: str) -> None:
        """Make `server`'s manager re-read the catalog now; raise if it cannot."""


class NoManagers:
    """No Ray head runs: no ShardManager exists, so no write can be in flight."""

    async def freeze(self, server: str, shard: int, lease_s: float) -> dict[str, Any]:
        return {"server": server, "shard": shard, "drain_ms": 0.0}

    async def thaw(self, server: str, shard: int) -> dict[str, Any]:
        return {"server": server, "shard": shard, "held": 0}

    async def refresh(self, server: str) -> None:
        return None


class LocalControls:
    """In-process ShardManager objects (tests, tools), by server name."""

    def __init__(self, managers: Mapping[str, Any]) -> None:
        self.managers = managers

    async def freeze(self, server: str, shard: int, lease_s: float) -> dict[str, Any]:
        if server not in self.managers:
            return await NoManagers().freeze(server, shard, lease_s)
        result: dict[str, Any] = await self.managers[server].freeze(shard, lease_s)
        return result

    async def thaw(self, server: str, shard: int) -> dict[str, Any]:
        if server not in self.managers:
            return await NoManagers().thaw(server, shard)
        result: dict[str, Any] = await self.managers[server].thaw(shard)
        return result

    async def refresh(self, server: str) -> None:
        if server in self.managers:
            await self.managers[server].refresh()


class RayControls:
    """The named ShardManager actors of a running Ray cluster (`ray.init` done). The
    source's actor is created if missing, so that no manager can start later and
    write unheld; the others are refreshed only when they exist."""

    def __init__(self, servers: Mapping[str, ServerSpec]) -> None:
        self.servers = servers

    async def freeze(self, server: str, shard: int, lease_s: float) -> dict[str, Any]:
        result: dict[str, Any] = await manager_handle(self.servers[server]).freeze.remote(
            shard, lease_s
        )
        return result

    async def thaw(self, server: str, shard: int) -> dict[str, Any]:
        result: dict[str, Any] = await manager_handle(self.servers[server]).thaw.remote(shard)
        return result

    async def refresh(self, server: str) -> None:
        import ray

        try:
            actor = ray.get_actor(actor_name(server), namespace=NAMESPACE)
        except ValueError:
            return  # not started: it reads the catalog when it starts
        await actor.refresh.remote()


# -- progress and results --------------------------------------------------------------
@dataclass(frozen=True)
class MoveProgress:
    phase: str  # "copy", "catch-up", "pause", "cleanup"
    done: int
    total: int
    detail: str = ""


@dataclass(frozen=True)
class MoveResult:
    move_id: int
    shard: int
    source: str
    target: str
    rows: dict[str, int]  # "database.table" -> rows moved
    copy_s: float
    pause_ms: float
    held_writes: int
    deleted: int
    total_s: float
    version: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Move:
    id: int
    shard: int
    source: ServerSpec
    target: ServerSpec
    databases: list[str]
    src: dict[str, asyncpg.Connection] = field(default_factory=dict)
    dst: dict[str, asyncpg.Connection] = field(default_factory=dict)
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, database)
    frozen: bool = False

    def name(self, database: str) -> str:
        return f"nf_move_{self.id}_{database}"


# -- the move --------------------------------------------------------------------------
async def move_shard(
    settings: Settings,
    shard: int,
    target: str,
    controls: Controls,
    progress: Callable[[MoveProgress], None] = lambda _: None,
    lease_s: float = DEFAULT_FREEZE_LEASE_S,
    copy_timeout_s: float = 3600.0,
) -> MoveResult:
    """Move logical shard `shard` to server `target` online; raises MoveError."""
    began = time.monotonic()
    address = settings.catalog_address()
    catalog = await _connect(settings.dsn_for(address.host, address.port, CATALOG))
    try:
        move = await _begin(settings, catalog, shard, target)
        try:
            return await _run(settings, catalog, move, controls, progress, lease_s,
                              copy_timeout_s, began)  # fmt: skip
        finally:
            for conn in [*move.src.values(), *move.dst.values()]:
                await _close(conn)
    finally:
        await _close(catalog)


async def _begin(settings: Settings, catalog: asyncpg.Connection, shard: int, target: str) -> _Move:
    rows = await catalog.fetch("SELECT shard_key, shard_server FROM shard_map")
    owner = {r["shard_key"]: r["shard_server"] for r in rows}
    if str(shard) not in owner:
        raise MoveError(f"unknown logical shard {shard} (the map has 0..{len(owner) - 1})")
    servers = {
        r["name"]: ServerSpec(r["name"], r["host"], r["port"])
        for r in await catalog.fetch("SELECT name, host, port FROM shard_servers")
    }
    shard_servers = sorted(n for n in servers if n != CATALOG)
    if target not in shard_servers:
        raise MoveError(f"unknown server {target!r} (shard servers: {', '.join(shard_servers)})")
    source = owner[str(shard)]
    if source == target:
        raise MoveError(f"logical shard {shard} is already on {target}")
    running = await catalog.fetchrow(
        "SELECT id, source, target, state FROM shard_moves"
        " WHERE shard_key = $1 AND state NOT IN ('done', 'failed')",
        str(shard),
    )
    if running is not None:
        raise MoveError(_in_progress(shard, running))
    databases = [db for db in SHARDED_TABLES if _NAME.match(db)]
    for database in databases:
        conn = await _connect(_dsn(settings, servers[target], database))
        try:
            for table in SHARDED_TABLES[database]:
                found = await conn.fetchval(
                    f"SELECT count(*) FROM {table} WHERE {shard_filter(shard)}"
                )
                if found:
                    raise MoveError(
                        f"{target} already holds {found} rows of logical shard {shard} "
                        f"({database}.{table}); remove them before moving the shard there"
                    )
        finally:
            await _close(conn)
    try:
        move_id = await catalog.fetchval(
            "INSERT INTO shard_moves (shard_key, source, target, state)"
            " VALUES ($1, $2, $3, 'copying') RETURNING id",
            str(shard),
            source,
            target,
        )
    except asyncpg.UniqueViolationError:
        running = await catalog.fetchrow(
            "SELECT id, source, target, state FROM shard_moves"
            " WHERE shard_key = $1 AND state NOT IN ('done', 'failed')",
            str(shard),
        )
        raise MoveError(_in_progress(shard, running)) from None
    return _Move(int(move_id), shard, servers[source], servers[target], databases)


def _in_progress(shard: int, row: asyncpg.Record | None) -> str:
    if row is None:
        return f"a move of logical shard {shard} is already in progress"
    return (
        f"a move of logical shard {shard} is already in progress (move {row['id']}: "
        f"{row['source']} -> {row['target']}, {row['state']})"
    )


async def _run(
    settings: Settings,
    catalog: asyncpg.Connection,
    move: _Move,
    controls: Controls,
    progress: Callable[[MoveProgress], None],
    lease_s: float,
    copy_timeout_s: float,
    began: float,
) -> MoveResult:
    pause_began = 0.0
    try:
        for database in move.databases:
            move.src[database] = await _connect(_dsn(settings, move.source, database))
            move.dst[database] = await _connect(_dsn(settings, move.target, database))
        await _subscribe(settings, move)
        rows = await _wait_for_copy(move, progress, copy_timeout_s)
        copy_s = time.monotonic() - began
        await _state(catalog, move, "catching_up")
        await _catch_up(move, progress, copy_timeout_s)

        # -- the pause: writes to this shard are held from here to the thaw ---------------
        await _state(catalog, move, "frozen")
        pause_began = time.monotonic()
        move.frozen = True
        await controls.freeze(move.source.name, move.shard, lease_s)
        progress(MoveProgress("pause", 0, 1, "writes held; catching up"))
        budget = lease_s * 0.6
        await _catch_up(move, progress, budget, quiet=True)
        rows = await _verify(move)
        if time.monotonic() - pause_began > budget:
            raise MoveError(
                f"the pause took longer than {budget:.0f}s (freeze lease {lease_s:.0f}s); "
                "not switching"
            )
        version = await _flip(catalog, move)
    except BaseException as exc:
        reason = _gist(exc)
        undo = await _abort(catalog, move, controls, reason)
        suffix = f" (cleanup: {'; '.join(undo)})" if undo else ""
        raise MoveError(
            f"move of logical shard {move.shard} to {move.target.name} failed: {reason}; "
            f"{move.source.name} still owns it{suffix}"
        ) from (exc if isinstance(exc, Exception) else None)

    # The map points at the target now: the move happened, whatever cleanup says.
    warnings: list[str] = []
    try:
        await controls.refresh(move.source.name)
    except Exception as exc:
        # Held writes stay held until the lease ends, then re-read the catalog.
        warnings.append(f"{move.source.name}'s manager did not refresh ({_gist(exc)})")
    for server in await _servers(catalog):
        if server != move.source.name:
            try:
                await controls.refresh(server)
            except Exception as exc:
                warnings.append(f"{server}'s manager did not refresh ({_gist(exc)})")
    held = 0
    if not warnings or not warnings[0].startswith(move.source.name):
        thawed = await controls.thaw(move.source.name, move.shard)
        held = int(thawed.get("held", 0))
    move.frozen = False
    pause_ms = (time.monotonic() - pause_began) * 1e3
    progress(MoveProgress("pause", 1, 1, f"writes paused {pause_ms:.0f} ms"))

    deleted = 0
    try:
        deleted = await _cleanup(move, progress)
    except Exception as exc:
        warnings.append(
            f"cleanup incomplete ({_gist(exc)}); leftover rows of logical shard "
            f"{move.shard} on {move.source.name} are no longer routed to"
        )
    detail = (
        f"rows {sum(rows.values())}, copy {copy_s:.1f}s, pause {pause_ms:.0f} ms, "
        f"held writes {held}, deleted {deleted}" + (f"; {'; '.join(warnings)}" if warnings else "")
    )
    await catalog.execute(
        "UPDATE shard_moves SET state = 'done', finished_at = now(), detail = $2 WHERE id = $1",
        move.id,
        detail,
    )
    return MoveResult(
        move_id=move.id,
        shard=move.shard,
        source=move.source.name,
        target=move.target.name,
        rows=rows,
        copy_s=copy_s,
        pause_ms=pause_ms,
        held_writes=held,
        deleted=deleted,
        total_s=time.monotonic() - began,
        version=version,
        warnings=warnings,
    )


async def _subscribe(settings: Settings, move: _Move) -> None:
    sync = "remote_write" if settings.synchronous_replicas else "local"
    for database in move.databases:
        name = move.name(database)
        where = shard_filter(move.shard)
        tables = ", ".join(f"{t} WHERE {where}" for t in SHARDED_TABLES[database])
        await move.src[database].execute(f"CREATE PUBLICATION {name} FOR TABLE {tables}")
        move.created.append(("publication", database))
        conninfo = _conninfo(settings, move.source, database)
        # Creates the slot `name` on the source; apply runs as replica (no FK checks).
        await move.dst[database].execute(
            f"CREATE SUBSCRIPTION {name} CONNECTION {_literal(conninfo)} PUBLICATION {name}"
            f" WITH (copy_data = true, synchronous_commit = '{sync}')"
        )
        move.created.append(("subscription", database))


async def _wait_for_copy(
    move: _Move, progress: Callable[[MoveProgress], None], timeout_s: float
) -> dict[str, int]:
    """Wait until every table is synchronised ('r'); report rows copied / to copy."""
    total = 0
    for database in move.databases:
        for table in SHARDED_TABLES[database]:
            total += int(
                await move.src[database].fetchval(
                    f"SELECT count(*) FROM {table} WHERE {shard_filter(move.shard)}"
                )
            )
    done: dict[str, int] = {}  # tables copied -> rows of the shard on the target
    deadline = time.monotonic() + timeout_s
    while True:
        copying = 0
        ready = True
        for database in move.databases:
            dst = move.dst[database]
            states = {
                r["relname"]: r["srsubstate"]
                for r in await dst.fetch(
                    "SELECT c.relname, r.srsubstate::text AS srsubstate FROM pg_subscription_rel r"
                    " JOIN pg_subscription s ON s.oid = r.srsubid"
                    " JOIN pg_class c ON c.oid = r.srrelid WHERE s.subname = $1",
                    move.name(database),
                )
            }
            errors = await dst.fetchval(
                "SELECT coalesce(sum(apply_error_count + sync_error_count), 0)"
                " FROM pg_stat_subscription_stats WHERE subname = $1",
                move.name(database),
            )
            if errors:
                raise MoveError(
                    f"logical replication into {move.target.name}/{database} reports errors "
                    "(see that server's postgres.log)"
                )
            for table in SHARDED_TABLES[database]:
                key = f"{database}.{table}"
                state = states.get(table)
                if state in ("r", "s"):
                    if key not in done:
                        done[key] = int(
                            await dst.fetchval(
                                f"SELECT count(*) FROM {table} WHERE {shard_filter(move.shard)}"
                            )
                        )
                    if state != "r":
                        ready = False
                else:
                    ready = False
            copying += int(
                await dst.fetchval(
                    "SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy"
                    " WHERE datname = current_database()"
                )
            )
        copied = sum(done.values()) + copying
        progress(MoveProgress("copy", copied, max(total, copied)))
        if ready:
            return done
        if time.monotonic() > deadline:
            raise MoveError(f"the initial copy did not finish within {timeout_s:.0f}s")
        await asyncio.sleep(_POLL_S * 4)


async def _catch_up(
    move: _Move, progress: Callable[[MoveProgress], None], timeout_s: float, quiet: bool = False
) -> None:
    """Wait until every subscription has confirmed the source's WAL position of now."""
    src = move.src[move.databases[0]]
    goal = await src.fetchval("SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + timeout_s
    first: int | None = None
    while True:
        behind = 0
        for database in move.databases:
            lag = await move.src[database].fetchval(
                "SELECT greatest(pg_wal_lsn_diff($1::pg_lsn, confirmed_flush_lsn), 0)::bigint"
                " FROM pg_replication_slots WHERE slot_name = $2",
                goal,
                move.name(database),
            )
            if lag is None:
                raise MoveError(f"replication slot {move.name(database)} vanished on the source")
            behind += int(lag)
        if first is None:
            first = max(behind, 1)
        if not quiet:
            progress(MoveProgress("catch-up", first - min(behind, first), first, f"{behind} B"))
        if behind == 0:
            return
        if time.monotonic() > deadline:
            raise MoveError(f"the subscription did not catch up within {timeout_s:.0f}s")
        await asyncio.sleep(_POLL_S)


async def _checksum(conn: asyncpg.Connection, table: str, shard: int) -> tuple[int, str]:
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(md5(string_agg(md5(t::text), '' ORDER BY t.id)), '')"
        f" AS sum FROM {table} t WHERE {shard_filter(shard, 't.id')}"
    )
    return int(row["n"]), str(row["sum"])


async def _verify(move: _Move) -> dict[str, int]:
    """Per table: the shard's row count and checksum match on source and target."""
    rows = {}
    for database in move.databases:
        for table in SHARDED_TABLES[database]:
            source, target = await asyncio.gather(
                _checksum(move.src[database], table, move.shard),
                _checksum(move.dst[database], table, move.shard),
            )
            if source != target:
                same = "match" if source[1] == target[1] else "differ"
                raise MoveError(
                    f"verification failed for {database}.{table}: source {source[0]} rows, "
                    f"target {target[0]} rows, checksums {same}"
                )
            rows[f"{database}.{table}"] = source[0]
    return rows


async def _flip(catalog: asyncpg.Connection, move: _Move) -> int:
    """One catalog transaction: the shard is the target's, one version on."""
    async with catalog.transaction():
        state = await catalog.fetchval(
            "SELECT state FROM shard_moves WHERE id = $1 FOR UPDATE", move.id
        )
        if state != "frozen":
            raise MoveError(f"move {move.id} is {state!r} in the catalog, not 'frozen'")
        version = await catalog.fetchval(
            "UPDATE shard_map SET shard_server = $3, version = version + 1, updated_at = now()"
            " WHERE shard_key = $1 AND shard_server = $2 RETURNING version",
            str(move.shard),
            move.source.name,
            move.target.name,
        )
        if version is None:
            raise MoveError(f"logical shard {move.shard} is no longer on {move.source.name}")
        await catalog.execute("UPDATE shard_moves SET state = 'switched' WHERE id = $1", move.id)
    return int(version)


async def _cleanup(move: _Move, progress: Callable[[MoveProgress], None]) -> int:
    for database in move.databases:
        await _drop_replication(move, database)
    total = 0
    ids: list[tuple[str, str, list[int]]] = []
    for database in move.databases:
        for table in reversed(SHARDED_TABLES[database]):
            found = await move.src[database].fetch(
                f"SELECT id FROM {table} WHERE {shard_filter(move.shard)}"
            )
            ids.append((database, table, [r["id"] for r in found]))
            total += len(found)
    deleted = 0
    progress(MoveProgress("cleanup", 0, total))
    for database, table, found in ids:
        deleted += await _delete(move.src[database], table, found)
        progress(MoveProgress("cleanup", deleted, total))
    return deleted


async def _delete(conn: asyncpg.Connection, table: str, ids: Sequence[int]) -> int:
    deleted = 0
    for at in range(0, len(ids), _DELETE_BATCH):
        batch = list(ids[at : at + _DELETE_BATCH])
        status = await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::bigint[])", batch)
        deleted += int(status.split()[-1])
    return deleted


async def _drop_replication(move: _Move, database: str) -> None:
    name = move.name(database)
    if ("subscription", database) in move.created:
        dst = move.dst[database]
        try:
            await dst.execute(f"DROP SUBSCRIPTION IF EXISTS {name}")
        except asyncpg.PostgresError:
            # The source cannot be reached to drop the slot: detach, drop, drop the
            # slot on the source ourselves below.
            await dst.execute(f"ALTER SUBSCRIPTION {name} DISABLE")
            await dst.execute(f"ALTER SUBSCRIPTION {name} SET (slot_name = NONE)")
            await dst.execute(f"DROP SUBSCRIPTION {name}")
        move.created.remove(("subscription", database))
    src = move.src.get(database)
    if src is not None:
        for _ in range(50):  # the walsender may take a moment to go
            dropped = await src.fetchval(
                "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots"
                " WHERE slot_name = $1 AND NOT active",
                name,
            )
            busy = await src.fetchval(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", name
            )
            if dropped or not busy:
                break
            await asyncio.sleep(0.1)
        if ("publication", database) in move.created:
            await src.execute(f"DROP PUBLICATION IF EXISTS {name}")
            move.created.remove(("publication", database))


async def _abort(
    catalog: asyncpg.Connection, move: _Move, controls: Controls, reason: str
) -> list[str]:
    """Undo a move that has not switched; returns what could not be undone."""
    problems: list[str] = []
    if move.frozen:
        try:
            await controls.thaw(move.source.name, move.shard)
            move.frozen = False
        except Exception as exc:
            problems.append(f"thaw failed ({_gist(exc)}); the freeze lease ends it")
    for database in move.databases:
        try:
            await _drop_replication(move, database)
        except Exception as exc:
            problems.append(f"{database}: replication objects left ({_gist(exc)})")
        dst = move.dst.get(database)
        if dst is None:
            continue
        try:
            for table in reversed(SHARDED_TABLES[database]):
                await dst.execute(f"DELETE FROM {table} WHERE {shard_filter(move.shard)}")
        except Exception as exc:
            problems.append(f"{database}: copied rows left on {move.target.name} ({_gist(exc)})")
    detail = reason + (f"; {'; '.join(problems)}" if problems else "")
    try:
        await catalog.execute(
            "UPDATE shard_moves SET state = 'failed', finished_at = now(), detail = $2"
            " WHERE id = $1",
            move.id,
            detail,
        )
    except Exception as exc:
        problems.append(f"not recorded as failed ({_gist(exc)})")
    return problems


async def _state(catalog: asyncpg.Connection, move: _Move, state: str) -> None:
    await catalog.execute("UPDATE shard_moves SET state = $2 WHERE id = $1", move.id, state)


async def _servers(catalog: asyncpg.Connection) -> list[str]:
    rows = await catalog.fetch("SELECT name FROM shard_servers WHERE name <> $1", CATALOG)
    return sorted(r["name"] for r in rows)


# -- rebalancing -----------------------------------------------------------------------
def plan_rebalance(owner: Mapping[int, str], servers: Sequence[str]) -> list[tuple[int, str, str]]:
    """Moves (shard, from, to) after which every server holds within one logical
    shard of every other; few moves, always from a fullest server to an emptiest."""
    current = dict(owner)
    names = sorted({*servers, *current.values()})
    moves: list[tuple[int, str, str]] = []
    while True:
        held = {name: sorted(s for s, o in current.items() if o == name) for name in names}
        fullest = max(names, key=lambda n: (len(held[n]), n))
        emptiest = min(names, key=lambda n: (len(held[n]), n))
        if len(held[fullest]) - len(held[emptiest]) <= 1:
            return moves
        shard = held[fullest][-1]
        current[shard] = emptiest
        moves.append((shard, fullest, emptiest))


# -- helpers ---------------------------------------------------------------------------
def _dsn(settings: Settings, server: ServerSpec, database: str) -> str:
    return settings.dsn_for(server.host, server.port, database)


def _conninfo(settings: Settings, server: ServerSpec, database: str) -> str:
    """A libpq key/value connection string (the source, as the target connects to it)."""
    values = {
        "host": server.host,
        "port": str(server.port),
        "dbname": database,
        "user": settings.pg_user,
        "password": settings.pg_password.get_secret_value(),
        "application_name": f"nextflow-move-{database}",
    }
    quoted = {k: "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for k, v in values.items()}
    return " ".join(f"{k}={v}" for k, v in quoted.items())


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn, timeout=10, command_timeout=600, server_settings=_SESSION
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MoveError(f"cannot connect to PostgreSQL: {_gist(exc)}") from None
    return conn


async def _close(conn: asyncpg.Connection | None) -> None:
    if conn is not None and not conn.is_closed():
        try:
            await asyncio.wait_for(conn.close(), 5)
        except Exception:
            conn.terminate()


def _gist(exc: BaseException) -> str:
    if isinstance(exc, MoveError):
        return str(exc)
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "interrupted"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__
