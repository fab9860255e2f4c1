"""`ShardManager`: one Ray actor per PostgreSQL server, the only owner of its pools.

However many Serve replicas run, a server sees at most `pool_max_size` connections
per database from its manager. A service hands the manager a repo function; the
manager runs it inside one transaction and returns what it returns. If the actor dies,
Ray restarts it (`max_restarts=-1`) and the pools are rebuilt on first use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import ray

from cluster.settings import get_settings
from shards.errors import DatabaseError, ShardUnavailable
from shards.routing import ServerSpec

NAMESPACE = "nextflow"
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


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


class ShardManager:
    """Runs repo functions in transactions on one server's databases."""

    def __init__(self, server: ServerSpec) -> None:
        self._server = server
        self._settings = get_settings()
        self._pools: dict[str, asyncpg.Pool] = {}
        self._lock = asyncio.Lock()

    async def _pool(self, database: str) -> asyncpg.Pool:
        pool = self._pools.get(database)
        if pool is not None:
            return pool
        async with self._lock:
            if database not in self._pools:
                s = self._settings
                self._pools[database] = await asyncpg.create_pool(
                    s.dsn_for(self._server.host, self._server.port, database),
                    min_size=s.pool_min_size,
                    max_size=s.pool_max_size,
                    command_timeout=30,
                    init=init_connection,
                    server_settings={"application_name": f"nextflow-{self._server.name}"},
                )
            return self._pools[database]

    async def run(
        self,
        database: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        readonly: bool,
    ) -> Any:
        try:
            pool = await self._pool(database)
            async with pool.acquire(timeout=10) as conn, conn.transaction(readonly=readonly):
                return await fn(conn, *args, **kwargs)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, _CONNECTION_ERRORS):
                raise ShardUnavailable(self._server.name, type(exc).__name__) from None
            raise DatabaseError(
                exc.sqlstate or "XX000",
                str(exc),
                getattr(exc, "constraint_name", None),
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise ShardUnavailable(self._server.name, type(exc).__name__) from None

    async def ping(self, databases: list[str]) -> dict[str, Any]:
        """Round-trip `SELECT 1` on each database; raises ShardUnavailable if one fails."""
        started = time.perf_counter()
        for database in databases:
            await self.run(database, _select_one, (), {}, True)
        return {"server": self._server.name, "latency_ms": (time.perf_counter() - started) * 1e3}

    def stats(self) -> dict[str, Any]:
        return {
            "server": self._server.name,
            "pools": {
                db: {"size": p.get_size(), "idle": p.get_idle_size(), "max": p.get_max_size()}
                for db, p in self._pools.items()
            },
        }


async def _select_one(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT 1"))


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
