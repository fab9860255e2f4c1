"""`AIService` as a Ray Serve deployment: lead-scoring training and batch scoring as
jobs of Ray tasks (each asking for the custom resource `ai`), online scoring of one
lead with the model this replica keeps loaded.

    handle = serve.get_deployment_handle("AIService", app_name="nextflow")
    accepted = await handle.start_training.remote(principal)     # poll /jobs/{id}
    score = await handle.score_lead.remote(principal, lead_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments._kit.principal import Principal
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
from shards.client import Database, Shards

log = logging.getLogger("nextflow.ai")


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
        )
        self._sweeping = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Take over AI jobs whose replica died (any replica may; each job once)."""
        while True:
            try:
                await self._svc.take_over_abandoned()
            except Exception as exc:  # the next round tries again
                log.warning("abandoned-job sweep failed: %s", exc)
            await asyncio.sleep(ABANDONED_AFTER_S / 3)

    def __del__(self) -> None:
        sweeping = getattr(self, "_sweeping", None)
        if sweeping is not None:
            with contextlib.suppress(RuntimeError):
                sweeping.cancel()

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
    async def list_models(self, principal: Principal, limit: int = 20) -> list[ModelRead]:
        return await self._svc.list_models(principal, limit)

    @boundary
    async def score_lead(self, principal: Principal, lead_id: int) -> LeadScore:
        return await self._svc.score_lead(principal, lead_id)

    @boundary
    async def search(
        self, principal: Principal, query: str, types: list[str] | None = None, limit: int = 10
    ) -> SearchResult:
        return await self._svc.search(principal, query, types, limit)

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
