"""Online logical-shard moves between the session's two shard servers, with
in-process ShardManagers and a `Shards` client driven without Ray, while writers
keep inserting and updating rows of the shard being moved.

Every test leaves the default layout (shards 0-4 on shard1, 5-9 on shard2)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from cluster.settings import Settings
from deployments.customer import repo
from deployments.customer.schemas import ContactCreate, CustomerCreate
from shards import ids
from shards.client import InProcess, Shards, read_shard_map
from shards.manager import ShardManager
from shards.moves import LocalControls, MoveError, MoveProgress, move_shard, shard_filter
from shards.routing import ShardMap

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
SHARD = 3  # on shard1 in the default layout
MAX_WRITE_WAIT_S = 5.0


@dataclass
class Cluster:
    settings: Settings
    managers: dict[str, ShardManager]
    shards: Shards

    async def sql(self, server: str, query: str, *args: Any, db: str = "customer") -> Any:
        s = self.settings
        port = s.catalog_port if server == "catalog" else self.shards.map.servers[server].port
        conn = await asyncpg.connect(s.dsn_for(s.host, port, db))
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def catalog(self, query: str, *args: Any) -> Any:
        return await self.sql("catalog", query, *args, db="catalog")

    async def owner(self, shard: int) -> tuple[str, int]:
        (row,) = await self.sql(
            "catalog",
            "SELECT shard_server, version FROM shard_map WHERE shard_key = $1",
            str(shard),
            db="catalog",
        )
        return row["shard_server"], row["version"]

    async def move(self, shard: int, target: str, **kw: Any) -> Any:
        return await move_shard(self.settings, shard, target, LocalControls(self.managers), **kw)


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(stack: object, stack_settings: Settings) -> AsyncIterator[Cluster]:
    s = stack_settings

    async def load() -> ShardMap:
        return await read_shard_map(s)

    first = await load()
    managers = {name: ShardManager(spec) for name, spec in first.servers.items()}
    for manager in managers.values():
        await manager.refresh()
    shards = Shards(
        "customer", first, manager_for=lambda spec: InProcess(managers[spec.name]), loader=load
    )
    try:
        yield Cluster(s, managers, shards)
    finally:
        for manager in managers.values():
            await manager.close()


@dataclass
class Writers:
    """Concurrent writers on one logical shard; remembers every acknowledged write."""

    shards: Shards
    shard: int
    names: dict[int, str] = field(default_factory=dict)  # customer -> last acked name
    contacts: set[int] = field(default_factory=set)
    waits: list[float] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _timed(self, coro: Any) -> Any:
        began = time.monotonic()
        try:
            return await coro
        finally:
            self.waits.append(time.monotonic() - began)

    async def one(self, worker: int) -> None:
        mine: list[int] = []
        rng = random.Random(worker)
        step = 0
        while not self.stop.is_set():
            step += 1
            try:
                if not mine or rng.random() < 0.4:
                    name = f"w{worker}-{step}"
                    row = await self._timed(
                        self.shards.write(
                            self.shard, repo.create_customer, self.shard, CustomerCreate(name=name),
                            None, None,
                        )
                    )  # fmt: skip
                    mine.append(row.id)
                    self.names[row.id] = name
                elif rng.random() < 0.2:
                    cid = rng.choice(mine)
                    contact = await self._timed(
                        self.shards.write(
                            self.shard, repo.create_contact, self.shard, cid,
                            ContactCreate(first_name=f"c{step}"), None,
                        )
                    )  # fmt: skip
                    self.contacts.add(contact.id)
                else:
                    cid = rng.choice(mine)
                    name = f"w{worker}-{step}-upd"
                    await self._timed(
                        self.shards.write(
                            self.shard, repo.update_customer, cid, {"name": name}, None, None
                        )
                    )
                    self.names[cid] = name
            except Exception as exc:  # recorded, asserted on by the test
                self.errors.append(exc)
                return
            await asyncio.sleep(0.002)

    async def run(self, count: int) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.one(i)) for i in range(count)]


async def _rows_of(cluster: Cluster, server: str, table: str, shard: int) -> dict[int, Any]:
    rows = await cluster.sql(server, f"SELECT * FROM {table} WHERE {shard_filter(shard)}")
    found: dict[int, Any] = {}
    for r in rows:
        assert r["id"] not in found
        found[r["id"]] = r
    return found


async def test_move_a_shard_while_writes_go_on(cluster: Cluster) -> None:
    source, version = await cluster.owner(SHARD)
    assert source == "shard1"
    writers = Writers(cluster.shards, SHARD)
    tasks = await writers.run(4)
    await asyncio.sleep(1.0)  # rows exist before the copy starts
    seen: list[MoveProgress] = []
    result = await asyncio.wait_for(cluster.move(SHARD, "shard2", progress=seen.append), 60)
    await asyncio.sleep(1.0)  # writes go on, now on the target
    writers.stop.set()
    await asyncio.gather(*tasks)

    assert not writers.errors, writers.errors
    assert max(writers.waits) < MAX_WRITE_WAIT_S
    assert result.pause_ms < MAX_WRITE_WAIT_S * 1000
    assert (result.source, result.target, result.version) == ("shard1", "shard2", version + 1)
    assert await cluster.owner(SHARD) == ("shard2", version + 1)
    assert cluster.shards.reloads >= 1
    assert any(p.phase == "copy" for p in seen) and any(p.phase == "pause" for p in seen)
    print(
        f"\nmove: {sum(result.rows.values())} rows, copy {result.copy_s:.2f}s, pause "
        f"{result.pause_ms:.0f} ms, held {result.held_writes}, total {result.total_s:.2f}s, "
        f"max write wait {max(writers.waits) * 1000:.0f} ms over {len(writers.waits)} writes"
    )

    # Every acknowledged write exactly once, on the target only, as last acknowledged.
    for table in ("customers", "contacts"):
        assert await _rows_of(cluster, "shard1", table, SHARD) == {}
    customers = await _rows_of(cluster, "shard2", "customers", SHARD)
    assert set(writers.names) <= set(customers)
    for cid, name in writers.names.items():
        assert customers[cid]["name"] == name
    contacts = await _rows_of(cluster, "shard2", "contacts", SHARD)
    assert writers.contacts <= set(contacts)
    # No leftovers of the move's replication on either side.
    assert not await cluster.sql("shard2", "SELECT 1 FROM pg_subscription")
    assert not await cluster.sql("shard1", "SELECT 1 FROM pg_publication")
    slots = "SELECT 1 FROM pg_replication_slots WHERE slot_type = 'logical'"
    assert not await cluster.sql("shard1", slots, db="postgres")
    (move,) = await cluster.sql(
        "catalog", "SELECT state, detail FROM shard_moves WHERE id = $1", result.move_id,
        db="catalog",
    )  # fmt: skip
    assert move["state"] == "done"

    # Reads through the client see the target's rows; new ids of the shard are unique.
    some = next(iter(writers.names))
    got = await cluster.shards.read(SHARD, repo.get_customer, some)
    assert got is not None and got.name == writers.names[some]
    made = await cluster.shards.write(
        SHARD, repo.create_customer, SHARD, CustomerCreate(name="after"), None, None
    )
    assert ids.shard_of(made.id) == SHARD and made.id > max(customers)

    # And back, so the layout is the default again (writers on again, fewer checks).
    back = Writers(cluster.shards, SHARD)
    tasks = await back.run(2)
    returned = await cluster.move(SHARD, "shard1")
    back.stop.set()
    await asyncio.gather(*tasks)
    assert not back.errors, back.errors
    assert await cluster.owner(SHARD) == ("shard1", version + 2)
    assert returned.version == version + 2
    for table in ("customers", "contacts"):
        assert await _rows_of(cluster, "shard2", table, SHARD) == {}
    customers = await _rows_of(cluster, "shard1", "customers", SHARD)
    assert set(writers.names) | set(back.names) | {made.id} <= set(customers)


async def _refused(cluster: Cluster, shard: int, target: str, expected: str) -> None:
    before = await cluster.catalog("SELECT * FROM shard_map ORDER BY shard_key")
    moves = await cluster.catalog("SELECT count(*) AS n FROM shard_moves")
    with pytest.raises(MoveError, match=expected) as caught:
        await cluster.move(shard, target)
    assert "\n" not in str(caught.value)
    assert before == await cluster.catalog("SELECT * FROM shard_map ORDER BY shard_key")
    assert moves == await cluster.catalog("SELECT count(*) AS n FROM shard_moves")
    for server in ("shard1", "shard2"):
        assert not await cluster.sql(server, "SELECT 1 FROM pg_publication")
        assert not await cluster.sql(server, "SELECT 1 FROM pg_subscription")


async def test_refused_moves_change_nothing(cluster: Cluster) -> None:
    await _refused(cluster, 99, "shard2", "unknown logical shard 99")
    await _refused(cluster, 4, "shard9", "unknown server 'shard9'")
    await _refused(cluster, 4, "catalog", "unknown server 'catalog'")
    await _refused(cluster, 4, "shard1", "already on shard1")

    # A move of that shard in progress.
    (row,) = await cluster.sql(
        "catalog",
        "INSERT INTO shard_moves (shard_key, source, target, state)"
        " VALUES ('4', 'shard1', 'shard2', 'copying') RETURNING id",
        db="catalog",
    )
    try:
        await _refused(cluster, 4, "shard2", "already in progress")
    finally:
        await cluster.catalog("DELETE FROM shard_moves WHERE id = $1", row["id"])

    # The target already holds rows of the shard.
    stray = ids.make_id(int(time.time() * 1000), 4, 1)
    await cluster.sql("shard2", "INSERT INTO customers (id, name) VALUES ($1, 'stray')", stray)
    try:
        await _refused(cluster, 4, "shard2", "shard2 already holds 1 rows of logical shard 4")
    finally:
        await cluster.sql("shard2", "DELETE FROM customers WHERE id = $1", stray)


async def test_a_failed_move_is_undone(cluster: Cluster) -> None:
    """A verification that fails (a row changed on the source behind the managers'
    back during the pause) leaves the source the owner with every row, and nothing
    on the target."""
    row = await cluster.shards.write(
        4, repo.create_customer, 4, CustomerCreate(name="before-fail"), None, None
    )
    source_rows = await _rows_of(cluster, "shard1", "customers", 4)
    version = (await cluster.owner(4))[1]

    class Sabotage(LocalControls):
        async def freeze(self, server: str, shard: int, lease_s: float) -> dict[str, Any]:
            done = await super().freeze(server, shard, lease_s)
            # Stop the subscription, then write on the source: the copy falls behind.
            (sub,) = await cluster.sql("shard2", "SELECT subname FROM pg_subscription")
            await cluster.sql("shard2", f"ALTER SUBSCRIPTION {sub['subname']} DISABLE")
            await cluster.sql("shard1", "UPDATE customers SET name = 'x' WHERE id = $1", row.id)
            return done

    with pytest.raises(MoveError, match="failed: .*shard1 still owns it"):
        await move_shard(cluster.settings, 4, "shard2", Sabotage(cluster.managers), lease_s=6)
    assert await cluster.owner(4) == ("shard1", version)
    assert set(await _rows_of(cluster, "shard1", "customers", 4)) == set(source_rows)
    assert await _rows_of(cluster, "shard2", "customers", 4) == {}
    assert not await cluster.sql("shard2", "SELECT 1 FROM pg_subscription")
    assert not await cluster.sql("shard1", "SELECT 1 FROM pg_publication")
    (move,) = await cluster.sql(
        "catalog", "SELECT state FROM shard_moves ORDER BY id DESC LIMIT 1", db="catalog"
    )
    assert move["state"] == "failed"
    # Writes to the shard work again at once (thawed).
    again = await asyncio.wait_for(
        cluster.shards.write(4, repo.update_customer, row.id, {"name": "after-fail"}, None, None), 5
    )
    assert again.name == "after-fail"
