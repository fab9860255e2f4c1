"""What a `ShardManager` call sends to PostgreSQL besides the function's own
statements: a single-statement read goes alone, every other call in a transaction,
and no call is followed by asyncpg's session reset."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from cluster.settings import Settings
from shards import single_statement
from shards.connections import ReadConn, WriteConn
from shards.consistency import PRIMARY_ONLY as _PRIMARY
from shards.errors import DatabaseError
from shards.manager import ShardManager
from shards.routing import ServerSpec

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# Read on the primary, where only a `BEGIN READ ONLY` block makes a statement read-only.
_READ_ONLY = "SELECT current_setting('transaction_read_only') = 'on'"


async def _in_a_transaction(conn: ReadConn) -> bool:
    return bool(await conn.fetchval(_READ_ONLY))


@single_statement
async def _marked(conn: ReadConn) -> bool:
    return bool(await conn.fetchval(_READ_ONLY))


async def _write_then_fail(conn: WriteConn, name: str) -> None:
    await conn.execute("INSERT INTO customers (id, name) VALUES (nextflow_id(1), $1)", name)
    await conn.execute("SELECT 1 / 0")


async def _count(conn: ReadConn, name: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM customers WHERE name = $1", name))


async def _last_statements(settings: Settings, application: str) -> list[str]:
    """The last statement of each idle connection named `application`, seen from a
    connection of our own."""
    s = settings
    conn = await asyncpg.connect(s.dsn_for(s.host, s.shard_base_port, "customer"))
    try:
        rows = await conn.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle'",
            application,
        )
    finally:
        await conn.close()
    return [r["query"] for r in rows]


@pytest_asyncio.fixture(loop_scope="session")
async def manager(stack: object, stack_settings: Settings) -> AsyncIterator[ShardManager]:
    """shard1's manager, in process."""
    s = stack_settings
    manager = ShardManager(ServerSpec("shard1", s.host, s.shard_base_port))
    try:
        yield manager
    finally:
        await manager.close()


async def test_a_single_statement_read_goes_without_begin_and_commit(
    manager: ShardManager,
) -> None:
    (inside, _) = await manager.run("customer", _in_a_transaction, (), {}, True, _PRIMARY)
    assert inside is True
    (inside, _) = await manager.run("customer", _marked, (), {}, True, _PRIMARY)
    assert inside is False


async def test_released_connections_keep_no_failed_transaction_and_get_no_reset(
    manager: ShardManager, stack_settings: Settings
) -> None:
    s = stack_settings
    for _ in range(s.pool_max_size + 1):  # every connection of the pool, and one again
        with pytest.raises(DatabaseError) as failed:
            await manager.run("customer", _write_then_fail, ("rolled back",), {}, False)
        assert failed.value.sqlstate == "22012"
    (count, _) = await manager.run("customer", _count, ("rolled back",), {}, False)
    assert count == 0
    statements = await _last_statements(s, "nextflow-shard1")
    assert statements, "the pool's idle connections are visible"
    assert not [q for q in statements if "RESET ALL" in q], statements
