"""`ShardManager`: one Ray actor per PostgreSQL server, the only owner of its pools.

However many Serve replicas run, each node of a server (its primary and each
streaming replica) sees at most `pool_max_size` connections per database from its
manager, plus one monitoring connection. A service hands the manager a repo
function; the manager runs it inside one transaction and returns what it returns.

Reads may go to a replica: only one that is streaming, at most `max_replica_lag_s`
behind, and past the caller's last write (read-your-writes, `shards.consistency`).
Anything else reads from the primary. The manager learns its server's addresses
from the catalog (`shard_servers`, `shard_replicas`), at start, every few seconds,
and at once when told to `refresh()` (after a failover). If the actor dies, Ray
restarts it (`max_restarts=-1`) and the pools are rebuilt on first use.

Ownership (online shard moves, `shards.moves`): the manager also learns from the
catalog which logical shards its server owns and each one's map version. A call
that names its logical shards (`route`: shard -> the map version the caller routed
by) is refused, before anything runs, with `ShardMoved` when the server no longer
owns one of them and with `StaleShardMap` when the caller's version is older; the
caller reloads its map and calls again. `freeze(shard)` holds new writes to one
logical shard and waits for those in flight; `thaw(shard)` releases them, and they
then see the map the manager holds by then (after a move: `ShardMoved`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import ray
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, StatusCode

from cluster import heap, logs, tracing
from cluster.batching import Outcome, run_each
from cluster.settings import get_settings
from shards import consistency, metrics
from shards.connections import is_single_statement
from shards.errors import DatabaseError, ShardMoved, ShardUnavailable, StaleShardMap
from shards.routing import ServerSpec

NAMESPACE = "nextflow"
log = logging.getLogger("nextflow.shards")
# Errors that say the server, not the statement, failed: a 503 with Retry-After, the
# client's (keyed) retry decides. 57P02: the server restarts after a crash (or lost
# its postmaster); 25006: the node taken for the primary is a standby (a failover is
# under way and the catalog is about to say so); class 08: the link broke.
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.PostgresConnectionError,
    # "cannot switch to state 12; another operation is in progress": a connection whose
    # server died under it (a failover); it is dropped (`_execute`), the client retries.
    asyncpg.InternalClientError,
)
_LSN = "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAY = "(pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
_RECEIVED = "(pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint"
_REFRESH_EVERY_S = 5.0
DEFAULT_FREEZE_LEASE_S = 30.0


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: json/jsonb as Python objects (via orjson), in PostgreSQL's
    binary format, which `COPY` needs (bulk imports COPY history rows)."""
    await conn.set_type_codec(
        "json", encoder=orjson.dumps, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb, decoder=_from_jsonb, schema="pg_catalog", format="binary"
    )


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's reset: nothing. asyncpg's default sends `pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL` on every release, a round trip that more than doubled
    the client's CPU of a one-row read (measured: 424 -> 195 us a call, 672 -> 288 us
    wall). Every call here runs in a transaction, which leaves no cursor behind, and
    functions keep no session state (`shards.connections`); a connection released
    inside a transaction is still rolled back by the pool."""


def _jsonb(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)  # jsonb's binary form: a version byte, then text


def _from_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


@dataclass(frozen=True, slots=True)
class ShardCall:
    """One `ShardManager.run` inside a batch: its positional arguments (database, fn,
    args, kwargs, readonly[, min_lsn]) and its keyword-only ones."""

    args: tuple[Any, ...]
    route: Mapping[int, int] | None = None
    trace: Mapping[str, str] | None = None


def actor_name(server: str) -> str:
    return f"shard-manager:{server}"


@dataclass
class _Replica:
    name: str
    host: str
    port: int
    replay_lsn: int = 0
    healthy: bool = False
    lag_s: float = math.inf
    monitor: asyncpg.Connection | None = None
    # Within the bound when the primary was last seen (set as it goes away).
    current_at_outage: bool = False


@dataclass
class _Freeze:
    """Writes to one logical shard are held until `thawed` is set or the lease ends
    (a mover that died must not block a shard for ever)."""

    thawed: asyncio.Event
    deadline: float
    frozen_at: float
    held: int = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class _Topology:
    primary: tuple[str, int]
    replicas: dict[str, _Replica] = field(default_factory=dict)


class ShardManager:
    """Runs repo functions in transactions on one server's databases."""

    def __init__(self, server: ServerSpec) -> None:
        logs.configure()
        self._name = server.name
        self._settings = get_settings()
        self._topology = _Topology(primary=(server.host, server.port))
        self._pools: dict[tuple[str, int, str], asyncpg.Pool] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self._monitor_task: asyncio.Task[None] | None = None
        self._primary_monitor: asyncpg.Connection | None = None
        # Since when the monitor's probe has not reached the primary (None: it does).
        # Meanwhile writes fail at once instead of each waiting on the network.
        self._primary_down_since: float | None = None
        # (monotonic time, primary LSN) samples, to turn a replay LSN into seconds of lag.
        self._history: deque[tuple[float, int]] = deque()
        self._round_robin = itertools.count()
        # Logical shards this server owns -> map version (None: not known yet, so
        # routes are not checked), from the catalog's shard_map.
        self._owned: dict[int, int] | None = None
        # Shards gained at runtime (moved in): replica reads of them need the
        # replica past the primary's LSN at that moment (None: not measured yet).
        self._floors: dict[int, int | None] = {}
        self._routes_loaded = 0  # bumped by every successful catalog read
        self._route_lock = asyncio.Lock()
        self._frozen: dict[int, _Freeze] = {}
        self._in_flight: dict[int, int] = {}
        self._write_done = asyncio.Condition()
        # Writes committed here per database, for the outbox relay's long poll
        # (`next_commits`); the epoch tells a restarted manager's counts apart.
        self._epoch = secrets.token_hex(8)
        self._commits: dict[str, int] = {}
        self._commit_seen = asyncio.Event()
        heap.settle()

    # -- topology ----------------------------------------------------------------------
    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._lock:
            if not self._started:
                await self._load_topology()
                self._monitor_task = asyncio.get_running_loop().create_task(self._monitor())
                self._started = True

    async def refresh(self) -> dict[str, Any]:
        """Re-read this server's primary and replicas from the catalog now."""
        await self._ensure_started()
        await self._load_topology()
        return self.stats()

    async def _load_topology(self) -> None:
        s = self._settings
        try:
            catalog = s.catalog_address()
            conn = await asyncpg.connect(
                s.dsn_for(catalog.host, catalog.port, "catalog"), timeout=5, command_timeout=5
            )
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("%s: catalog unreachable, keeping topology: %r", self._name, exc)
            return
        try:
            primary = await conn.fetchrow(
                "SELECT host, port FROM shard_servers WHERE name = $1", self._name
            )
            rows = await conn.fetch(
                "SELECT name, host, port FROM shard_replicas WHERE server = $1 ORDER BY name",
                self._name,
            )
            owned_rows = await conn.fetch(
                "SELECT shard_key, version FROM shard_map WHERE shard_server = $1", self._name
            )
        except asyncpg.PostgresError as exc:  # e.g. before migrations ran
            log.warning("%s: cannot read topology: %r", self._name, exc)
            return
        finally:
            await conn.close()
        if primary is not None:
            address = (primary["host"], primary["port"])
            if address != self._topology.primary:
                log.warning("%s: primary moved to %s:%s", self._name, *address)
                old = self._topology.primary
                self._topology.primary = address
                await self._drop_pools(old)
                await _close(self._primary_monitor)
                self._primary_monitor = None
                self._primary_down_since = None
                self._history.clear()
        wanted = {r["name"]: (r["host"], r["port"]) for r in rows}
        for name, replica in list(self._topology.replicas.items()):
            if wanted.get(name) != (replica.host, replica.port):
                del self._topology.replicas[name]
                await self._drop_pools((replica.host, replica.port))
                await _close(replica.monitor)
        for name, (host, port) in wanted.items():
            if name not in self._topology.replicas and (host, port) != self._topology.primary:
                self._topology.replicas[name] = _Replica(name, host, port)
        await self._set_owned({int(r["shard_key"]): int(r["version"]) for r in owned_rows})

    async def _set_owned(self, owned: dict[int, int]) -> None:
        if self._owned is not None:
            for shard in owned.keys() - self._owned.keys():
                self._floors[shard] = None
        for shard in [s for s in self._floors if s not in owned]:
            del self._floors[shard]
        missing = [s for s, floor in self._floors.items() if floor is None]
        if missing:
            # Measured before the new ownership shows: rows a move brought here are on
            # the primary by now, maybe not yet on a replica.
            lsn = await self._primary_lsn()
            for shard in missing:
                self._floors[shard] = lsn
        self._owned = owned
        self._routes_loaded += 1

    async def _primary_lsn(self) -> int | None:
        try:
            conn = await self._connect(*self._topology.primary, "postgres")
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError):
            return None
        try:
            return int(await conn.fetchval(f"SELECT {_LSN}"))
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError):
            return None
        finally:
            await _close(conn)

    async def _drop_pools(self, node: tuple[str, int]) -> None:
        for key in [k for k in self._pools if k[:2] == node]:
            pool = self._pools.pop(key)
            pool.terminate()

    # -- replica health ----------------------------------------------------------------
    async def _monitor(self) -> None:
        last_refresh = time.monotonic()
        while True:
            try:
                await self._poll()
                self._publish()
                if time.monotonic() - last_refresh > _REFRESH_EVERY_S:
                    last_refresh = time.monotonic()
                    await self._load_topology()
            except Exception as exc:  # the monitor must outlive any one bad poll
                log.warning("%s: replica monitor: %r", self._name, exc)
            await asyncio.sleep(self._settings.replica_poll_interval_s)

    async def _poll(self) -> None:
        now = time.monotonic()
        primary_lsn = await self._probe_primary()
        if primary_lsn is not None:
            self._history.append((now, primary_lsn))
            if self._primary_down_since is not None:
                log.warning("%s: primary reachable again", self._name)
                self._primary_down_since = None
        elif self._primary_down_since is None:
            # Unreachable (refused, reset, or silent past the probe's 5 s timeout):
            # connections to it are dropped, so that queries waiting on a dead link
            # fail now rather than at their command timeout.
            log.warning("%s: primary %s:%s unreachable", self._name, *self._topology.primary)
            self._primary_down_since = now
            for replica in self._topology.replicas.values():
                replica.current_at_outage = replica.healthy
            await self._drop_pools(self._topology.primary)
        if primary_lsn is not None:
            # While the primary is away its last samples stay: they are what the
            # replicas' positions are still judged by.
            keep = self._settings.max_replica_lag_s * 2 + 1
            while self._history and now - self._history[0][0] > keep:
                self._history.popleft()
        for replica in list(self._topology.replicas.values()):
            await self._poll_replica(replica, now)

    async def _probe_primary(self) -> int | None:
        """The primary's current WAL position, or None when it cannot be reached. A
        probe that fails on an old monitor connection is tried once more on a new
        one (the old one may have been closed by the server, not the network)."""
        for _ in range(2):
            monitor = self._primary_monitor
            fresh = monitor is None or monitor.is_closed()
            try:
                if monitor is None or monitor.is_closed():
                    monitor = await self._connect(*self._topology.primary, "postgres")
                    self._primary_monitor = monitor
                return int(await monitor.fetchval(f"SELECT {_LSN}"))
            except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                await _close(self._primary_monitor)
                self._primary_monitor = None
                if fresh or isinstance(exc, TimeoutError):  # silent: no second wait
                    return None
        return None

    async def _poll_replica(self, replica: _Replica, now: float) -> None:
        try:
            if replica.monitor is None or replica.monitor.is_closed():
                replica.monitor = await self._connect(replica.host, replica.port, "postgres")
            row = await replica.monitor.fetchrow(
                f"SELECT pg_is_in_recovery() AS r, {_REPLAY} AS l, {_RECEIVED} AS got"
            )
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError):
            await _close(replica.monitor)
            replica.monitor, replica.healthy, replica.lag_s = None, False, math.inf
            return
        if not row["r"] or row["l"] is None:
            # Promoted behind our back, or not streaming: it no longer follows the primary.
            replica.healthy, replica.lag_s = False, math.inf
            return
        replica.replay_lsn = int(row["l"])
        replica.lag_s = self._lag_seconds(replica.replay_lsn, now)
        replica.healthy = replica.lag_s <= self._settings.max_replica_lag_s
        if self._primary_down_since is not None and not replica.healthy:
            # The primary is away, so nothing commits through us: a replica that was
            # within the bound when it went away, and has replayed all the WAL it
            # received, holds every write that can still be read anywhere. Reads
            # without a position go on from it for as long as the primary is away
            # (stale by the time since then, `replica_lag` says); a read after a
            # caller's own write still needs that write replayed (`min_lsn`).
            received = row["got"]
            drained = received is None or replica.replay_lsn >= int(received)
            replica.healthy = replica.current_at_outage and drained

    def _publish(self) -> None:
        """Gauges for Prometheus, once per poll (`shards.metrics`)."""
        server = self._name
        metrics.manager_up.set(0 if self._primary_monitor is None else 1, tags={"server": server})
        for r in self._topology.replicas.values():
            tags = {"server": server, "replica": r.name}
            metrics.replica_lag.set(r.lag_s, tags=tags)
            metrics.replica_usable.set(1 if r.healthy else 0, tags=tags)
        for (host, port, db), pool in self._pools.items():
            tags = {"server": server, "node": f"{host}:{port}", "database": db}
            size = pool.get_size()
            metrics.pool_connections.set(size, tags={**tags, "state": "open"})
            in_use = size - pool.get_idle_size()
            metrics.pool_connections.set(in_use, tags={**tags, "state": "in_use"})
            metrics.pool_connections.set(pool.get_max_size(), tags={**tags, "state": "max"})

    def _lag_seconds(self, replay_lsn: int, now: float) -> float:
        """How long ago the primary wrote the oldest WAL the replica has not replayed."""
        if not self._history:
            return math.inf
        oldest_missing = None
        for sampled_at, primary_lsn in reversed(self._history):
            if primary_lsn <= replay_lsn:
                break
            oldest_missing = sampled_at
        if oldest_missing is None:
            return 0.0
        return now - oldest_missing if oldest_missing != self._history[0][0] else math.inf

    # -- ownership, freezes --------------------------------------------------------------
    async def _refresh_routes(self) -> None:
        """Re-read the catalog, once for however many callers ask at the same time."""
        seen = self._routes_loaded
        async with self._route_lock:
            if self._routes_loaded == seen:
                await self._load_topology()

    async def _check_route(self, route: Mapping[int, int]) -> None:
        """Raise ShardMoved / StaleShardMap unless this server owns every shard of the
        route at the caller's version (a newer caller makes us re-read the catalog)."""
        if self._owned is None:
            return  # the catalog has not answered yet: nothing to check against
        owned = self._owned
        if any(owned.get(s) is None or have > owned[s] for s, have in route.items()):
            await self._refresh_routes()
            owned = self._owned or {}
        for shard, have in route.items():
            current = owned.get(shard)
            if current is None:
                raise ShardMoved(shard, self._name, have)
            if have < current:
                raise StaleShardMap(shard, self._name, have, current)

    async def _admit_write(self, route: Mapping[int, int]) -> list[int]:
        """Wait while a shard of the route is frozen, then count the write in flight."""
        while True:
            await self._check_route(route)
            freeze = next((self._frozen[s] for s in route if s in self._frozen), None)
            if freeze is None:
                shards = list(route)
                for shard in shards:
                    self._in_flight[shard] = self._in_flight.get(shard, 0) + 1
                return shards
            freeze.held += 1
            try:
                await asyncio.wait_for(freeze.thawed.wait(), max(freeze.remaining(), 0))
            except TimeoutError:
                self._expire(freeze)
                await self._refresh_routes()
            finally:
                freeze.held -= 1

    def _expire(self, freeze: _Freeze) -> None:
        for shard, held in list(self._frozen.items()):
            if held is freeze:
                log.warning("%s: freeze of logical shard %s ended by its lease", self._name, shard)
                del self._frozen[shard]
        freeze.thawed.set()

    async def _release(self, shards: list[int]) -> None:
        for shard in shards:
            left = self._in_flight.get(shard, 0) - 1
            if left > 0:
                self._in_flight[shard] = left
            else:
                self._in_flight.pop(shard, None)
        async with self._write_done:
            self._write_done.notify_all()

    async def freeze(self, shard: int, lease_s: float = DEFAULT_FREEZE_LEASE_S) -> dict[str, Any]:
        """Hold new writes to `shard` and return once the writes in flight on it have
        finished. The hold ends with `thaw(shard)`, or by itself after `lease_s`."""
        await self._ensure_started()
        began = time.monotonic()
        freeze = self._frozen.get(shard)
        if freeze is None:
            freeze = _Freeze(asyncio.Event(), began + lease_s, began)
            self._frozen[shard] = freeze
        else:
            freeze.deadline = began + lease_s
        try:
            async with self._write_done:
                await asyncio.wait_for(
                    self._write_done.wait_for(lambda: not self._in_flight.get(shard)),
                    timeout=max(lease_s, 0.001),
                )
        except TimeoutError:
            await self.thaw(shard)
            raise ShardUnavailable(
                self._name, f"writes in flight on logical shard {shard} did not finish"
            ) from None
        return {
            "server": self._name,
            "shard": shard,
            "drain_ms": (time.monotonic() - began) * 1e3,
        }

    async def thaw(self, shard: int) -> dict[str, Any]:
        """Release the writes held for `shard` (they re-check the route first)."""
        freeze = self._frozen.pop(shard, None)
        if freeze is None:
            return {"server": self._name, "shard": shard, "held": 0, "frozen_ms": 0.0}
        freeze.thawed.set()
        return {
            "server": self._name,
            "shard": shard,
            "held": freeze.held,
            "frozen_ms": (time.monotonic() - freeze.frozen_at) * 1e3,
        }

    def _pick_replica(self, min_lsn: int | None) -> _Replica | None:
        usable = [
            r
            for r in self._topology.replicas.values()
            if r.healthy and (min_lsn is None or r.replay_lsn >= min_lsn)
        ]
        if not usable:
            return None
        return usable[next(self._round_robin) % len(usable)]

    # -- running -----------------------------------------------------------------------
    async def _connect(self, host: str, port: int, database: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._settings.dsn_for(host, port, database),
            timeout=5,
            command_timeout=5,
            server_settings={"application_name": f"nextflow-{self._name}-monitor"},
        )

    async def _pool(self, host: str, port: int, database: str) -> asyncpg.Pool:
        key = (host, port, database)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        async with self._lock:
            if key not in self._pools:
                s = self._settings
                self._pools[key] = await asyncpg.create_pool(
                    s.dsn_for(host, port, database),
                    min_size=s.pool_min_size,
                    max_size=s.pool_max_size,
                    timeout=5,  # to connect: a silent server is not waited on for a minute
                    command_timeout=30,
                    init=init_connection,
                    reset=keep_session,
                    server_settings={"application_name": f"nextflow-{self._name}"},
                )
            return self._pools[key]

    async def run(
        self,
        database: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        readonly: bool,
        min_lsn: int | None = None,
        *,
        route: Mapping[int, int] | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> tuple[Any, int | None]:
        """Run `fn(conn, *args, **kwargs)` in one transaction. Returns its result and,
        for a write, the LSN of the commit (None for a read).

        `route`: the logical shards the call touches -> the map version the caller
        routed by; when given, a stale route raises ShardMoved/StaleShardMap before
        anything runs, and a write waits while one of its shards is frozen.
        `trace`: the caller's trace context; the call's spans join that trace."""
        if not trace or not tracing.enabled():
            return await self._run_routed(database, fn, args, kwargs, readonly, min_lsn, route)
        with tracing.tracer().start_as_current_span(
            f"ShardManager.run {database}",
            context=tracing.context_from(trace),
            kind=SpanKind.SERVER,
            attributes={
                "nextflow.server": self._name,
                "db.namespace": database,
                "nextflow.readonly": readonly,
                "nextflow.function": getattr(fn, "__qualname__", repr(fn)),
                "nextflow.logical_shards": sorted(route or ()),
            },
        ):
            return await self._run_routed(database, fn, args, kwargs, readonly, min_lsn, route)

    async def run_batch(self, calls: list[ShardCall]) -> list[Outcome]:
        """Many `run`s in one actor call (`shards.client` coalesces its callers'
        concurrent calls): each runs as if called alone, concurrently with the others,
        and answers with its own value or error, in order."""
        return await run_each(self.run(*c.args, route=c.route, trace=c.trace) for c in calls)

    async def _run_routed(
        self,
        database: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        readonly: bool,
        min_lsn: int | None,
        route: Mapping[int, int] | None,
    ) -> tuple[Any, int | None]:
        await self._ensure_started()
        if not route:
            return await self._run(database, fn, args, kwargs, readonly, min_lsn)
        if readonly:
            await self._check_route(route)
            floors = [self._floors.get(s) for s in route if s in self._floors]
            if floors:
                if None in floors:
                    min_lsn = consistency.PRIMARY_ONLY  # not measured: primary only
                else:
                    min_lsn = max([min_lsn or 0, *(f for f in floors if f is not None)])
            return await self._run(database, fn, args, kwargs, readonly, min_lsn)
        admitted = await self._admit_write(route)
        try:
            return await self._run(database, fn, args, kwargs, readonly, min_lsn)
        finally:
            await self._release(admitted)

    async def _run(
        self,
        database: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        readonly: bool,
        min_lsn: int | None,
    ) -> tuple[Any, int | None]:
        if readonly:
            replica = self._pick_replica(min_lsn)
            if replica is not None:
                try:
                    node = (replica.host, replica.port)
                    return await self._execute(node, database, fn, args, kwargs, True)
                except ShardUnavailable:
                    replica.healthy = False
                except DatabaseError as exc:
                    if exc.sqlstate != "40001":  # cancelled by replay: use the primary
                        raise
        try:
            if self._primary_down_since is not None:
                raise ShardUnavailable(self._name, "primary unreachable")
            return await self._execute(
                self._topology.primary, database, fn, args, kwargs, readonly, with_lsn=not readonly
            )
        except ShardUnavailable:
            if not readonly or min_lsn is None:
                raise
            # The primary is down and our view of the replicas' replay is a poll old:
            # a replica that has in fact replayed the caller's writes can still answer.
            return await self._read_caught_up_replica(database, fn, args, kwargs, min_lsn)

    async def _read_caught_up_replica(
        self,
        database: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        min_lsn: int,
    ) -> tuple[Any, int | None]:
        for replica in self._topology.replicas.values():
            if not replica.healthy:
                continue
            try:
                node = (replica.host, replica.port)
                guarded = (fn, min_lsn, *args)
                return await self._execute(node, database, _if_replayed, guarded, kwargs, True)
            except (ShardUnavailable, _Behind):
                continue
        raise ShardUnavailable(self._name, "primary down and no replica has the caller's writes")

    async def _execute(
        self,
        node: tuple[str, int],
        database: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        readonly: bool,
        with_lsn: bool = False,
    ) -> tuple[Any, int | None]:
        tags = {
            "server": self._name,
            "database": database,
            "role": "primary" if node == self._topology.primary else "replica",
        }
        began = time.perf_counter()
        traced = tracing.enabled() and otel_trace.get_current_span().is_recording()
        try:
            pool = await self._pool(*node, database)
            async with pool.acquire(timeout=10) as conn:
                try:
                    with _transaction_span(traced, conn, node, database, tags["role"]):
                        if readonly and is_single_statement(fn):
                            value = await fn(conn, *args, **kwargs)  # its own snapshot
                        else:
                            async with conn.transaction(readonly=readonly):
                                value = await fn(conn, *args, **kwargs)
                    lsn = int(await conn.fetchval(f"SELECT {_LSN}")) if with_lsn else None
                except asyncpg.InternalClientError:
                    # The driver lost track of the connection's protocol state (seen when
                    # its server dies mid-statement, during a failover): never reuse it.
                    conn.terminate()
                    raise
            if not readonly:
                self._note_commit(database)
            # After commit: that position is at or past our commit record.
            took_ms = (time.perf_counter() - began) * 1e3
            metrics.queries.observe(took_ms, tags={**tags, "kind": "read" if readonly else "write"})
            return value, lsn
        except asyncpg.PostgresError as exc:
            if isinstance(exc, _CONNECTION_ERRORS):
                metrics.query_errors.inc(tags={**tags, "error": "unavailable"})
                raise ShardUnavailable(self._name, type(exc).__name__) from None
            metrics.query_errors.inc(tags={**tags, "error": exc.sqlstate or "XX000"})
            raise DatabaseError(
                exc.sqlstate or "XX000",
                str(exc),
                getattr(exc, "constraint_name", None),
                getattr(exc, "column_name", None),
            ) from None
        except _CONNECTION_ERRORS as exc:
            metrics.query_errors.inc(tags={**tags, "error": "unavailable"})
            raise ShardUnavailable(self._name, type(exc).__name__) from None

    def _note_commit(self, database: str) -> None:
        self._commits[database] = self._commits.get(database, 0) + 1
        self._commit_seen.set()
        self._commit_seen = asyncio.Event()  # the next wait waits for the next commit

    async def next_commits(
        self, epoch: str | None, seen: Mapping[str, int], timeout_s: float
    ) -> tuple[str, dict[str, int]]:
        """A long poll: this manager's epoch and per-database commit counts, as soon as
        they differ from what the caller saw (`epoch`, `seen`), or after `timeout_s`
        if nothing commits. The outbox relay waits here instead of polling."""
        if epoch == self._epoch and dict(seen) == self._commits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit_seen.wait(), timeout_s)
        return self._epoch, dict(self._commits)

    async def close(self) -> None:
        """Stop monitoring and close every connection (used outside Ray, e.g. tests)."""
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            self._monitor_task = None
        for node in {key[:2] for key in self._pools}:
            await self._drop_pools(node)
        await _close(self._primary_monitor)
        for replica in self._topology.replicas.values():
            await _close(replica.monitor)
        self._started = False

    async def ping(self, databases: list[str]) -> dict[str, Any]:
        """Round-trip `SELECT 1` on each database's primary; raises ShardUnavailable."""
        await self._ensure_started()
        started = time.perf_counter()
        for database in databases:
            await self._execute(self._topology.primary, database, _select_one, (), {}, True)
        return {"server": self._name, "latency_ms": (time.perf_counter() - started) * 1e3}

    def stats(self) -> dict[str, Any]:
        return {
            "server": self._name,
            "owned": None if self._owned is None else dict(sorted(self._owned.items())),
            "frozen": sorted(self._frozen),
            "primary": "{}:{}".format(*self._topology.primary),
            "primary_reachable": self._primary_down_since is None,
            "replicas": {
                r.name: {
                    "address": f"{r.host}:{r.port}",
                    "healthy": r.healthy,
                    "lag_s": None if math.isinf(r.lag_s) else round(r.lag_s, 3),
                    "replay_lsn": r.replay_lsn,
                }
                for r in self._topology.replicas.values()
            },
            "pools": {
                f"{host}:{port}/{db}": {
                    "size": p.get_size(),
                    "idle": p.get_idle_size(),
                    "max": p.get_max_size(),
                }
                for (host, port, db), p in self._pools.items()
            },
        }


