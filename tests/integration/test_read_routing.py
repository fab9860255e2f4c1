"""Replica reads with read-your-writes, against a real primary and its streaming
replica, with real lag made by pausing replay on the replica."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from cluster.settings import Settings
from shards.connections import ReadConn, WriteConn
from shards.manager import ShardManager
from shards.routing import ServerSpec

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _insert(conn: WriteConn, name: str) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO customers (id, name) VALUES (nextflow_id(1), $1) RETURNING id", name
        )
    )


async def _look(conn: ReadConn, customer_id: int) -> tuple[int, bool]:
    """Which node answered (its port) and whether it sees the customer."""
    port = int(await conn.fetchval("SELECT inet_server_port()"))
    found = await conn.fetchval("SELECT true FROM customers WHERE id = $1", customer_id)
    return port, bool(found)


async def _until(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_reads_see_your_writes_on_a_lagging_replica(
    stack: object, stack_settings: Settings
) -> None:
    s = stack_settings
    primary_port = s.shard_base_port
    replica_port = primary_port + s.replica_port_offset
    manager = ShardManager(ServerSpec("shard1", s.host, primary_port))
    await manager.refresh()

    def replica_healthy() -> bool:
        replicas = manager.stats()["replicas"]
        return bool(replicas) and all(r["healthy"] for r in replicas.values())

    await _until(replica_healthy)
    replica = await asyncpg.connect(s.dsn_for(s.host, replica_port, "postgres"))
    try:
        await replica.execute("SELECT pg_wal_replay_pause()")
        customer_id, lsn = await manager.run("customer", _insert, ("paused",), {}, False)
        assert lsn

        # With the write's token: the replica has not replayed it, so the primary answers.
        (port, seen), _ = await manager.run("customer", _look, (customer_id,), {}, True, lsn)
        assert (port, seen) == (primary_port, True)

        # Without a token, within the lag bound: the replica answers, and is behind.
        (port, seen), _ = await manager.run("customer", _look, (customer_id,), {}, True)
        assert (port, seen) == (replica_port, False)

        # Past the lag bound the replica is skipped for every read.
        await _until(lambda: not replica_healthy(), timeout=s.max_replica_lag_s * 4 + 5)
        (port, seen), _ = await manager.run("customer", _look, (customer_id,), {}, True)
        assert (port, seen) == (primary_port, True)
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")
        await replica.close()

    # Caught up again: back in rotation, and it has the write.
    await _until(replica_healthy)
    (port, seen), _ = await manager.run("customer", _look, (customer_id,), {}, True, lsn)
    assert (port, seen) == (replica_port, True)
    await manager.close()


async def test_a_replica_that_is_down_is_skipped(stack: object, stack_settings: Settings) -> None:
    s = stack_settings
    primary_port = s.shard_base_port + 1
    manager = ShardManager(ServerSpec("shard2", s.host, primary_port))
    await manager.refresh()
    (replica_node,) = [
        n
        for n in stack.postgres_servers()
        if n.port == primary_port + s.replica_port_offset  # type: ignore[attr-defined]
    ]
    replica_node.stop()
    try:
        for _ in range(5):  # no read fails, whatever the monitor has noticed yet
            (port, _seen), _ = await manager.run("customer", _look, (1,), {}, True)
            assert port == primary_port
    finally:
        replica_node.start()
    await _until(lambda: all(r["healthy"] for r in manager.stats()["replicas"].values()), 60)
    await manager.close()
