"""Reading the event stream: consumer groups, acknowledgement after handling, claims
of entries a dead consumer left pending, poison messages, exactly-once effects.

    consumer = EventConsumer(redis, group="notification", name=replica_id, handler=svc.handle)
    await consumer.run()          # until consumer.stop()

Delivery is at-least-once: an entry is acknowledged (`XACK`) only after the handler
returned, so a consumer that dies mid-way leaves it pending; any consumer of the group
takes it over (`XAUTOCLAIM`) once it has been idle `claim_idle_ms`, and a consumer
restarted under the same name first re-reads its own pending entries. A handler that
raises leaves the entry pending too: it is retried after `claim_idle_ms`, and after
`max_deliveries` deliveries it is a poison message: logged, copied to the dead-letter
stream `DEAD_STREAM` and acknowledged, so it does not block the group for ever.

Effects are exactly-once when the handler applies them in one database transaction
that also calls `first_time(conn, consumer, event.id)` and skips the effect when it
returns False (the table `processed_events`, `_sharded/0004_processed_events.sql`).
An effect outside a database (an e-mail, a webhook call) is at-least-once: key it by
the event id where the receiver allows (webhooks carry it in a header).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from shards import WriteConn
from shards.outbox import EVENT_STREAM, Event, ensure_groups

log = logging.getLogger("nextflow.events")
DEAD_STREAM = "nextflow:events:dead"
Handler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[list[Event]], Awaitable[None]]


async def first_time(conn: WriteConn, consumer: str, event_id: uuid.UUID) -> bool:
    """True the first time `consumer` sees `event_id`; call it inside the transaction
    of the effect and skip the effect on False. The mark commits or rolls back with
    the effect (a concurrent duplicate waits on the key, then sees it taken)."""
    row = await conn.fetchval(
        """INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING 1""",
        consumer,
        event_id,
    )
    return row is not None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def parse_entry(fields: dict[str, str]) -> Event:
    """The Event in a stream entry (`event` field); ValueError when it has none or it
    does not parse."""
    body = fields.get("event")
    if body is None:
        raise ValueError("entry has no `event` field")
    try:
        return Event.model_validate_json(body)
    except ValidationError as exc:
        raise ValueError(f"unreadable event: {exc.error_count()} errors") from exc


class EventConsumer:
    """One member (`name`) of a consumer group (`group`) on the event stream."""

    def __init__(
        self,
        redis: aioredis.Redis,
        group: str,
        name: str,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        stream: str = EVENT_STREAM,
        start_id: str = "$",
        types: Iterable[str] | None = None,
        count: int = 50,
        block_ms: int = 1000,
        linger_ms: int = 0,
        claim_idle_ms: int = 30_000,
        claim_every_s: float = 5.0,
        max_deliveries: int = 5,
        dead_stream: str = DEAD_STREAM,
    ) -> None:
        """`start_id`: where a new group starts (`$`: only new events; `0`: the whole
        stream). `types`: handle only these event types (others are acknowledged).

        Give `handler` (one event at a time, each acknowledged after it) or
        `batch_handler`: every event of a read (up to `count`) in one call, all
        acknowledged after it returns; when it raises, the events are handed to it
        again one by one, so one bad event leaves only itself pending. `linger_ms`: when
        a read brings fewer than `count`, wait this long for more before handling them
        (fewer, larger batches for a handler whose cost is mostly per call, such as a
        Ray task per batch; the events are that much later)."""
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self.redis = redis
        self.group = group
        self.name = name
        self.handler: Handler = handler or self._one_of_batch
        self.batch_handler = batch_handler
        self.stream = stream
        self.start_id = start_id
        self.types = frozenset(types) if types is not None else None
        self.count = count
        self.block_ms = block_ms
        self.linger_ms = linger_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_s = claim_every_s
        self.max_deliveries = max_deliveries
        self.dead_stream = dead_stream
        self.handled = 0
        self.failed = 0
        self.dead = 0
        self.claimed = 0
        self._group_ready = False
        self._history_from: str | None = "0"  # own pending entries left to re-read
        self._last_claim = 0.0
        self._stopping = asyncio.Event()

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; an existing one is kept."""
        await ensure_groups(self.redis, [self.group], self.stream, self.start_id)
        self._group_ready = True

    # -- one round -----------------------------------------------------------------
    async def poll(self, block_ms: int | None = None) -> int:
        """Claim stale entries when due, then read and handle one batch. Returns how
        many entries were handled successfully."""
        if not self._group_ready:
            await self.ensure_group()
        done = 0
        if time.monotonic() - self._last_claim >= self.claim_every_s:
            self._last_claim = time.monotonic()
            done += await self.claim()
        if self._history_from is not None:
            # After a restart under the same name: what we were given but never acked
            # (one pass; an entry that fails again waits for a claim).
            entries = await self._read(self._history_from, None)
            if entries:
                self._history_from = entries[-1][0]
                return done + await self._handle_all(entries, from_history=True)
            self._history_from = None
        entries = await self._read(">", self.block_ms if block_ms is None else block_ms)
        if entries and self.linger_ms and len(entries) < self.count:
            await asyncio.sleep(self.linger_ms / 1000)
            entries += await self._read(">", None, self.count - len(entries))
        done += await self._handle_all(entries, from_history=False)
        return done

    async def _read(
        self, start: str, block_ms: int | None, count: int | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """Up to `count` (default: the consumer's) entries from `start`; `block_ms`
        None: answer at once, even with nothing."""
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group,
                self.name,
                {self.stream: start},
                count=count or self.count,
                block=block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream or group was deleted: make it again
                self._group_ready = False
                return []
            raise
        entries: list[tuple[str, dict[str, str]]] = []
        # RESP2 (redis-py's default): [[stream, items]]; RESP3: {stream: [items]}.
        if isinstance(reply, dict):
            per_stream = [items[0] if items else [] for items in reply.values()]
        else:
            per_stream = [items for _, items in reply or []]
        for items in per_stream:
            for entry_id, raw in items:
                entries.append((_text(entry_id), _fields(raw)))
        return entries

    async def claim(self) -> int:
        """Take over entries pending longer than `claim_idle_ms` (a dead or stuck
        consumer's, or our own failed ones) and handle them."""
        handled = 0
        cursor = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.name, self.claim_idle_ms, cursor, count=self.count
            )
            cursor = _text(reply[0])
            entries = [(_text(i), _fields(raw)) for i, raw in reply[1] if raw is not None]
            if entries:
                self.claimed += len(entries)
                log.info("%s/%s claimed %d stale entries", self.group, self.name, len(entries))
                handled += await self._handle_all(entries, from_history=True)
            if cursor == "0-0" or not reply[1]:
                return handled

    async def _handle_all(
        self, entries: list[tuple[str, dict[str, str]]], *, from_history: bool
    ) -> int:
        if not entries:
            return 0
        deliveries: dict[str, int] = {}
        if from_history:
            pending = await self.redis.xpending_range(
                self.stream, self.group, entries[0][0], entries[-1][0], len(entries) + 10,
                self.name,
            )  # fmt: skip
            deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        handled = 0
        ready: list[tuple[str, Event, int]] = []
        ignored = {i for i, fields in entries if not self._wanted(fields)}
        if ignored:  # types this group does not handle: one acknowledgement, unparsed
            await self.redis.xack(self.stream, self.group, *ignored)
        for entry_id, fields in entries:
            if entry_id in ignored:
                continue
            event = await self._accept(entry_id, fields, deliveries.get(entry_id, 1))
            if event is None:
                continue
            if self.batch_handler is not None:
                ready.append((entry_id, event, deliveries.get(entry_id, 1)))
            elif await self._handle(entry_id, event, deliveries.get(entry_id, 1)):
                handled += 1
        if ready:
            handled += await self._handle_batch(ready)
        return handled

    def _wanted(self, fields: dict[str, str]) -> bool:
        """Whether an entry may be of a type this group handles, by its `type` field
        (as the relay writes it), before its event is parsed."""
        kind = fields.get("type")
        return self.types is None or kind is None or kind in self.types

    async def _accept(self, entry_id: str, fields: dict[str, str], deliveries: int) -> Event | None:
        """The entry's event when it is to be handled; otherwise it is dead-lettered
        (unreadable, delivered too often) or acknowledged (a type not handled here)."""
        try:
            event = parse_entry(fields)
        except ValueError as exc:
            await self._dead_letter(entry_id, fields, deliveries, str(exc))
            return None
        if deliveries > self.max_deliveries:
            await self._dead_letter(entry_id, fields, deliveries, "too many deliveries")
            return None
        if self.types is not None and event.type not in self.types:
            await self.redis.xack(self.stream, self.group, entry_id)
            return None
        return event

    async def _one_of_batch(self, event: Event) -> None:
        assert self.batch_handler is not None
        await self.batch_handler([event])

    async def _handle_batch(self, ready: list[tuple[str, Event, int]]) -> int:
        assert self.batch_handler is not None
        if len(ready) > 1:
            try:
                await self.batch_handler([event for _, event, _ in ready])
            except Exception as exc:
                log.warning("%s/%s: a batch of %d events failed (%r); one by one now",
                            self.group, self.name, len(ready), exc)  # fmt: skip
            else:
                await self.redis.xack(self.stream, self.group, *[i for i, _, _ in ready])
                self.handled += len(ready)
                return len(ready)
        handled = 0
        for entry_id, event, deliveries in ready:
            if await self._handle(entry_id, event, deliveries):
                handled += 1
        return handled

    async def _handle(self, entry_id: str, event: Event, deliveries: int) -> bool:
        try:
            await self.handler(event)
        except Exception as exc:
            # Left pending: retried after claim_idle_ms, dead-lettered after max_deliveries.
            self.failed += 1
            log.warning(
                "%s/%s: handler failed on %s (%s, delivery %d): %r",
                self.group, self.name, event.id, event.type, deliveries, exc,
            )  # fmt: skip
            return False
        await self.redis.xack(self.stream, self.group, entry_id)
        self.handled += 1
        return True

    async def _dead_letter(
        self, entry_id: str, fields: dict[str, str], deliveries: int, reason: str
    ) -> None:
        log.error(
            "%s/%s: entry %s (event %s) dead-lettered after %d deliveries: %s",
            self.group, self.name, entry_id, fields.get("id"), deliveries, reason,
        )  # fmt: skip
        dead = {
            **fields,
            "entry": entry_id,
            "group": self.group,
            "consumer": self.name,
            "deliveries": str(deliveries),
            "reason": reason,
        }
        await self.redis.xadd(self.dead_stream, dead, maxlen=100_000, approximate=True)  # type: ignore[arg-type]
        await self.redis.xack(self.stream, self.group, entry_id)
        self.dead += 1

    # -- the loop -------------------------------------------------------------------
    async def run(self) -> None:
        """Poll until `stop()`; Redis errors are logged and retried after a pause."""
        while not self._stopping.is_set():
            try:
                await self.poll()
            except (RedisError, OSError) as exc:
                log.warning("%s/%s: %r", self.group, self.name, exc)
                await asyncio.sleep(1.0)

    def stop(self) -> None:
        self._stopping.set()

    def stats(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "handled": self.handled,
            "failed": self.failed,
            "dead": self.dead,
            "claimed": self.claimed,
        }
