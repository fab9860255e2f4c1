"""What services use to reach data: route to a logical shard, run a repo function
there in one transaction, or scatter a function over every server and gather.

    shards = await Shards.connect("customer")
    shard = shards.place()                          # a new customer's logical shard
    row = await shards.write(shard, repo.create_customer, shard, data)
    row = await shards.read(shards.shard_for_id(customer_id), repo.get_customer, customer_id)

The shard map is read from the catalog once per process (not per request), and again
when a ShardManager refuses a call as routed by a stale map (`StaleShardMap`, or
`ShardMoved` after an online shard move): the refused call never ran, so it is
retried once on the server the fresh map names.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
from ray.exceptions import RayActorError

from cluster import tracing
from cluster.batching import Batcher, Outcome
from cluster.settings import Settings, get_settings
from shards import consistency
from shards.connections import ReadConn, WriteConn
from shards.databases import CATALOG_DATABASES
from shards.errors import ShardUnavailable, StaleShardMap
from shards.manager import ShardCall, manager_handle
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
    versions = {int(r["shard_key"]): int(r["version"]) for r in rows}
    if sorted(by_shard) != list(range(len(by_shard))) or not by_shard:
        raise RuntimeError("shard_map keys must be the numbers 0..N-1")
    return ShardMap(
        version=max(versions.values()),
        shard_to_server=tuple(by_shard[i] for i in range(len(by_shard))),
        servers=servers,
        versions=tuple(versions[i] for i in range(len(by_shard))),
    )


async def read_shard_map(settings: Settings) -> ShardMap:
    """The map as the catalog holds it now, read over a connection of its own: for
    tools and tests that run without ShardManager actors."""
    conn = await asyncpg.connect(settings.dsn_for(settings.host, settings.catalog_port, _CATALOG))
    try:
        return await load_shard_map(conn)
    finally:
        await conn.close()


class InProcess:
    """An in-process `ShardManager` that answers like its actor handle
    (`manager.run.remote(...)` is awaitable), so `Shards` runs without Ray."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self.manager, name))


class _Method:
    def __init__(self, method: Callable[..., Awaitable[Any]]) -> None:
        self.remote = method


_CATALOG = "catalog"
_READ_ATTEMPTS = 4


class ManagerLink:
    """The way to one server's `ShardManager`: its actor handle, and a `Batcher` that
    coalesces this process's concurrent calls to it into `run_batch` actor calls
    (`shard_batch_in_flight` batches out at once; 0: every call its own actor call)."""

    def __init__(self, handle: Any, server: str, settings: Settings | None = None) -> None:
        s = settings or get_settings()
        self.handle = handle
        self.batcher: Batcher[ShardCall] | None = None
        if s.shard_batch_in_flight > 0:
            self.batcher = Batcher(
                self._send,
                target=f"shard-manager:{server}",
                max_in_flight=s.shard_batch_in_flight,
                max_batch=s.shard_batch_max,
            )

    async def _send(self, calls: list[ShardCall]) -> list[Outcome]:
        outcomes: list[Outcome] = await self.handle.run_batch.remote(calls)
        return outcomes

    async def run(
        self,
        *args: Any,
        route: Mapping[int, int] | None = None,
        alone: bool = False,
    ) -> tuple[Any, int | None]:
        """`ShardManager.run(*args, route=...)` with the caller's trace. `alone`: in an
        actor call of its own, for a long call (a batch answers when its slowest call
        is done, so a bulk write or a scan must not hold short calls back)."""
        trace = tracing.carrier()
        if alone or self.batcher is None:
            result: tuple[Any, int | None] = await self.handle.run.remote(
                *args, route=route, trace=trace
            )
            return result
        return await self.batcher.call(ShardCall(args, route, trace))  # type: ignore[no-any-return]


async def _write(
    manager: ManagerLink,
    server: str,
    database: str,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    route: Mapping[int, int] | None = None,
    alone: bool = False,
) -> T:
    try:
        value, lsn = await manager.run(database, fn, args, kwargs, False, route=route, alone=alone)
    except RayActorError:
        # The manager died with the write in flight: whether it committed is unknown,
        # so it is not repeated here; the caller gets a clean 503 and may retry.
        raise ShardUnavailable(server, "shard manager restarting") from None
    if lsn is not None:  # always, for a write
        consistency.record_write(server, lsn)
    return value  # type: ignore[no-any-return]


