"""Events against real PostgreSQL and Redis, with in-process ShardManagers and relays
(no Ray): the outbox row commits and rolls back with its change, the relay publishes
in id order and marks, a relay that dies between send and mark re-sends and a
consumer using `first_time` still applies its effect once, a dead consumer's pending
entry is claimed by another, a poison message is dead-lettered."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cluster.settings import Settings
from deployments._kit.consumer import EventConsumer, first_time
from deployments._kit.events import EVENT_STREAM, Event, emit
from deployments.customer import repo
from deployments.customer.schemas import CustomerCreate
from shards import WriteConn
from shards.client import InProcess, Shards, read_shard_map
from shards.manager import ShardManager, init_connection
from shards.relay import Relay
from shards.routing import ServerSpec, ShardMap

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class Boom(RuntimeError):
    pass


@dataclass
class Env:
    settings: Settings
    managers: dict[str, ShardManager]
    shards: Shards
    redis: aioredis.Redis

    def manager_for(self, spec: ServerSpec) -> InProcess:
        return InProcess(self.managers[spec.name])

    def relay(self, server: str, **kw: Any) -> Relay:
        kw.setdefault("settings", self.settings)
        kw.setdefault("redis", self.redis)
        return Relay(
            self.shards.map.servers[server],
            manager_for=self.manager_for,
            databases=("customer",),
            **kw,
        )

    async def sql(self, server: str, query: str, *args: Any) -> list[asyncpg.Record]:
        s = self.settings
        port = self.shards.map.servers[server].port
        conn = await asyncpg.connect(s.dsn_for(s.host, port, "customer"))
        await init_connection(conn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def entries_for(self, event_id: uuid.UUID) -> list[dict[bytes, bytes]]:
        found = await self.redis.xrange(EVENT_STREAM, "-", "+")
        return [fields for _, fields in found if fields[b"id"] == str(event_id).encode()]


@pytest_asyncio.fixture(loop_scope="session")
async def env(stack: object, stack_settings: Settings) -> AsyncIterator[Env]:
    s = stack_settings

    async def load() -> ShardMap:
        return await read_shard_map(s)

    first = await load()
    specs = {**first.servers, "catalog": ServerSpec("catalog", s.host, s.catalog_port)}
    managers = {name: ShardManager(spec) for name, spec in specs.items()}
    shards = Shards(
        "customer", first, manager_for=lambda spec: InProcess(managers[spec.name]), loader=load
    )
    redis = aioredis.from_url(s.redis_url)
    try:
        yield Env(s, managers, shards, redis)
    finally:
        await redis.aclose()
        for manager in managers.values():
            await manager.close()


async def _outbox(env: Env, server: str, aggregate_id: int) -> list[asyncpg.Record]:
    return await env.sql(
        server, "SELECT * FROM outbox WHERE aggregate_id = $1 ORDER BY id", aggregate_id
    )


async def test_event_commits_with_its_change_and_not_on_rollback(env: Env) -> None:
    shard = env.shards.place()
    server = env.shards.map.server_for_shard(shard).name
    made: list[int] = []

    async def create_then_fail(conn: WriteConn) -> None:
        customer = await repo.create_customer(
            conn, shard, CustomerCreate(name="rolled"), None, None
        )
        made.append(customer.id)
        assert len(await _outbox_in(conn, customer.id)) == 1  # emitted, in this transaction
        raise Boom("after emit")

    with pytest.raises(Boom):
        await env.shards.write(shard, create_then_fail)
    assert made and await _outbox(env, server, made[0]) == []
    assert await env.sql(server, "SELECT 1 FROM customers WHERE id = $1", made[0]) == []

    kept = await env.shards.write(
        shard, repo.create_customer, shard, CustomerCreate(name="kept"), None, actor_id=7
    )
    (row,) = await _outbox(env, server, kept.id)
    assert row["type"] == "customer.created" and row["aggregate_type"] == "customer"
    assert row["actor_id"] == 7 and row["sent_at"] is None
    assert row["data"]["customer"]["id"] == str(kept.id)
    assert row["data"]["customer"]["name"] == "kept"


async def _outbox_in(conn: WriteConn, aggregate_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT id FROM outbox WHERE aggregate_id = $1", aggregate_id))


async def test_relay_publishes_in_id_order_and_marks_sent(env: Env) -> None:
    shard = env.shards.place()
    server = env.shards.map.server_for_shard(shard).name
    customer = await env.shards.write(
        shard, repo.create_customer, shard, CustomerCreate(name="ordered"), None, None
    )
    for n in range(3):
        await env.shards.write(
            shard, repo.update_customer, customer.id, {"name": f"ordered-{n}"}, None, None
        )
    relay = env.relay(server)
    while await relay.publish_once():
        pass
    rows = await _outbox(env, server, customer.id)
    assert [r["type"] for r in rows] == ["customer.created"] + ["customer.updated"] * 3
    assert all(r["sent_at"] is not None for r in rows)
    published = []
    for _, fields in await env.redis.xrange(EVENT_STREAM, "-", "+"):
        event = Event.model_validate_json(fields[b"event"])
        if event.aggregate_id == customer.id:
            published.append(event)
            assert fields[b"type"].decode() == event.type
            assert fields[b"id"].decode() == str(event.id)
    assert [e.id for e in published] == [r["event_id"] for r in rows]  # once each, in order
    assert published[-1].data["changes"] == {"name": ["ordered-1", "ordered-2"]}
    assert published[-1].data["customer"]["name"] == "ordered-2"
    stats = relay.stats()["databases"]["customer"]
    assert stats["backlog"] == 0 and stats["last_publish"] is not None


async def test_a_consumer_whose_replicas_start_after_the_first_event_still_gets_it(
    env: Env,
) -> None:
    """The relay makes sure every consumer group exists before it publishes: an event
    written and published before any member of a group was up is still that group's."""
    group = f"late-{uuid.uuid4().hex[:8]}"
    shard = env.shards.place()
    server = env.shards.map.server_for_shard(shard).name
    early = await env.shards.write(
        shard, repo.create_customer, shard, CustomerCreate(name="early"), None, None
    )
    relay = env.relay(server, groups=[group])
    while await relay.publish_once():
        pass
    (published,) = await _outbox(env, server, early.id)
    assert published["sent_at"] is not None  # on the stream before the group had a member

    seen: list[Event] = []

    async def handle(event: Event) -> None:
        seen.append(event)

    consumer = EventConsumer(env.redis, group=group, name="late-1", handler=handle)
    while await consumer.poll(block_ms=100):
        pass
    assert [e.id for e in seen if e.aggregate_id == early.id] == [published["event_id"]]
    await env.redis.xgroup_destroy(EVENT_STREAM, group)


