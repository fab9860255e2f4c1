"""Analytics logic: permissions, the Redis cache, and each report as Ray tasks per
logical shard (ai/fanout.py) reduced here. No SQL here (repo.py),
no Serve (app.py).

Cache: `nextflow:reports:<name>:<generation>:<query>` for `report_cache_ttl_s`. Each
report has a generation counter (`nextflow:reports:gen:<name>`) that the event
consumer bumps when an event changes what the report counts (`reports.AFFECTS`), so
a cached answer is never served after such an event has been handled. The bump is
repeated once `max_replica_lag_s` later: a report computed in between may have read
a standby that had not replayed the change yet."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ai.fanout import FanOut, ServerResult
from deployments._kit.events import Event
from deployments.analytics import repo
from deployments.analytics.reports import (
    AFFECTS,
    BY_PIPELINE,
    REPORTS,
    ReportQuery,
    ReportRead,
    TaskInfo,
    funnel_deal_ids,
    reduce_activity,
    reduce_funnel,
    reduce_pipeline,
    reduce_revenue,
    reduce_sla,
)
from gateway.errors import NotFound, Validation
from gateway.principal import Principal
from shards.client import Database, Shards

log = logging.getLogger("nextflow.analytics")
CACHE_PREFIX = "nextflow:reports:"
ACTIVITY_DATABASES = ("customer", "sales", "marketing", "support")


def generation_key(name: str) -> str:
    return f"{CACHE_PREFIX}gen:{name}"


def _tasks(results: list[ServerResult]) -> list[TaskInfo]:
    return [
        TaskInfo(
            shards=r.shards,
            server=r.server,
            task_id=r.runtime.task_id,
            node_id=r.runtime.node_id,
            resources=r.runtime.resources,
        )
        for r in results
    ]


class AnalyticsService:
    def __init__(
        self,
        shards: Shards,
        sales_config: Database,
        redis: aioredis.Redis,
        cache_ttl_s: float,
        replica_lag_s: float,
    ) -> None:
        self.shards = shards
        self.sales_config = sales_config
        self.redis = redis
        self.cache_ttl_s = cache_ttl_s
        self.replica_lag_s = replica_lag_s
        self._later: set[asyncio.Task[None]] = set()

    # -- reports ----------------------------------------------------------------------
    async def report(self, principal: Principal, name: str, query: ReportQuery) -> ReportRead:
        principal.require("report:read")
        query = query.within_scope(principal)
        if name not in REPORTS:
            raise NotFound(f"no report named {name!r}; reports: {', '.join(REPORTS)}")
        if query.pipeline_id is not None and name not in BY_PIPELINE:
            message = f"pipeline_id does not apply to the {name} report"
            raise Validation(message, [{"field": "pipeline_id", "message": message}])
        key = await self._cache_key(name, query)
        if key is not None:
            cached = await self._cache_get(key)
            if cached is not None:
                return cached.model_copy(update={"cached": True})
        fresh = await self.compute(name, query)
        if key is not None:
            await self._cache_put(key, fresh)
        return fresh

    async def compute(
        self, name: str, query: ReportQuery, fanout: FanOut | None = None
    ) -> ReportRead:
        """The report from the shards now (no cache)."""
        fanout = fanout or FanOut(self.shards)
        f = query.shard_filters()
        n = self.shards.map.logical_shards
        results: list[ServerResult]
        if name == "pipeline":
            results, stages = await asyncio.gather(
                fanout.each_server(lambda s: [("sales", repo.pipeline_by_stage, (s, n, f))]),
                self.sales_config.read(repo.stage_names),
            )
            data = reduce_pipeline((r.values[0] for r in results), stages)
        elif name == "revenue":
            results = await fanout.each_server(lambda s: [("sales", repo.revenue_won, (s, n, f))])
            data = reduce_revenue(r.values[0] for r in results)
        elif name == "funnel":
            results = await fanout.each_server(
                lambda s: [("marketing", repo.funnel_leads, (s, n, f))]
            )
            partials = [r.values[0] for r in results]
            # The deals conversions opened live on their customers' shards: a second
            # round of tasks, one per server holding any of them.
            by_shard: dict[int, list[int]] = defaultdict(list)
            for deal_id in funnel_deal_ids(partials):
                by_shard[self.shards.map.shard_for_id(deal_id)].append(deal_id)
            won_results = await fanout.each_server(
                lambda ss: [("sales", repo.deals_won_among,
                             (ss, [d for s in ss for d in by_shard[s]]))],
                only=by_shard,
            )  # fmt: skip
            results = results + won_results
            data = reduce_funnel(partials, sum(r.values[0] for r in won_results))
        elif name == "sla":
            results = await fanout.each_server(lambda s: [("support", repo.ticket_sla, (s, n, f))])
            data = reduce_sla(r.values[0] for r in results)
        elif name == "activity":
            results = await fanout.each_server(
                lambda s: [(db, repo.activity, (s, n, f)) for db in ACTIVITY_DATABASES]
            )
            data = reduce_activity(rows for r in results for rows in r.values)
        else:  # pragma: no cover - checked by report()
            raise NotFound(f"no report named {name!r}")
        return ReportRead(
            report=name,
            filters=query.model_dump(mode="json", exclude_none=True),
            data=data,
            generated_at=datetime.now(UTC),
            tasks=_tasks(results),
        )

    # -- cache ------------------------------------------------------------------------
    async def _cache_key(self, name: str, query: ReportQuery) -> str | None:
        if self.cache_ttl_s <= 0:
            return None
        try:
            generation = await self.redis.get(generation_key(name))
        except RedisError as exc:  # no cache, still an answer
            log.warning("report cache unavailable: %s", exc)
            return None
        gen = int(generation or 0)
        return f"{CACHE_PREFIX}{name}:{gen}:{query.cache_key()}"

    async def _cache_get(self, key: str) -> ReportRead | None:
        try:
            raw = await self.redis.get(key)
        except RedisError:
            return None
        return None if raw is None else ReportRead.model_validate_json(raw)

    async def _cache_put(self, key: str, report: ReportRead) -> None:
        try:
            await self.redis.set(key, report.model_dump_json(), px=int(self.cache_ttl_s * 1000))
        except RedisError as exc:
            log.warning("report cache unavailable: %s", exc)

    async def invalidate(self, names: list[str]) -> None:
        """A new generation for `names` (their cached answers are no longer read)."""
        if not names:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.incr(generation_key(name))
            await pipe.execute()

    async def handle(self, event: Event) -> list[str]:
        """Drop the cached reports `event` can change; returns their names."""
        return await self.handle_all([event])

    async def handle_all(self, events: list[Event]) -> list[str]:
        """Drop the cached reports any of `events` can change, each once for the lot
        (the consumer's batch handler: one Redis round trip for a read of the stream,
        not one per event); returns their names."""
        names = sorted({n for e in events for n in AFFECTS.get(e.type.partition(".")[0], ())})
        if not names:
            return []
        await self.invalidate(names)
        later = asyncio.get_running_loop().create_task(self._again(names))
        self._later.add(later)
        later.add_done_callback(self._later.discard)
        return names

    async def _again(self, names: list[str]) -> None:
        await asyncio.sleep(self.replica_lag_s)
        try:
            await self.invalidate(names)
        except RedisError as exc:
            log.warning("report cache: second invalidation failed: %s", exc)
