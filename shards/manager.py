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
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import ray

from cluster.settings import get_settings
from shards.errors import DatabaseError, ShardUnavailable
from shards.routing import ServerSpec

NAMESPACE = "nextflow"
log = logging.getLogger("nextflow.shards")
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)
_LSN = "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAY = "(pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
_REFRESH_EVERY_S = 5.0


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: json/jsonb as Python objects (via orjson)."""
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=_json_text, decoder=orjson.loads, schema="pg_catalog", format="text"
        )


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


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


@dataclass
class _Topology:
    primary: tuple[str, int]
    replicas: dict[str, _Replica] = field(default_factory=dict)


class ShardManager:
    """Runs repo functions in transactions on one server's databases."""

    def __init__(self, server: ServerSpec) -> None:
        self._name = server.name
        self._settings = get_settings()
        self._topology = _Topology(primary=(server.host, server.port))
        self._pools: dict[tuple[str, int, str], asyncpg.Pool] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self._monitor_task: asyncio.Task[None] | None = None
        self._primary_monitor: asyncpg.Connection | None = None
        # (monotonic time, primary LSN) samples, to turn a replay LSN into seconds of lag.
        self._history: deque[tuple[float, int]] = deque()
        self._round_robin = itertools.count()

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
            conn = await asyncpg.connect(
                s.dsn_for(s.host, s.catalog_port, "catalog"), timeout=5, command_timeout=5
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
                if time.monotonic() - last_refresh > _REFRESH_EVERY_S:
                    last_refresh = time.monotonic()
                    await self._load_topology()
            except Exception as exc:  # the monitor must outlive any one bad poll
                log.warning("%s: replica monitor: %r", self._name, exc)
            await asyncio.sleep(self._settings.replica_poll_interval_s)

    async def _poll(self) -> None:
        now = time.monotonic()
        try:
            if self._primary_monitor is None or self._primary_monitor.is_closed():
                self._primary_monitor = await self._connect(*self._topology.primary, "postgres")
            primary_lsn = int(await self._primary_monitor.fetchval(f"SELECT {_LSN}"))
            self._history.append((now, primary_lsn))
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError):
            await _close(self._primary_monitor)
            self._primary_monitor = None
        keep = self._settings.max_replica_lag_s * 2 + 1
        while self._history and now - self._history[0][0] > keep:
            self._history.popleft()
        for replica in list(self._topology.replicas.values()):
            await self._poll_replica(replica, now)

    async def _poll_replica(self, replica: _Replica, now: float) -> None:
        try:
            if replica.monitor is None or replica.monitor.is_closed():
                replica.monitor = await self._connect(replica.host, replica.port, "postgres")
            row = await replica.monitor.fetchrow(f"SELECT pg_is_in_recovery() AS r, {_REPLAY} AS l")
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
                    command_timeout=30,
                    init=init_connection,
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
    ) -> tuple[Any, int | None]:
        """Run `fn(conn, *args, **kwargs)` in one transaction. Returns its result and,
        for a write, the LSN of the commit (None for a read)."""
        await self._ensure_started()
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
        return await self._execute(
            self._topology.primary, database, fn, args, kwargs, readonly, with_lsn=not readonly
        )

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
        try:
            pool = await self._pool(*node, database)
            async with pool.acquire(timeout=10) as conn:
                async with conn.transaction(readonly=readonly):
                    value = await fn(conn, *args, **kwargs)
                if not with_lsn:
                    return value, None
                # After commit: this position is at or past our commit record.
                return value, int(await conn.fetchval(f"SELECT {_LSN}"))
        except asyncpg.PostgresError as exc:
            if isinstance(exc, _CONNECTION_ERRORS):
                raise ShardUnavailable(self._name, type(exc).__name__) from None
            raise DatabaseError(
                exc.sqlstate or "XX000",
                str(exc),
                getattr(exc, "constraint_name", None),
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise ShardUnavailable(self._name, type(exc).__name__) from None

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
            "primary": "{}:{}".format(*self._topology.primary),
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