async def _read(
    manager: ManagerLink,
    server: str,
    database: str,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    route: Mapping[int, int] | None = None,
    min_lsn: int | None = None,
    alone: bool = False,
) -> T:
    """A read; `min_lsn` defaults to the request's read-your-writes position."""
    min_lsn = min_lsn or consistency.min_lsn_for(server)
    for attempt in range(_READ_ATTEMPTS):
        try:
            value, _ = await manager.run(
                database, fn, args, kwargs, True, min_lsn, route=route, alone=alone
            )
            return value  # type: ignore[no-any-return]
        except RayActorError:
            # A read changes nothing: repeat it once Ray has restarted the manager.
            if attempt == _READ_ATTEMPTS - 1:
                raise ShardUnavailable(server, "shard manager restarting") from None
            await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class Database:
    """One unsharded database on the catalog server (auth, product, catalog)."""

    def __init__(self, database: str, settings: Settings | None = None) -> None:
        if database not in CATALOG_DATABASES:
            raise ValueError(f"{database} is not a catalog database")
        s = settings or get_settings()
        self.database = database
        catalog = s.catalog_address()
        self._manager = ManagerLink(
            manager_handle(ServerSpec(_CATALOG, catalog.host, catalog.port)), _CATALOG, s
        )

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

    async def read_primary(
        self,
        fn: Callable[Concatenate[ReadConn, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """A read that must see every committed write, whoever made it (sign-in checks
        credentials that may have changed a moment ago)."""
        return await _read(
            self._manager, _CATALOG, self.database, fn, args, kwargs,
            min_lsn=consistency.PRIMARY_ONLY,
        )  # fmt: skip

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._manager.handle.ping.remote([self.database])
        return result

    async def alive(self) -> None:
        await self._manager.handle.stats.remote()


def _catalog_loader(settings: Settings | None) -> Callable[[], Awaitable[ShardMap]]:
    async def load() -> ShardMap:
        return await Database("catalog", settings).read(load_shard_map)

    return load


class Shards:
    """A sharded database (e.g. `customer`) across every shard server."""

    def __init__(
        self,
        database: str,
        shard_map: ShardMap,
        *,
        manager_for: Callable[[ServerSpec], Any] = manager_handle,
        loader: Callable[[], Awaitable[ShardMap]] | None = None,
    ) -> None:
        """`manager_for` gives the manager of a server (default: its Ray actor; tests
        pass in-process managers wrapped in `InProcess`); `loader` reads the current
        map (default: from the catalog through its manager)."""
        self.database = database
        self.map = shard_map
        self._manager_for = manager_for
        self._managers = {
            name: ManagerLink(manager_for(spec), name) for name, spec in shard_map.servers.items()
        }
        self._loader = loader or _catalog_loader(None)
        self._reload_lock = asyncio.Lock()
        self.reloads = 0

    @classmethod
    async def connect(cls, database: str, settings: Settings | None = None) -> Shards:
        loader = _catalog_loader(settings)
        shards = cls(database, await loader(), loader=loader)
        # Every server's outbox relay starts with the first service replica that
        # connects (named, detached actors: the others find them).
        from shards.relay import ensure_relays

        ensure_relays(shards.map)
        return shards

    async def reload(self, seen: ShardMap | None = None) -> ShardMap:
        """Read the map again (once for concurrent callers that all saw `seen`)."""
        async with self._reload_lock:
            if seen is not None and self.map is not seen:
                return self.map
            fresh = await self._loader()
            added = [name for name in fresh.servers if name not in self._managers]
            for name in added:
                self._managers[name] = ManagerLink(self._manager_for(fresh.servers[name]), name)
            if added and self._manager_for is manager_handle:
                from shards.relay import ensure_relays

                ensure_relays(fresh, only=added)
            self.map = fresh
            self.reloads += 1
            return fresh

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
        return await self._on_shard(_write, shard, fn, args, kwargs)

    async def write_bulk(
        self,
        shard: int,
        fn: Callable[Concatenate[WriteConn, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`write` for a long transaction (a bulk import's batch): in an actor call of
        its own, so it never holds other callers' short calls of the same batch."""
        return await self._on_shard(_write, shard, fn, args, kwargs, alone=True)

    async def read(
        self,
        shard: int,
        fn: Callable[Concatenate[ReadConn, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self._on_shard(_read, shard, fn, args, kwargs)

    async def _on_shard(
        self,
        call: Callable[..., Awaitable[T]],
        shard: int,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        alone: bool = False,
    ) -> T:
        """`call` on the server the map names for `shard`; once more after reloading
        the map if that server says the map was stale (the call never ran there)."""
        seen = self.map
        for attempt in (1, 2):
            server = seen.server_for_shard(shard).name
            try:
                return await call(
                    self._managers[server], server, self.database, fn, args, kwargs,
                    seen.route([shard]), alone=alone,
                )  # fmt: skip
            except StaleShardMap:
                if attempt == 2:
                    raise
                seen = await self.reload(seen)
        raise AssertionError("unreachable")

    async def gather(
        self,
        fn: Callable[Concatenate[ReadConn, list[int], P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> list[T]:
        """Run a read on every server at once, one result per server. `fn` gets the
        logical shards the map gives that server and must keep to them: a server can
        still hold rows of a shard that moved away (until the move drops them)."""
        return await self._each_server(_read, fn, args, kwargs)

    async def write_each_server(
        self,
        fn: Callable[Concatenate[WriteConn, list[int], P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> list[T]:
        """`gather`'s write: one transaction on every server at once, `fn` given the
        logical shards the map gives that server (and keeping to them), for upkeep
        such as deleting expired rows."""
        return await self._each_server(_write, fn, args, kwargs)

    async def _each_server(
        self,
        call: Callable[..., Awaitable[T]],
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> list[T]:
        """`call` (`_read` or `_write`) on every server at once with the logical shards
        the map gives it; once more on a fresh map if a server said it was stale."""
        for attempt in (1, 2):
            seen = self.map
            calls = [
                call(self._managers[name], name, self.database, fn, (owned, *args), kwargs,
                     seen.route(owned))  # fmt: skip
                for name in seen.server_names()
                if (owned := seen.shards_on(name))
            ]
            try:
                return list(await asyncio.gather(*calls))
            except StaleShardMap:
                if attempt == 2:
                    raise
                await self.reload(seen)
        raise AssertionError("unreachable")

    async def ping(self) -> list[dict[str, Any]]:
        """`SELECT 1` on this database on every server (readiness)."""
        calls = [
            self._managers[n].handle.ping.remote([self.database]) for n in self.map.server_names()
        ]
        return list(await asyncio.gather(*calls))

    async def alive(self) -> None:
        """Every manager actor answers (liveness: a database being down is not a
        reason to restart the replica that calls it)."""
        await asyncio.gather(*(m.handle.stats.remote() for m in self._managers.values()))