async def test_relay_crash_between_send_and_mark_resends_and_effect_applies_once(
    env: Env,
) -> None:
    """The first relay dies after XADD and before the mark (the seam raises instead of
    ending the process; the e2e test ends a real actor's process). A new relay re-sends
    the same event; a consumer using `first_time` applies its effect once."""
    shard = env.shards.place()
    server = env.shards.map.server_for_shard(shard).name
    group = f"effects-{os.urandom(4).hex()}"
    consumer_name = f"test:{group}"

    def die() -> None:
        raise Boom("relay process died")

    relay = env.relay(server, on_crash=die)
    while await relay.publish_once():  # nothing of ours pending before the test
        pass
    stream_end = (await env.redis.xinfo_stream(EVENT_STREAM))["last-generated-id"]
    customer = await env.shards.write(
        shard, repo.create_customer, shard, CustomerCreate(name="crashy"), None, None
    )
    relay.arm_crash_after_send("customer")
    await relay.publish_once()
    (row,) = await _outbox(env, server, customer.id)
    assert row["sent_at"] is None  # sent, not marked
    assert len(await env.entries_for(row["event_id"])) == 1

    restarted = env.relay(server)
    while await restarted.publish_once():
        pass
    (row,) = await _outbox(env, server, customer.id)
    assert row["sent_at"] is not None
    assert len(await env.entries_for(row["event_id"])) == 2  # at least once: a duplicate

    async def apply(conn: WriteConn, event: Event) -> bool:
        if not await first_time(conn, consumer_name, event.id):
            return False
        await conn.execute(
            """INSERT INTO record_changes (id, record_type, record_id, action)
               VALUES (nextflow_id($1), 'test-effect', $2, $3)""",
            shard, event.aggregate_id, event.type,
        )  # fmt: skip
        return True

    applied: list[bool] = []

    async def handler(event: Event) -> None:
        if event.aggregate_id == customer.id:
            applied.append(await env.shards.write(shard, apply, event))

    consumer = EventConsumer(env.redis, group, "c1", handler, start_id=stream_end, block_ms=10)
    while await consumer.poll():
        pass
    assert applied == [True, False]
    effects = await env.sql(
        server,
        "SELECT 1 FROM record_changes WHERE record_type = 'test-effect' AND record_id = $1",
        customer.id,
    )
    assert len(effects) == 1
    assert (await env.redis.xpending(EVENT_STREAM, group))["pending"] == 0


