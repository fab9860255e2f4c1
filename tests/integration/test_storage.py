"""Migrations, global ids, the shard map and the customer repo against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster import redis_client
from cluster.settings import Settings
from deployments._kit.sql import Stale
from deployments.customer import repo
from deployments.customer.schemas import ContactCreate, CustomerCreate, CustomerListQuery
from gateway.listing import Order, Position
from shards import ids
from shards.client import load_shard_map
from shards.errors import DatabaseError, ShardUnavailable
from shards.manager import ShardManager
from shards.migrate import MigrationError, apply, migrate_all
from shards.routing import ServerSpec

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _servers(s: Settings) -> list[tuple[str, str, int]]:
    return [(a.name, a.host, a.port) for a in s.shard_server_addresses()]


async def test_migrations_are_idempotent_and_guarded(
    stack: object, stack_settings: Settings
) -> None:
    s = stack_settings
    lines: list[str] = []
    catalog = (s.catalog_address().name, s.host, s.catalog_port)
    await migrate_all(s.dsn_for, catalog, _servers(s), s.logical_shards, lines.append)
    assert any("shard_map kept" in line for line in lines)
    assert all("up to date" in line for line in lines if "/" in line and "shard_map" not in line)

    conn = await asyncpg.connect(s.dsn_for(s.host, s.shard_base_port, "customer"))
    where = "WHERE source = 'customer' AND version = 1"
    real = await conn.fetchval(f"SELECT checksum FROM schema_migrations {where}")
    try:
        await conn.execute(f"UPDATE schema_migrations SET checksum = 'edited' {where}")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply(conn, ("_sharded", "customer"))
    finally:
        await conn.execute(f"UPDATE schema_migrations SET checksum = $1 {where}", real)
        await conn.close()


async def test_shard_map_has_the_documents_shape(stack: object, stack_settings: Settings) -> None:
    s = stack_settings
    conn = await asyncpg.connect(s.dsn_for(s.host, s.catalog_port, "catalog"))
    try:
        shard_map = await load_shard_map(conn)
        keys = await conn.fetch("SELECT shard_key FROM shard_map ORDER BY shard_key")
    finally:
        await conn.close()
    assert [r["shard_key"] for r in keys] == [str(i) for i in range(10)]
    assert shard_map.logical_shards == 10
    assert shard_map.shard_to_server == ("shard1",) * 5 + ("shard2",) * 5
    assert shard_map.servers["shard2"].port == s.shard_base_port + 1


async def test_database_ids_carry_their_shard(customer_db: asyncpg.Connection) -> None:
    made = await customer_db.fetch("SELECT nextflow_id(7) AS id FROM generate_series(1, 5000)")
    values = [r["id"] for r in made]
    assert len(set(values)) == len(values)
    assert {ids.shard_of(v) for v in values} == {7}
    with pytest.raises(asyncpg.RaiseError):
        await customer_db.fetchval("SELECT nextflow_id(1024)")


async def test_customer_repo_versions_and_soft_delete(customer_db: asyncpg.Connection) -> None:
    conn = customer_db
    created = await repo.create_customer(
        conn, 3, CustomerCreate(name="Acme", tags=["vip"], custom_fields={"tier": 1}), 11, 11
    )
    assert ids.shard_of(created.id) == 3
    assert (created.version, created.custom_fields, created.owner_id) == (1, {"tier": 1}, 11)

    stale = await repo.update_customer(conn, created.id, {"name": "Acme Ltd"}, 9, 11)
    assert stale == Stale(1)
    updated = await repo.update_customer(conn, created.id, {"name": "Acme Ltd"}, 1, 11)
    assert not isinstance(updated, Stale) and updated is not None
    assert (updated.name, updated.version) == ("Acme Ltd", 2)

    contact = await repo.create_contact(conn, 3, created.id, ContactCreate(first_name="Ana"), 11)
    assert contact is not None and ids.shard_of(contact.id) == 3

    assert await repo.delete_customer(conn, created.id, 1, 11) == Stale(2)
    deleted = await repo.delete_customer(conn, created.id, 2, 11)
    assert not isinstance(deleted, Stale) and deleted is not None and deleted.version == 3
    assert await repo.get_customer(conn, created.id) is None
    assert await repo.get_contact(conn, contact.id) is None  # hidden with its customer
    assert await repo.create_contact(conn, 3, created.id, ContactCreate(first_name="B"), 11) is None
    restored = await repo.restore_customer(conn, created.id, 11)
    assert restored is not None and restored.version == 4


async def test_list_order_matches_python_order(customer_db: asyncpg.Connection) -> None:
    """The merge in Python must agree with PostgreSQL's order (COLLATE "C")."""
    names = ["beta", "Beta", "Été", "alpha", "Zulu", "_under", "émile", "10", "9"]
    for name in names:
        await repo.create_customer(
            conn := customer_db, 0, CustomerCreate(name=name, tags=["order"]), 1, 1
        )
    order = Order("name", False)
    query = CustomerListQuery(tags=["order"], sort="name", limit=50)
    owned = [0, 1]
    rows = await repo.list_customers(conn, owned, query, order, None)
    assert [r.name for r in rows] == sorted(names)
    after = await repo.list_customers(conn, owned, query, order, Position(rows[2].name, rows[2].id))
    assert [r.name for r in after] == sorted(names)[3:]
    prefixed = await repo.list_customers(
        conn, owned, CustomerListQuery(name_prefix="BE", tags=["order"], sort="name"), order, None
    )
    assert sorted(r.name for r in prefixed) == ["Beta", "beta"]
    assert await repo.count_customers(conn, owned, CustomerListQuery(tags=["order"])) == len(names)
    created_from = await repo.count_customers(
        conn,
        owned,
        CustomerListQuery(tags=["order"], created_from=datetime(2100, 1, 1, tzinfo=UTC)),
    )
    assert created_from == 0
    # Rows of a logical shard this server no longer owns (moved away) are not listed.
    assert await repo.list_customers(conn, [1], query, order, None) == []
    assert await repo.count_customers(conn, [1], CustomerListQuery(tags=["order"])) == 0


