"""`AIService` as a Ray Serve deployment: lead-scoring training and batch scoring as
jobs of Ray tasks (each asking for the custom resource `ai`), online scoring of one
lead with the model this replica keeps loaded, and search. Every replica is a member
of the consumer group `ai` on the event stream and keeps the search index up to date.

    handle = serve.get_deployment_handle("AIService", app_name="nextflow")
    accepted = await handle.start_training.remote(principal)     # poll /jobs/{id}
    score = await handle.score_lead.remote(principal, lead_id)
    found = await handle.search.remote(principal, "billing problem", ["ticket"], 5)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from ai import embed
from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments._kit.consumer import EventConsumer
from deployments._kit.events import AI_GROUP
from deployments.ai.chat import ChatModel
from deployments.ai.indexing import INDEXED_EVENTS
from deployments.ai.repo import ModelRead
from deployments.ai.service import (
    ABANDONED_AFTER_S,
    LeadScore,
    NextActions,
    SearchResult,
    TicketSummary,
)
from deployments.ai.service import AIService as _Logic
from deployments.integration.repo import JobAccepted
from gateway.principal import Principal
from shards.client import Database, Shards

log = logging.getLogger("nextflow.ai")
EMBEDDER_LEASE = "nextflow:ai:embedder"


@serve.deployment(name="AIService")
class AIDeployment:
    async def __init__(  # type: ignore[misc]  # Serve awaits async inits
        self,
        support: DeploymentHandle[Any] | None = None,
        sales: DeploymentHandle[Any] | None = None,
    ) -> None:
        settings = get_settings()
        self._redis = redis_client.connect(settings.redis_url, socket_timeout=5)
        self._svc = _Logic(
            await Shards.connect("marketing"),
            Database("ai"),
            Database("integration"),
            self._redis,
            batch_size=settings.ai_score_batch_size,
            in_flight=settings.ai_tasks_in_flight,
            support=support,
            sales=sales,
            index_batch_size=settings.ai_index_batch_size,
            chat=ChatModel.from_settings(settings),
        )
        if embed.available():
            embed.embedder()  # created (or found) now: warm before the first write
        self._sweeping = asyncio.get_running_loop().create_task(self._sweep())
        self._consumer = EventConsumer(
            self._redis,
            group=AI_GROUP,
            name=serve.get_replica_context().replica_id.unique_id,
            batch_handler=self._svc.index.handle,
            types=INDEXED_EVENTS,
            count=200,
        )
        self._consuming = asyncio.get_running_loop().create_task(self._consumer.run())
        self._backlog_every = settings.ai_embed_backlog_interval_s
        self._embedding = asyncio.get_running_loop().create_task(self._embed_backlog())

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

    def __del__(self) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            consumer.stop()
        for name in ("_sweeping", "_consuming", "_embedding"):
            task = getattr(self, name, None)
            if task is not None:
                with contextlib.suppress(RuntimeError):
                    task.cancel()

    async def check_health(self) -> None:
        await self._svc.leads.alive()

    async def ready(self) -> None:
        await self._svc.leads.ping()
        await self._svc.models.ping()

    @boundary
    async def start_training(self, principal: Principal) -> JobAccepted:
        return await self._svc.start_training(principal)

    @boundary
    async def start_scoring(self, principal: Principal) -> JobAccepted:
        return await self._svc.start_scoring(principal)

    @boundary
    async def start_reindex(self, principal: Principal) -> JobAccepted:
        return await self._svc.start_reindex(principal)

    @boundary
    async def list_models(self, principal: Principal, limit: int = 20) -> list[ModelRead]:
        return await self._svc.list_models(principal, limit)

    @boundary
    async def score_lead(self, principal: Principal, lead_id: int) -> LeadScore:
        return await self._svc.score_lead(principal, lead_id)

    @boundary
    async def search(
        self,
        principal: Principal,
        query: str,
        types: list[str] | None = None,
        limit: int = 10,
        mode: str | None = None,
    ) -> SearchResult:
        return await self._svc.search(principal, query, types, limit, mode)

    @boundary
    async def ticket_summary(self, principal: Principal, ticket_id: int) -> TicketSummary:
        return await self._svc.ticket_summary(principal, ticket_id)

    @boundary
    async def ticket_next_actions(self, principal: Principal, ticket_id: int) -> NextActions:
        return await self._svc.ticket_next_actions(principal, ticket_id)

    @boundary
    async def deal_next_actions(self, principal: Principal, deal_id: int) -> NextActions:
        return await self._svc.deal_next_actions(principal, deal_id)

    async def loaded_model_version(self) -> int | None:
        """The model version this replica has loaded (tests, debugging)."""
        return self._svc.loaded_version

    async def embed_backlog(self) -> int:
        """One round of the search backlog now (operators, tests): how many records
        it worked on (0: nothing waits, or an import runs)."""
        return await self._svc.index.embed_backlog()

    async def consumer_stats(self) -> dict[str, Any]:
        return self._consumer.stats()
