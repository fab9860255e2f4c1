"""The ai application: its ingress answers `/v1/ai/...` over HTTP, calling `AIService`
in process: lead-scoring training and batch scoring as jobs of Ray tasks (each asking
for the custom resource `ai`), online scoring of one lead with the model this replica
keeps loaded, search, ticket summaries and next actions (tickets and deals read from
the support and sales applications through their handles). Every replica is a member
of the consumer group `ai` on the event stream and keeps the search index up to date.
`serve.get_app_handle("ai")` reaches the same service methods:

    ai = serve.get_app_handle("ai")
    accepted = await ai.start_training.remote(principal)  # poll /v1/integration/jobs/{id}
    score = await ai.score_lead.remote(principal, lead_id)
    found = await ai.search.remote(principal, "billing problem", ["ticket"], 5)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve
from ray.serve import Application

from ai import embed
from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.events import AI_GROUP
from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.ai import routes
from deployments.ai.chat import ChatModel
from deployments.ai.indexing import INDEXED_EVENTS
from deployments.ai.service import ABANDONED_AFTER_S, AIService
from shards.client import Database, Shards

log = logging.getLogger("nextflow.ai")
EMBEDDER_LEASE = "nextflow:ai:embedder"


@serve.deployment(name="AIService")
@serve.ingress()
class AIApp(ServiceIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        settings = get_settings()
        self._redis = redis_client.connect(settings.redis_url, socket_timeout=5)
        self._svc = AIService(
            await Shards.connect("marketing"),
            Database("ai"),
            Database("integration"),
            self._redis,
            batch_size=settings.ai_score_batch_size,
            in_flight=settings.ai_tasks_in_flight,
            support=app_handle("support"),
            sales=app_handle("sales"),
            index_batch_size=settings.ai_index_batch_size,
            chat=ChatModel.from_settings(settings),
        )
        self.open_ingress(self._svc, title="NextFlow AI", routers=[routes.router])
        if embed.available():
            embed.embedder()  # created (or found) now: warm before the first write
        self.background(self._sweep())
        self.consume(
            self._redis, AI_GROUP, batch_handler=self._svc.index.handle, types=INDEXED_EVENTS,
            count=200, linger_ms=settings.ai_index_linger_ms,
        )  # fmt: skip
        self._backlog_every = settings.ai_embed_backlog_interval_s
        self.background(self._embed_backlog())

    async def _embed_backlog(self) -> None:
        """Work through the backlog (imported records, documents without an
        embedding) while this replica holds the lease (one replica at a time; another
        takes over when it stops renewing)."""
        if not self._backlog_every:
            return
        me = serve.get_replica_context().replica_id.unique_id
        lease_ms = int(max(self._backlog_every * 3, 30) * 1000)
        while True:
            try:
                holder = await self._redis.set(EMBEDDER_LEASE, me, nx=True, px=lease_ms)
                if holder or await self._redis.get(EMBEDDER_LEASE) == me.encode():
                    while await self._svc.index.embed_backlog():
                        await self._redis.set(EMBEDDER_LEASE, me, px=lease_ms)
            except Exception as exc:  # the next round tries again
                log.warning("search backlog round failed: %s", exc)
            await asyncio.sleep(self._backlog_every)

    async def _sweep(self) -> None:
        """Take over AI jobs whose replica died (any replica may; each job once)."""
        while True:
            try:
                await self._svc.take_over_abandoned()
            except Exception as exc:  # the next round tries again
                log.warning("abandoned-job sweep failed: %s", exc)
            await asyncio.sleep(ABANDONED_AFTER_S / 3)

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.leads.alive()

    async def ready(self) -> None:
        """Readiness: the leads' shards and the model catalog answer `SELECT 1`."""
        await self._svc.leads.ping()
        await self._svc.models.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.ai.app:build_app`)."""
    return AIApp.bind()  # type: ignore[attr-defined, no-any-return]