async def test_shard_manager_translates_errors(stack: object, stack_settings: Settings) -> None:
    s = stack_settings
    manager = ShardManager(ServerSpec("shard1", s.host, s.shard_base_port))
    with pytest.raises(DatabaseError) as err:
        await manager.run("customer", _insert_twice, (), {}, False)
    assert err.value.is_unique_violation
    assert await manager.run("customer", _count_dupes, (), {}, True) == (0, None)  # rolled back

    await manager.close()

    dead = ShardManager(ServerSpec("nowhere", s.host, 1))
    with pytest.raises(ShardUnavailable):
        await dead.run("customer", _count_dupes, (), {}, True)
    await dead.close()


async def _insert_twice(conn: asyncpg.Connection) -> None:
    for _ in range(2):
        await conn.execute(
            "INSERT INTO customers (id, name) VALUES (nextflow_id(0) & 0 | 4242, 'dupe')"
        )


async def _count_dupes(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM customers WHERE id = 4242"))


async def test_rate_limiter_against_redis(stack: object, stack_settings: Settings) -> None:
    import redis.asyncio as aioredis

    from gateway.ratelimit import RateLimiter

    client = aioredis.from_url(stack_settings.redis_url)
    try:
        limiter = RateLimiter(client, per_minute=60, burst=3)
        decisions = [await limiter.check("test-caller") for _ in range(5)]
        allowed = [d.allowed for d in decisions if d is not None]
        assert allowed == [True, True, True, False, False]
        assert decisions[-1] is not None and decisions[-1].retry_after_s >= 1
        other = await limiter.check("someone-else")
        assert other is not None and other.allowed
    finally:
        await client.aclose()

    down = RateLimiter(aioredis.from_url("redis://127.0.0.1:1/0"), per_minute=60, burst=3)
    assert await down.check("x") is None  # fails open
    await asyncio.sleep(0)


async def test_session_positions_keep_the_highest(stack: object, stack_settings: Settings) -> None:
    import redis.asyncio as aioredis

    from gateway.admission import Admission
    from gateway.sessions import SessionPositions

    async def recall(client: aioredis.Redis, caller: str) -> dict[str, int]:
        return (await Admission(client, None).check(caller, None)).positions

    caller = f"test-{os.urandom(4).hex()}"  # not a real caller of the e2e tests
    client = aioredis.from_url(stack_settings.redis_url)
    try:
        sessions = SessionPositions(client, ttl_s=0.5)
        await sessions.remember(caller, {"shard1": 100, "shard2": 7})
        await sessions.remember(caller, {"shard1": 90, "catalog": 3})
        assert await recall(client, caller) == {"shard1": 100, "shard2": 7, "catalog": 3}
        assert await recall(client, f"{caller}-other") == {}
        await asyncio.sleep(0.7)
        assert await recall(client, caller) == {}  # forgotten once replicas caught up anyway
    finally:
        await client.aclose()
    down_redis = aioredis.from_url("redis://127.0.0.1:1/0")
    assert await recall(down_redis, caller) == {}
    down = SessionPositions(down_redis, ttl_s=1)
    await down.remember(caller, {"shard1": 1})  # no error: reads fall back to the primary rules


async def test_admission_asks_redis_everything_in_one_script(
    stack: object, stack_settings: Settings
) -> None:
    import redis.asyncio as aioredis

    from gateway.admission import Admission
    from gateway.errors import Unavailable
    from gateway.ratelimit import RateLimiter
    from gateway.sessions import SessionPositions
    from gateway.tokens import cutoff_key

    caller, user_id = f"test-{os.urandom(4).hex()}", 10_000 + os.getpid()
    client = aioredis.from_url(stack_settings.redis_url)
    try:
        await SessionPositions(client, ttl_s=5).remember(caller, {"shard1": 100, "shard2": 7})
        await client.set(cutoff_key(user_id), 1234, ex=5)
        admission = Admission(client, RateLimiter(client, per_minute=60, burst=2))
        first = await admission.check(caller, user_id)
        assert first.positions == {"shard1": 100, "shard2": 7}
        assert first.cutoff == 1234
        assert first.decision is not None and first.decision.allowed
        second, third = await admission.check(caller, None), await admission.check(caller, None)
        assert second.decision is not None and second.decision.allowed
        assert second.cutoff is None  # an API key's caller: no user cutoff asked
        assert third.decision is not None and not third.decision.allowed  # burst of 2
        unlimited = await Admission(client, None).check(f"{caller}-new", None)
        assert (unlimited.decision, unlimited.positions, unlimited.cutoff) == (None, {}, None)
        # A server that forgot the scripts (restarted, flushed) is sent them again.
        await client.script_flush()
        again = await admission.check(f"{caller}-after-flush", user_id)
        assert again.decision is not None and again.decision.allowed and again.cutoff == 1234
    finally:
        await client.aclose()

    down = aioredis.from_url("redis://127.0.0.1:1/0")
    open_ = await Admission(down, RateLimiter(down, 60, 2)).check(caller, user_id)
    assert (open_.decision, open_.positions, open_.cutoff) == (None, {}, None)  # fails open
    with pytest.raises(Unavailable):
        await Admission(down, RateLimiter(down, 60, 2, fail_open=False)).check(caller, user_id)


async def test_a_client_survives_a_redis_restart(tmp_path: Path) -> None:
    """A Redis server restarted under a client with pooled connections: redis-py's own
    client fails the first command on each stale connection; ours (cluster.redis_client,
    every Redis client of the application) goes on. (A token cutoff or sign-out right
    after a restart was lost that way.)"""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def start() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                return server
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    server = start()
    url = f"redis://127.0.0.1:{port}/0"
    ours, plain = redis_client.connect(url), aioredis.from_url(url)
    try:
        assert await ours.set("before", 1) and await plain.set("before", 1)
        server.terminate()
        server.wait()
        server = start()
        assert await ours.set("after", 1)  # on a fresh connection, retried
        assert await ours.get("after") == b"1"
        with pytest.raises(RedisConnectionError):
            await plain.set("after", 2)  # what the retry is for (redis-py 8.1)
    finally:
        await ours.aclose()
        await plain.aclose()
        server.terminate()
        server.wait()
