"""The analytics application: its ingress answers `/v1/analytics/...` over HTTP,
calling `AnalyticsService` in process (reports computed by Ray tasks, one per logical
shard, each asking for the custom resource `ai`, reduced here, cached in Redis). Every
replica is a member of the consumer group `analytics` on the event stream and drops
cached reports that an event changes. `serve.get_app_handle("analytics")` reaches the
same service methods:

    analytics = serve.get_app_handle("analytics")
    report = await analytics.report.remote(principal, "pipeline", ReportQuery(owner_id=7))
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.events import ANALYTICS_GROUP
from deployments._kit.ingress import ServiceIngress
from deployments.analytics import routes
from deployments.analytics.service import AnalyticsService
from shards.client import Database, Shards


@serve.deployment(name="AnalyticsService")
@serve.ingress()
class AnalyticsApp(ServiceIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        settings = get_settings()
        self._redis = redis_client.connect(settings.redis_url, socket_timeout=5)
        self._svc = AnalyticsService(
            await Shards.connect("sales"),
            Database("sales_config"),
            self._redis,
            cache_ttl_s=settings.report_cache_ttl_s,
            replica_lag_s=settings.max_replica_lag_s,
        )
        self.open_ingress(self._svc, title="NextFlow analytics", routers=[routes.router])
        self.consume(self._redis, ANALYTICS_GROUP, batch_handler=self._svc.handle_all)

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.shards.alive()

    async def ready(self) -> None:
        """Readiness: every database this service uses answers `SELECT 1`."""
        await self._svc.shards.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.analytics.app:build_app`)."""
    return AnalyticsApp.bind()  # type: ignore[attr-defined, no-any-return]