async def _stream_with(env: Env, n: int) -> tuple[str, list[uuid.UUID]]:
    """A fresh stream with `n` events (consumer tests need no relay)."""
    stream = f"test:events:{os.urandom(4).hex()}"
    ids = []
    for i in range(n):
        event = Event(
            id=uuid.uuid4(),
            type="customer.updated",
            occurred_at="2026-11-29T00:00:00Z",  # type: ignore[arg-type]
            aggregate_type="customer",
            aggregate_id=1000 + i,
            data={"n": i},
        )
        await env.redis.xadd(
            stream, {"id": str(event.id), "type": event.type, "event": event.model_dump_json()}
        )
        ids.append(event.id)
    return stream, ids


async def test_dead_consumers_pending_entry_is_claimed_and_handled(env: Env) -> None:
    stream, ids = await _stream_with(env, 2)
    started = asyncio.Event()
    never = asyncio.Event()

    async def stuck(event: Event) -> None:
        started.set()
        await never.wait()  # dies (is cancelled) in the middle of its work

    dying = EventConsumer(env.redis, "g", "dying", stuck, stream=stream, start_id="0", count=1)
    task = asyncio.create_task(dying.poll(block_ms=10))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pending = await env.redis.xpending_range(stream, "g", "-", "+", 10)
    assert [p["consumer"] for p in pending] == [b"dying"]

    seen: list[uuid.UUID] = []

    async def record(event: Event) -> None:
        seen.append(event.id)

    other = EventConsumer(
        env.redis, "g", "other", record, stream=stream, claim_idle_ms=200, block_ms=10
    )
    await other.poll()  # the entry is not idle long enough yet: only the next one
    assert seen == [ids[1]]
    await asyncio.sleep(0.3)
    other._last_claim = 0.0  # a claim is due now (normally every claim_every_s)
    await other.poll()
    assert seen == [ids[1], ids[0]] and other.claimed == 1
    assert (await env.redis.xpending(stream, "g"))["pending"] == 0


