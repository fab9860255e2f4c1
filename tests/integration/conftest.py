from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from cluster.settings import Settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def customer_db(stack: object, stack_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to shard1's customer database, inside a transaction rolled back
    after the test."""
    from shards.manager import init_connection

    s = stack_settings
    conn = await asyncpg.connect(s.dsn_for(s.host, s.shard_base_port, "customer"))
    await init_connection(conn)
    tx = conn.transaction()
    await tx.start()
    try:
        yield conn
    finally:
        await tx.rollback()
        await conn.close()
