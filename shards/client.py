"""What services use to reach data: route to a logical shard, run a repo function
there in one transaction, or scatter a function over every server and gather.

    shards = await Shards.connect("customer")
    shard = shards.place()                          # a new customer's logical shard
    row = await shards.write(shard, repo.create_customer, shard, data)
    row = await shards.read(shards.shard_for_id(customer_id), repo.get_customer, customer_id)

The shard map is read from the catalog once per process (not per request).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg

from cluster.settings import Settings, get_settings
from shards import consistency
from shards.connections import ReadConn, WriteConn
from shards.databases import CATALOG_DATABASES
from shards.manager import manager_handle
from shards.routing import ServerSpec, ShardMap

P = ParamSpec("P")
T = TypeVar("T")


async def load_shard_map(conn: asyncpg.Connection) -> ShardMap:
    """Repo function for the catalog database: the current map as one snapshot."""
    servers = {
        r["name"]: ServerSpec(r["name"], r["host"], r["port"])
        for r in await conn.fetch("SELECT name, host, port FROM shard_servers")
    }
    rows = await conn.fetch("SELECT shard_key, shard_server, version FROM shard_map")
    by_shard = {int(r["shard_key"]): r["shard_server"] for r in rows}
    if sorted(by_shard) != list(range(len(by_shard))) or not by_shard:
        raise RuntimeError("shard_map keys must be the numbers 0..N-1")
    return ShardMap(
        version=max(r["version"] for r in rows),
        shard_to_server=tuple(by_shard[i] for i in range(len(by_shard))),
        servers=servers,
    )


_CATALOG = "catalog"


async def _write(
    manager: Any,
    server: str,
    database: str,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    value, lsn = await manager.run.remote(database, fn, args, kwargs, False)
    consistency.record_write(server, lsn)
    return value  # type: ignore[no-any-return]


async def _read(
    manager: Any,
    server: str,
    database: str,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    min_lsn = consistency.min_lsn_for(server)
    value, _ = await manager.run.remote(database, fn, args, kwargs, True, min_lsn)
    return value  # type: ignore[no-any-return]


class Database:
    """One unsharded database on the catalog server (auth, product, catalog)."""

    def __init__(self, database: str, settings: Settings | None = None) -> None:
        if database not in CATALOG_DATABASES:
            raise ValueError(f"{database} is not a catalog database")
        s = settings or get_settings()
        self.database = database
        self._manager = manager_handle(ServerSpec(_CATALOG, s.host, s.catalog_port))

    async def write(
        self,
        fn: Callable[Concatenate[WriteConn, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await _write(self._manager, _CATALOG, self.database, fn, args, kwargs)

    async def read(
        self,
        fn: Callable[Concatenate[ReadConn, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await _read(self._manager, _CATALOG, self.database, fn, args, kwargs)

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._manager.ping.remote([self.database])
        return result

    async def alive(self) -> None:
        await self._manager.stats.remote()


class Shards:
    """A sharded database (e.g. `customer`) across every shard server."""

    def __init__(self, database: str, shard_map: ShardMap) -> None:
        self.database = database
        self.map = shard_map
        self._managers = {name: manager_handle(spec) for name, spec in shard_map.servers.items()}

    @classmethod
    async def connect(cls, database: str, settings: Settings | None = None) -> Shards:
        shard_map = await Database("catalog", settings).read(load_shard_map)
        return cls(database, shard_map)

    # -- routing -----------------------------------------------------------------
    def shard_for_id(self, global_id: int) -> int:
        """The logical shard of a record; raises ShardNotFound for a foreign id."""
        return self.map.shard_for_id(global_id)

    def place(self, key: str | None = None) -> int:
        """The logical shard for a new root record: by stable hash of `key` when given
        (so the same natural key always lands together), else uniformly at random."""
        if key is None:
            return secrets.randbelow(self.map.logical_shards)
        return self.map.shard_for_key(key)

    # -- running -----------------------------------------------------------------
    async def write(
        self,
        shard: int,
        fn: Callable[Concatenate[WriteConn, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        server = self.map.server_for_shard(shard).name
        return await _write(self._managers[server], server, self.database, fn, args, kwargs)

    async def read(
        self,
        shard: int,
        fn: Callable[Concatenate[ReadConn, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        server = self.map.server_for_shard(shard).name
        return await _read(self._managers[server], server, self.database, fn, args, kwargs)

    async def gather(
        self,
        fn: Callable[Concatenate[ReadConn, list[int], P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> list[T]:
        """Run a read on every server at once, one result per server. `fn` gets the
        logical shards the map gives that server and must keep to them: a server can
        still hold rows of a shard that moved away (until the move drops them)."""
        calls = [
            _read(self._managers[name], name, self.database, fn, (owned, *args), kwargs)
            for name in self.map.server_names()
            if (owned := self.map.shards_on(name))
        ]
        return list(await asyncio.gather(*calls))

    async def ping(self) -> list[dict[str, Any]]:
        """`SELECT 1` on this database on every server (readiness)."""
        calls = [self._managers[n].ping.remote([self.database]) for n in self.map.server_names()]
        return list(await asyncio.gather(*calls))

    async def alive(self) -> None:
        """Every manager actor answers (liveness: a database being down is not a
        reason to restart the replica that calls it)."""
        await asyncio.gather(*(m.stats.remote() for m in self._managers.values()))
