"""Batched ShardManager calls (`shards.client.ManagerLink`) against real PostgreSQL,
with in-process managers: concurrent calls share actor calls, each still gets its own
answer, error and read-your-writes position; a bulk write goes alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cluster.settings import Settings
from deployments.customer import repo
from deployments.customer.schemas import CustomerCreate
from shards import consistency
from shards.client import InProcess, Shards, read_shard_map
from shards.connections import ReadConn, WriteConn
from shards.errors import DatabaseError
from shards.ids import EPOCH_MS, make_id
from shards.manager import ShardManager
from shards.routing import ServerSpec

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def shards(stack: object, stack_settings: Settings) -> AsyncIterator[Shards]:
    shard_map = await read_shard_map(stack_settings)
    managers = {name: ShardManager(spec) for name, spec in shard_map.servers.items()}

    def manager_for(spec: ServerSpec) -> InProcess:
        return InProcess(managers[spec.name])

    try:
        yield Shards("customer", shard_map, manager_for=manager_for)
    finally:
        for manager in managers.values():
            await manager.close()


def _batches(shards: Shards) -> tuple[int, int]:
    """(batches, calls) sent so far over every server."""
    links = shards._managers.values()
    return (
        sum(link.batcher.batches for link in links if link.batcher),
        sum(link.batcher.calls for link in links if link.batcher),
    )


async def _broken(conn: ReadConn, customer_id: int) -> None:
    await conn.fetchval("SELECT no_such_column FROM customers WHERE id = $1", customer_id)


async def _count(conn: WriteConn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM customers"))


async def test_concurrent_reads_share_actor_calls_and_keep_their_own_answers(
    shards: Shards,
) -> None:
    shard = 3
    made = [
        await shards.write(
            shard, repo.create_customer, shard, CustomerCreate(name=f"batch {n}"), None, None
        )
        for n in range(6)
    ]
    before = _batches(shards)
    # 30 reads of customers that exist, 6 of ids on the same shard from the first
    # milliseconds of the id epoch (none).
    missing = [make_id(EPOCH_MS + 1 + n, shard, n) for n in range(6)]
    ids = [c.id for c in made] * 5 + missing
    found = await asyncio.gather(
        *(shards.read(shards.shard_for_id(i), repo.get_customer, i) for i in ids)
    )
    for customer_id, customer in zip(ids, found, strict=True):
        if customer_id in {c.id for c in made}:
            assert customer is not None and customer.id == customer_id
        else:
            assert customer is None
    batches, calls = (a - b for a, b in zip(_batches(shards), before, strict=True))
    assert calls == len(ids)
    assert batches < calls, "36 concurrent reads on one server should share actor calls"


async def test_one_failing_call_does_not_fail_the_others_in_its_batch(shards: Shards) -> None:
    shard = 4
    made = await shards.write(
        shard, repo.create_customer, shard, CustomerCreate(name="neighbour"), None, None
    )
    reads = [shards.read(shard, repo.get_customer, made.id) for _ in range(8)]
    reads.insert(4, shards.read(shard, _broken, made.id))
    done = await asyncio.gather(*reads, return_exceptions=True)
    assert isinstance(done[4], DatabaseError) and done[4].sqlstate == "42703"
    assert all(r.id == made.id for i, r in enumerate(done) if i != 4)  # type: ignore[union-attr]


async def test_batched_writes_each_record_their_own_read_your_writes_position(
    shards: Shards,
) -> None:
    async def create(n: int) -> dict[str, int]:
        with consistency.request_scope({}) as written:
            await shards.write(
                n % 10, repo.create_customer, n % 10, CustomerCreate(name=f"w{n}"), None, None
            )
            return dict(written)

    positions = await asyncio.gather(*(create(n) for n in range(12)))
    assert all(len(p) == 1 and next(iter(p.values())) > 0 for p in positions)


async def test_a_bulk_write_goes_in_an_actor_call_of_its_own(shards: Shards) -> None:
    before = _batches(shards)
    assert await shards.write_bulk(1, _count) >= 0
    assert _batches(shards) == before