async def test_poison_message_is_dead_lettered_after_max_deliveries(env: Env) -> None:
    stream, (event_id,) = await _stream_with(env, 1)
    dead = f"{stream}:dead"
    calls = 0

    async def fails(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise Boom("cannot handle")

    consumer = EventConsumer(
        env.redis, "g", "c", fails, stream=stream, start_id="0", claim_idle_ms=20,
        claim_every_s=0, max_deliveries=3, dead_stream=dead, block_ms=10,
    )  # fmt: skip
    for _ in range(20):
        await consumer.poll()
        if consumer.dead:
            break
        await asyncio.sleep(0.03)
    assert calls == 3 and consumer.dead == 1
    ((_, fields),) = await env.redis.xrange(dead, "-", "+")
    assert fields[b"id"] == str(event_id).encode() and fields[b"deliveries"] == b"4"
    assert (await env.redis.xpending(stream, "g"))["pending"] == 0


async def test_group_is_created_once_and_restarted_consumer_rereads_its_pending(
    env: Env,
) -> None:
    stream, ids = await _stream_with(env, 1)
    await EventConsumer(env.redis, "g", "a", _ignore, stream=stream, start_id="0").ensure_group()
    await EventConsumer(env.redis, "g", "a", _ignore, stream=stream).ensure_group()  # kept
    await env.redis.xreadgroup("g", "a", {stream: ">"})  # delivered, then "a" restarts
    seen: list[uuid.UUID] = []

    async def record(event: Event) -> None:
        seen.append(event.id)

    again = EventConsumer(env.redis, "g", "a", record, stream=stream, block_ms=10)
    await again.poll()
    assert seen == ids
    assert (await env.redis.xpending(stream, "g"))["pending"] == 0


async def test_a_batch_handler_gets_a_read_at_once_and_a_bad_event_only_holds_itself(
    env: Env,
) -> None:
    stream, ids = await _stream_with(env, 5)
    calls: list[list[uuid.UUID]] = []

    async def batch(events: list[Event]) -> None:
        calls.append([e.id for e in events])
        if ids[2] in calls[-1]:
            raise Boom("event 2 cannot be handled")

    consumer = EventConsumer(
        env.redis, "g", "c", batch_handler=batch, stream=stream, start_id="0", block_ms=10
    )
    assert await consumer.poll() == 4
    # The whole read once, then (it failed) each event on its own.
    assert calls == [ids, *([i] for i in ids)]
    pending = await env.redis.xpending_range(stream, "g", "-", "+", 10)
    assert len(pending) == 1 and consumer.failed == 1 and consumer.handled == 4
    calls.clear()
    stream2, ids2 = await _stream_with(env, 3)
    good = EventConsumer(
        env.redis, "g", "c", batch_handler=batch, stream=stream2, start_id="0", block_ms=10
    )
    assert await good.poll() == 3 and calls == [ids2]  # one call, all acknowledged
    assert (await env.redis.xpending(stream2, "g"))["pending"] == 0
    with pytest.raises(ValueError, match="exactly one"):
        EventConsumer(env.redis, "g", "c", _ignore, batch_handler=batch)


async def test_types_a_group_does_not_handle_are_acknowledged_unread(env: Env) -> None:
    """A consumer with `types` acknowledges the other entries by their `type` field,
    in one XACK, without parsing them: an unreadable body of another type is not
    dead-lettered, and the wanted one is handled."""
    stream, ids = await _stream_with(env, 1)  # a customer.updated
    await env.redis.xadd(stream, {"id": "x", "type": "deal.won", "event": "not json"})
    await env.redis.xadd(stream, {"id": "y", "type": "ticket.created", "event": "{"})
    seen: list[uuid.UUID] = []

    async def record(event: Event) -> None:
        seen.append(event.id)

    consumer = EventConsumer(
        env.redis, "g", "c", record, stream=stream, start_id="0", block_ms=10,
        types={"customer.updated"},
    )  # fmt: skip
    assert await consumer.poll() == 1
    assert seen == ids and consumer.dead == 0 and consumer.failed == 0
    assert (await env.redis.xpending(stream, "g"))["pending"] == 0


async def _ignore(event: Event) -> None:
    return None


async def test_emit_direct_and_processed_events_table(env: Env) -> None:
    """`first_time` is true once per (consumer, event) and rolls back with its
    transaction."""
    shard = env.shards.place()
    event_id = uuid.uuid4()

    async def mark_then_fail(conn: WriteConn) -> None:
        assert await first_time(conn, "x", event_id)
        raise Boom

    with pytest.raises(Boom):
        await env.shards.write(shard, mark_then_fail)
    assert await env.shards.write(shard, first_time, "x", event_id)
    assert not await env.shards.write(shard, first_time, "x", event_id)
    assert await env.shards.write(shard, first_time, "y", event_id)

    async def emit_one(conn: WriteConn) -> uuid.UUID:
        return await emit(conn, "customer.updated", "customer", 42 << 22 | shard << 12, {})

    assert isinstance(await env.shards.write(shard, emit_one), uuid.UUID)


async def test_cleanup_deletes_only_sent_rows_and_marks_past_retention(env: Env) -> None:
    shard = env.shards.place()
    server = env.shards.map.server_for_shard(shard).name
    relay = env.relay(server)
    while await relay.publish_once():
        pass
    sent = await env.shards.write(
        shard, repo.create_customer, shard, CustomerCreate(name="old news"), None, None
    )
    while await relay.publish_once():
        pass
    unsent = await env.shards.write(
        shard, repo.create_customer, shard, CustomerCreate(name="still news"), None, None
    )
    await env.sql(
        server, "UPDATE outbox SET sent_at = now() - interval '2 days' WHERE aggregate_id = $1",
        sent.id,
    )  # fmt: skip
    old_mark, new_mark = uuid.uuid4(), uuid.uuid4()
    assert await env.shards.write(shard, first_time, "cleanup", old_mark)
    assert await env.shards.write(shard, first_time, "cleanup", new_mark)
    await env.sql(
        server,
        "UPDATE processed_events SET processed_at = now() - interval '40 days' WHERE event_id = $1",
        old_mark,
    )
    day = 24 * 3600.0
    cleaner = Relay(
        env.shards.map.servers[server],
        manager_for=env.manager_for,
        redis=env.redis,
        databases=("customer",),
        settings=env.settings.model_copy(
            update={"outbox_retention_s": day, "processed_events_retention_s": 30 * day}
        ),
    )
    assert await cleaner.cleanup_once() >= 2
    assert await _outbox(env, server, sent.id) == []
    assert len(await _outbox(env, server, unsent.id)) == 1  # unsent rows are never deleted
    marks = await env.sql(
        server, "SELECT event_id FROM processed_events WHERE consumer = 'cleanup'"
    )
    assert [m["event_id"] for m in marks] == [new_mark]


async def _sent_within(env: Env, server: str, customer_id: int, timeout_s: float) -> float:
    """Seconds until every outbox row of `customer_id` is marked sent."""
    began = asyncio.get_running_loop().time()
    while True:
        rows = await _outbox(env, server, customer_id)
        waited = asyncio.get_running_loop().time() - began
        if rows and all(r["sent_at"] is not None for r in rows):
            return waited
        assert waited < timeout_s, f"not published within {timeout_s} s"
        await asyncio.sleep(0.05)


def _waking_relay(env: Env, idle_poll_s: float, **kw: Any) -> tuple[int, str, Relay]:
    """A new customer's shard, its server, and a relay of that server that passes at
    most every 0.05 s and looks everywhere every `idle_poll_s` with no write."""
    shard = env.shards.place()
    server = env.shards.map.server_for_shard(shard).name
    settings = env.settings.model_copy(
        update={"outbox_poll_interval_s": 0.05, "outbox_idle_poll_s": idle_poll_s}
    )
    return shard, server, env.relay(server, settings=settings, **kw)


async def test_a_write_wakes_the_relay_and_an_idle_relay_does_not_poll(env: Env) -> None:
    shard, server, relay = _waking_relay(env, idle_poll_s=60.0)
    await relay.start()
    try:
        await asyncio.sleep(1.0)  # its first passes publish what earlier tests left
        passes = relay.stats()["passes"]
        await asyncio.sleep(1.0)
        assert relay.stats()["passes"] == passes  # idle: no pass for the idle poll's 60 s
        customer = await env.shards.write(
            shard, repo.create_customer, shard, CustomerCreate(name="woken"), None, None
        )
        # Published at the write, not at the next idle poll 60 s away.
        assert await _sent_within(env, server, customer.id, timeout_s=10) < 10
        assert relay.stats()["passes"] > passes
    finally:
        await relay.stop()


async def test_rows_no_write_announced_are_published_by_the_idle_poll(env: Env) -> None:
    shard, server, relay = _waking_relay(env, idle_poll_s=2.0)
    # Written through another manager of the server (another process, as after a
    # restart): the relay's manager never hears of it.
    other = ShardManager(env.shards.map.servers[server])
    await relay.start()
    try:
        await asyncio.sleep(1.0)  # past its first passes, waiting on its manager
        customer, _ = await other.run(
            "customer", repo.create_customer, (shard, CustomerCreate(name="quiet"), None, None),
            {}, False,
        )  # fmt: skip
        assert await _sent_within(env, server, customer.id, timeout_s=10) < 10
    finally:
        await relay.stop()
        await other.close()


class _Switch:
    """A Redis client whose target a test can swap (Redis going away and coming back)."""

    def __init__(self, target: aioredis.Redis) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


async def test_a_pass_that_failed_is_tried_again_without_waiting_for_a_write(env: Env) -> None:
    dead = aioredis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    redis = _Switch(dead)
    shard, server, relay = _waking_relay(env, idle_poll_s=60.0, redis=redis)
    customer = await env.shards.write(
        shard, repo.create_customer, shard, CustomerCreate(name="retried"), None, None
    )
    await relay.start()
    try:
        await asyncio.sleep(1.0)
        (row,) = await _outbox(env, server, customer.id)
        assert row["sent_at"] is None and relay.failed == ("customer",)
        redis.target = env.redis  # Redis is back; no write announces anything
        assert await _sent_within(env, server, customer.id, timeout_s=10) < 10
        assert relay.failed == ()
    finally:
        await relay.stop()
        await dead.aclose()
