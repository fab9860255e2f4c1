"""The outbox relay: one Ray actor per shard server moves stored events to Redis.

Every sharded database has an `outbox` table (`deployments/_kit/events.py`,
`_sharded/0003_outbox.sql`) that repo functions append to in the same transaction as
their change. The relay of a server loops over the sharded databases on it:

1. read up to `outbox_batch_size` unsent rows of the logical shards the server owns,
   in id order (`WHERE sent_at IS NULL ORDER BY id LIMIT n`, on the primary);
2. `XADD` each to `EVENT_STREAM` (fields `id` = event id, `type`, `event` = the Event
   JSON, `shards/outbox.py`), in that order, in one pipeline, once the consumer groups
   the deployment declares (`event_consumer_groups`) exist: no event is published
   before a group is there to keep it;
3. `UPDATE outbox SET sent_at = now() WHERE id = ANY(...)`;
4. wait for a reason to look again: its `ShardManager` answers a long poll
   (`next_commits`) when a write commits there, and the next pass reads the databases
   written since; with no write for `outbox_idle_poll_s`, it reads them all (rows no
   write announced: a shard moved in, a restarted manager). Passes stay at least
   `outbox_poll_interval_s` apart, and a database whose pass failed (Redis or
   PostgreSQL refused) is tried again after that interval without waiting. So an
   event leaves at once on a quiet server, an idle relay costs a query every few
   seconds, not four a second per database, and the fallback pass keeps the
   guarantee below without trusting the wake-ups.

Guarantees. Nothing is lost: a row is marked only after Redis accepted it, and a
rollback never leaves a row behind. Nothing is re-ordered per aggregate: one relay
per server publishes one database's rows in id order, and two writes to one
aggregate are serialised by its row lock, so the later one's event gets the later id
and commits after the earlier one. A crash between steps 2 and 3 publishes the batch
again when the relay (restarted by Ray, `max_restarts=-1`) comes back: consumers see
a duplicate, never a gap, and de-duplicate by event id (`deployments/_kit/consumer.py`).

Connections: the relay opens none of its own to PostgreSQL. It hands small repo
functions to its server's `ShardManager` (`run`), so its reads and marks use the
manager's bounded pools like any service call; each call names the owned logical
shards (`route`), so a shard that moved away is refused and the relay re-reads the
map. It holds one Redis connection.

Who starts it: `ensure_relays(map)`, called by `Shards.connect` (every sharded
service replica's start) and by `Shards.reload` when a server appears. The actor is
named and detached with `get_if_exists`, so the first replica creates it and the
others find it; it starts its loop in its own (async) constructor, so a restart by Ray
resumes publishing with nobody calling it. It also deletes sent rows older than
`outbox_retention_s` and `processed_events` rows older than
`processed_events_retention_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import ray
import redis.asyncio as aioredis
from ray.exceptions import RayActorError
from ray.util import metrics

from cluster import logs, redis_client
from cluster.batching import Outcome
from cluster.settings import Settings, get_settings
from shards import consistency
from shards.connections import ReadConn, WriteConn
from shards.databases import SHARDED_DATABASES
from shards.errors import ShardUnavailable, StaleShardMap
from shards.ids import shard_sql
from shards.manager import NAMESPACE, ShardCall, manager_handle
from shards.outbox import EVENT_STREAM, Event, ensure_groups
from shards.routing import ServerSpec, ShardMap

log = logging.getLogger("nextflow.relay")
_CLEANUP_BATCH = 5000
_GROUPS_CHECK_S = 60.0  # how often a publishing relay makes sure the consumer groups exist
_MAP_REFRESH_S = 5.0

outbox_backlog = metrics.Gauge(
    "nextflow_outbox_backlog",
    description="Unsent outbox rows of the server's owned logical shards, at the last poll.",
    tag_keys=("server", "database"),
)
relay_lag = metrics.Gauge(
    "nextflow_relay_lag_seconds",
    description="Age of the oldest event not yet published by the server's relay (0: none).",
    tag_keys=("server",),
)
events_published = metrics.Counter(
    "nextflow_events_published",
    description="Events the relay added to the stream (a re-send after a crash counts again).",
    tag_keys=("server", "database"),
)


def actor_name(server: str) -> str:
    return f"outbox-relay:{server}"


# -- repo functions, run by the ShardManager ------------------------------------------
async def fetch_unsent(
    conn: ReadConn, shards: list[int], limit: int
) -> tuple[list[dict[str, Any]], int, float]:
    """Up to `limit` unsent events of `shards` in id order, the backlog (unsent rows
    then) and the age in seconds of the oldest of them (0.0 with none)."""
    rows = await conn.fetch(
        f"""SELECT id, event_id, type, version, aggregate_type, aggregate_id, actor_id, data,
                  occurred_at, extract(epoch FROM clock_timestamp() - occurred_at) AS age
           FROM outbox
           WHERE sent_at IS NULL AND {shard_sql("id")} = ANY($1::int[])
           ORDER BY id LIMIT $2""",
        shards,
        limit,
    )
    backlog = len(rows)
    if backlog == limit:
        backlog = int(
            await conn.fetchval(
                f"SELECT count(*) FROM outbox"
                f" WHERE sent_at IS NULL AND {shard_sql('id')} = ANY($1::int[])",
                shards,
            )
        )
    age = float(rows[0]["age"]) if rows else 0.0
    return [dict(r) for r in rows], backlog, age


async def mark_sent(conn: WriteConn, ids: list[int]) -> int:
    status = await conn.execute(
        "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[]) AND sent_at IS NULL", ids
    )
    return int(status.split()[-1])


async def delete_old(
    conn: WriteConn, shards: list[int], outbox_retention_s: float, processed_retention_s: float
) -> int:
    """One batch of sent outbox rows (of `shards`) and processed-event marks older than
    their retentions. Returns how many rows went."""
    gone = await conn.execute(
        f"""DELETE FROM outbox WHERE id IN (
               SELECT id FROM outbox
               WHERE sent_at < now() - make_interval(secs => $1)
                 AND {shard_sql("id")} = ANY($2::int[])
               LIMIT {_CLEANUP_BATCH})""",
        outbox_retention_s,
        shards,
    )
    marks = await conn.execute(
        f"""DELETE FROM processed_events WHERE ctid IN (
               SELECT ctid FROM processed_events
               WHERE processed_at < now() - make_interval(secs => $1) LIMIT {_CLEANUP_BATCH})""",
        processed_retention_s,
    )
    return int(gone.split()[-1]) + int(marks.split()[-1])


def event_json(row: dict[str, Any]) -> str:
    """The Event envelope of one outbox row, as JSON (what consumers parse)."""
    occurred = row["occurred_at"]
    if isinstance(occurred, datetime) and occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    return Event(
        id=row["event_id"],
        type=row["type"],
        version=row["version"],
        occurred_at=occurred,
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        actor_id=row["actor_id"],
        data=row["data"],
    ).model_dump_json()


def stream_fields(row: dict[str, Any]) -> dict[str, str]:
    return {"id": str(row["event_id"]), "type": row["type"], "event": event_json(row)}


# -- the relay -----------------------------------------------------------------------
@dataclass
class _DbState:
    backlog: int = 0
    oldest_age_s: float = 0.0
    published: int = 0
    last_publish: float | None = None  # unix time
    last_error: str | None = None


@dataclass
class _Crash:
    """Test seam (off unless armed): die after publishing a batch of `database`,
    before marking it sent."""

    database: str | None = None
    armed: bool = False
    fired: int = field(default=0)


@dataclass(frozen=True)
class _Commits:
    """What a relay last heard of its manager's commits (`ShardManager.next_commits`)."""

    epoch: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


