"""`AnalyticsService` as a Ray Serve deployment: reports computed by Ray tasks (one
per logical shard, each asking for the custom resource `ai`), reduced here, cached in
Redis. Every replica is a member of the consumer group `analytics` on the event
stream and drops cached reports that an event changes.

    handle = serve.get_deployment_handle("AnalyticsService", app_name="nextflow")
    report = await handle.report.remote(principal, "pipeline", ReportQuery(owner_id=7))
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ray import serve

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments._kit.consumer import EventConsumer
from deployments._kit.events import ANALYTICS_GROUP, Event
from deployments.analytics.reports import ReportQuery, ReportRead
from deployments.analytics.service import AnalyticsService as _Logic
from gateway.principal import Principal
from shards.client import Database, Shards


@serve.deployment(name="AnalyticsService")
class AnalyticsDeployment:
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        settings = get_settings()
        self._redis = redis_client.connect(settings.redis_url, socket_timeout=5)
        self._svc = _Logic(
            await Shards.connect("sales"),
            Database("sales_config"),
            self._redis,
            cache_ttl_s=settings.report_cache_ttl_s,
            replica_lag_s=settings.max_replica_lag_s,
        )
        self._consumer = EventConsumer(
            self._redis,
            group=ANALYTICS_GROUP,
            name=serve.get_replica_context().replica_id.unique_id,
            handler=self._on_event,
        )
        self._consuming = asyncio.get_running_loop().create_task(self._consumer.run())

    async def _on_event(self, event: Event) -> None:
        await self._svc.handle(event)

    def __del__(self) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            consumer.stop()
        consuming = getattr(self, "_consuming", None)
        if consuming is not None:
            with contextlib.suppress(RuntimeError):
                consuming.cancel()

    async def check_health(self) -> None:
        await self._svc.shards.alive()

    async def ready(self) -> None:
        await self._svc.shards.ping()

    @boundary
    async def report(self, principal: Principal, name: str, query: ReportQuery) -> ReportRead:
        return await self._svc.report(principal, name, query)

    async def consumer_stats(self) -> dict[str, Any]:
        return self._consumer.stats()