@contextmanager
def _transaction_span(
    traced: bool, conn: asyncpg.Connection, node: tuple[str, int], database: str, role: str
) -> Iterator[None]:
    """A span for the transaction and, under it, one per statement (timed by asyncpg's
    query logger, which reports each statement once it has run)."""
    if not traced:
        yield
        return
    tracer = tracing.tracer()
    with tracer.start_as_current_span(
        f"transaction {database}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": "postgresql",
            "db.namespace": database,
            "server.address": node[0],
            "server.port": node[1],
            "nextflow.role": role,
        },
    ):
        parent = otel_context.get_current()

        def statement(record: asyncpg.connection.LoggedQuery) -> None:
            end = time.time_ns()
            text = " ".join(record.query.split())
            span = tracer.start_span(
                text.split(" ", 1)[0].rstrip(";").upper(),
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=end - int(record.elapsed * 1e9),
                attributes={"db.system.name": "postgresql", "db.query.text": text[:2000]},
            )
            if record.exception is not None:
                span.set_status(StatusCode.ERROR, type(record.exception).__name__)
            span.end(end_time=end)

        conn.add_query_logger(statement)
        try:
            yield
        finally:
            conn.remove_query_logger(statement)


class _Behind(Exception):
    """A replica has not replayed far enough for this read."""


async def _if_replayed(
    conn: asyncpg.Connection,
    fn: Callable[..., Awaitable[Any]],
    min_lsn: int,
    *args: Any,
    **kwargs: Any,
) -> Any:
    replayed = await conn.fetchval(f"SELECT {_REPLAY}")
    if replayed is None or replayed < min_lsn:
        raise _Behind
    return await fn(conn, *args, **kwargs)


async def _select_one(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT 1"))


async def _close(conn: asyncpg.Connection | None) -> None:
    if conn is not None and not conn.is_closed():
        conn.terminate()


ShardManagerActor = ray.remote(ShardManager)


def manager_handle(server: ServerSpec) -> Any:
    """The named, detached manager for `server`, created on first use by anyone."""
    return ShardManagerActor.options(
        name=actor_name(server.name),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=1000,
        num_cpus=0,
    ).remote(server)