class Relay:
    """Publishes one server's outbox rows. As a Ray actor (`relay_handle`) it runs its
    loop from its constructor; in-process (tests) call `publish_once()` or `start()`."""

    def __init__(
        self,
        server: ServerSpec,
        *,
        manager_for: Callable[[ServerSpec], Any] = manager_handle,
        redis: aioredis.Redis | None = None,
        databases: Iterable[str] = SHARDED_DATABASES,
        settings: Settings | None = None,
        on_crash: Callable[[], None] | None = None,
        groups: Iterable[str] | None = None,
    ) -> None:
        """`groups`: the consumer groups made sure of before publishing (default: the
        settings' `event_consumer_groups`)."""
        logs.configure()
        self._settings = settings or get_settings()
        s = self._settings
        self._server = server
        self._manager = manager_for(server)
        catalog = s.catalog_address()
        self._catalog = manager_for(ServerSpec("catalog", catalog.host, catalog.port))
        self._redis = redis or redis_client.connect(
            s.redis_url, socket_timeout=5, connect_timeout=5
        )
        self._databases = tuple(databases)
        self._state = {db: _DbState() for db in self._databases}
        self._map: ShardMap | None = None
        self._map_loaded = 0.0
        self._last_cleanup = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._crash = _Crash()
        self._on_crash = on_crash or _die
        self._loops = 0
        self._groups = tuple(groups if groups is not None else s.event_consumer_groups)
        self._groups_checked = -_GROUPS_CHECK_S
        self.failed: tuple[str, ...] = ()  # databases whose last pass did not finish

    # -- ownership ------------------------------------------------------------------
    async def _owned(self, force: bool = False) -> tuple[list[int], dict[int, int]]:
        from shards.client import load_shard_map

        now = time.monotonic()
        if force or self._map is None or now - self._map_loaded > _MAP_REFRESH_S:
            value, _ = await self._catalog.run.remote(
                "catalog", load_shard_map, (), {}, True, consistency.PRIMARY_ONLY
            )
            self._map, self._map_loaded = value, now
        assert self._map is not None
        owned = self._map.shards_on(self._server.name)
        return owned, self._map.route(owned)

    async def _run(
        self,
        database: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        readonly: bool,
        route: dict[int, int],
    ) -> Any:
        min_lsn = consistency.PRIMARY_ONLY if readonly else None
        value, _ = await self._manager.run.remote(
            database, fn, args, {}, readonly, min_lsn, route=route
        )
        return value

    # -- one pass -------------------------------------------------------------------
    async def publish_once(self, databases: Iterable[str] | None = None) -> int:
        """One batch per database (of `databases`, default all). Returns how many
        events were published; `self.failed` names the databases to try again."""
        databases = self._databases if databases is None else tuple(databases)
        self._loops += 1
        self.failed = databases
        try:
            owned, route = await self._owned()
        except (ShardUnavailable, RayActorError, OSError) as exc:
            log.warning("relay %s: shard map unavailable: %r", self._server.name, exc)
            return 0
        failed: list[str] = []
        if not owned:
            for db in self._databases:
                self._state[db].backlog, self._state[db].oldest_age_s = 0, 0.0
            self.failed = ()
            self._publish_metrics()
            return 0
        total = 0
        for database, unsent in zip(
            databases, await self._fetch_unsent(owned, route, databases), strict=True
        ):
            try:
                value, _ = unsent.unwrap()  # (what fetch_unsent returned, no LSN)
                total += await self._publish_database(database, value, route)
                self._state[database].last_error = None
            except StaleShardMap:
                failed.append(database)
                await self._owned(force=True)
            except Exception as exc:  # one bad database must not stop the others
                failed.append(database)
                self._state[database].last_error = repr(exc)
                log.warning("relay %s/%s: %r", self._server.name, database, exc)
        self.failed = tuple(failed)
        self._publish_metrics()
        return total

    async def _fetch_unsent(
        self, owned: list[int], route: dict[int, int], databases: tuple[str, ...]
    ) -> list[Outcome]:
        """Each database's next batch, all in one actor call."""
        calls = [
            ShardCall(
                (
                    db,
                    fetch_unsent,
                    (owned, self._settings.outbox_batch_size),
                    {},
                    True,
                    consistency.PRIMARY_ONLY,
                ),
                route=route,
            )  # fmt: skip
            for db in databases
        ]
        try:
            outcomes: list[Outcome] = await self._manager.run_batch.remote(calls)
        except Exception as exc:  # the manager restarting: every database failed
            return [Outcome(error=exc) for _ in databases]
        return outcomes

    async def _publish_database(
        self,
        database: str,
        unsent: tuple[list[dict[str, Any]], int, float],
        route: dict[int, int],
    ) -> int:
        s = self._settings
        state = self._state[database]
        rows, backlog, age = unsent
        state.backlog, state.oldest_age_s = backlog, age
        if not rows:
            return 0
        if time.monotonic() - self._groups_checked > _GROUPS_CHECK_S:
            # Before the first event (and now and then: a Redis that lost its data
            # loses the groups too), so that no event is published with no group to
            # keep it for a service whose replicas are not up yet.
            await ensure_groups(self._redis, self._groups)
            self._groups_checked = time.monotonic()
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.xadd(
                    EVENT_STREAM,
                    stream_fields(row),  # type: ignore[arg-type]
                    maxlen=s.event_stream_maxlen,
                    approximate=True,
                )
            await pipe.execute()
        events_published.inc(len(rows), tags={"server": self._server.name, "database": database})
        if self._crash.armed and self._crash.database in (None, database):
            self._crash.armed = False
            self._crash.fired += 1
            log.warning("relay %s: crashing after send, before mark (test seam)", self._server.name)
            self._on_crash()
        await self._run(database, mark_sent, ([r["id"] for r in rows],), False, route)
        state.published += len(rows)
        state.last_publish = time.time()
        state.backlog = max(0, backlog - len(rows))
        state.oldest_age_s = 0.0 if state.backlog == 0 else state.oldest_age_s
        return len(rows)

    async def cleanup_once(self) -> int:
        """Delete sent rows past the retention (one batch per database)."""
        s = self._settings
        owned, route = await self._owned()
        gone = 0
        for database in self._databases:
            try:
                gone += await self._run(
                    database,
                    delete_old,
                    (owned, s.outbox_retention_s, s.processed_events_retention_s),
                    False,
                    route,
                )
            except Exception as exc:
                log.warning("relay %s/%s cleanup: %r", self._server.name, database, exc)
        return int(gone)

    def _publish_metrics(self) -> None:
        server = self._server.name
        for database, state in self._state.items():
            outbox_backlog.set(state.backlog, tags={"server": server, "database": database})
        relay_lag.set(
            max((st.oldest_age_s for st in self._state.values()), default=0.0),
            tags={"server": server},
        )

    # -- the loop -------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        s = self._settings
        databases, seen = self._databases, _Commits()
        while True:
            began = time.monotonic()
            try:
                published = await self.publish_once(databases)
                if time.monotonic() - self._last_cleanup > s.outbox_cleanup_interval_s:
                    self._last_cleanup = time.monotonic()
                    await self.cleanup_once()
            except Exception as exc:  # the loop must outlive any one bad pass
                published = 0
                log.warning("relay %s: %r", self._server.name, exc)
            if published >= s.outbox_batch_size:  # a full batch: go on at once
                continue
            if self.failed:  # Redis or the database refused: again at the next interval
                databases = self.failed
            else:
                databases, seen = await self._next_pass(seen)
            # However often writes wake it, passes stay `outbox_poll_interval_s` apart.
            await asyncio.sleep(max(0.0, began + s.outbox_poll_interval_s - time.monotonic()))

    async def _next_pass(self, seen: _Commits) -> tuple[tuple[str, ...], _Commits]:
        """Waits for a reason to look again, and says where: at the first write that
        commits through the server's manager, the databases written since `seen`; after
        `outbox_idle_poll_s` with none, every database (rows no write here announced:
        a shard moved in, a manager restarted, a tool's own SQL)."""
        s = self._settings
        try:
            epoch, counts = await self._manager.next_commits.remote(
                seen.epoch, seen.counts, s.outbox_idle_poll_s
            )
        except Exception as exc:  # the manager restarting: look everywhere, soon
            log.warning("relay %s: waiting for commits: %r", self._server.name, exc)
            await asyncio.sleep(s.outbox_poll_interval_s)
            return self._databases, _Commits()
        now = _Commits(epoch, counts)
        if epoch != seen.epoch:
            return self._databases, now
        written = tuple(db for db in self._databases if counts.get(db, 0) != seen.counts.get(db, 0))
        return written or self._databases, now

    # -- operations -----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "server": self._server.name,
            "running": self._task is not None and not self._task.done(),
            "passes": self._loops,
            "pid": os.getpid(),
            "crashes_fired": self._crash.fired,
            "databases": {
                db: {
                    "backlog": st.backlog,
                    "oldest_age_s": round(st.oldest_age_s, 3),
                    "published": st.published,
                    "last_publish": st.last_publish,
                    "last_error": st.last_error,
                }
                for db, st in self._state.items()
            },
        }

    def arm_crash_after_send(self, database: str | None = None) -> None:
        """Fault seam for tests: the next batch (of `database`, or any) is published and
        then the process dies before marking it sent. Off unless called."""
        self._crash.database, self._crash.armed = database, True

    def disarm(self) -> None:
        self._crash.armed = False


def _die() -> None:
    os._exit(1)  # a real crash: Ray restarts the actor, which re-reads unsent rows


class _RelayActor(Relay):
    """The actor: its async constructor starts the loop, also after a restart."""

    async def __init__(self, server: ServerSpec) -> None:  # type: ignore[misc]
        super().__init__(server)
        await self.start()


RelayActor = ray.remote(_RelayActor)


def relay_handle(server: ServerSpec) -> Any:
    """The named, detached relay of `server`, created on first use by anyone."""
    return RelayActor.options(
        name=actor_name(server.name),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        num_cpus=0,
    ).remote(server)


def ensure_relays(shard_map: ShardMap, only: Iterable[str] | None = None) -> None:
    """Make sure every shard server of the map (or those in `only`) has its relay."""
    names = set(only) if only is not None else set(shard_map.servers)
    for name, spec in shard_map.servers.items():
        if name in names:
            try:
                relay_handle(spec)
            except Exception as exc:  # never keep a service from starting
                log.warning("relay %s: could not be started: %r", name, exc)
