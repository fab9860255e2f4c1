"""`WebhookService` as a Ray Serve deployment: subscriptions and delivery logs over
HTTP and handles, `handle(event)`, which every replica feeds from the event stream as a
member of the consumer group `webhooks` (deliveries once per event and subscription),
and a delivery loop in every replica (due deliveries shared by `FOR UPDATE SKIP LOCKED`).

    handle = serve.get_deployment_handle("WebhookService", app_name="nextflow")
    created = await handle.create.remote(principal, WebhookCreate(url=..., event_types=["*"]))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from ray import serve

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments._kit.consumer import EventConsumer
from deployments._kit.events import WEBHOOKS_GROUP, Event
from deployments._kit.sealed import SecretBox
from deployments.webhooks import guard
from deployments.webhooks.backoff import Backoff
from deployments.webhooks.schemas import (
    DeliveryListQuery,
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookListQuery,
    WebhookRead,
    WebhookUpdate,
)
from deployments.webhooks.service import WebhookService as _Logic
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Database

log = logging.getLogger("nextflow.webhooks")


@serve.deployment(name="WebhookService")
class WebhookDeployment:
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        s = get_settings()
        self._db = Database("integration")
        # No proxies from the environment, no redirects: the SSRF guard decides where
        # a delivery connects.
        self._client = httpx.AsyncClient(
            timeout=s.webhook_timeout_s, follow_redirects=False, trust_env=False
        )
        self._svc = _Logic(
            self._db,
            guard.Policy.from_settings(s.webhook_allow_private, s.webhook_allowed_cidrs),
            Backoff(
                base_s=s.webhook_retry_base_s,
                cap_s=s.webhook_retry_cap_s,
                horizon_s=s.webhook_retry_horizon_s,
            ),
            self._client,
            SecretBox(
                s.secrets_key.get_secret_value(),
                [s.secrets_key_previous.get_secret_value()] if s.secrets_key_previous else [],
            ),
        )
        loop = asyncio.get_running_loop()
        self._resealing = loop.create_task(self._reseal())
        interval = s.webhook_poll_interval_s
        self._worker = loop.create_task(self._svc.run_forever(interval)) if interval > 0 else None
        self._redis = redis_client.connect(s.redis_url, socket_timeout=None)
        self._consumer = EventConsumer(
            self._redis,
            group=WEBHOOKS_GROUP,
            name=serve.get_replica_context().replica_id.unique_id,
            handler=self._on_event,
        )
        self._consuming = loop.create_task(self._consumer.run())

    async def _reseal(self) -> None:
        """Signing secrets stored in plain text (before they were sealed) or under the
        previous key are sealed under the current one; retried while the database is
        not reachable."""
        while True:
            try:
                done = await self._svc.reseal_secrets()
            except Exception as exc:
                log.warning("resealing webhook secrets failed (retrying in 30 s): %s", exc)
                await asyncio.sleep(30)
                continue
            if done:
                log.info("sealed %d webhook signing secret(s) under the current key", done)
            return

    async def _on_event(self, event: Event) -> None:
        await self._svc.handle(event)

    def __del__(self) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            consumer.stop()
        for name in ("_worker", "_consuming", "_resealing"):
            task = getattr(self, name, None)
            if task is not None:
                with contextlib.suppress(RuntimeError):
                    task.cancel()

    async def check_health(self) -> None:
        await self._db.alive()

    async def ready(self) -> None:
        await self._db.ping()

    @boundary
    async def create(self, principal: Principal, data: WebhookCreate) -> WebhookCreated:
        """A subscription; its signing secret is in this answer only."""
        return await self._svc.create(principal, data)

    @boundary
    async def get(self, principal: Principal, webhook_id: int) -> WebhookRead:
        return await self._svc.get(principal, webhook_id)

    @boundary
    async def list(self, principal: Principal, query: WebhookListQuery) -> Page[WebhookRead]:
        return await self._svc.list(principal, query)

    @boundary
    async def update(
        self,
        principal: Principal,
        webhook_id: int,
        data: WebhookUpdate,
        if_version: int | None = None,
    ) -> WebhookRead:
        return await self._svc.update(principal, webhook_id, data, if_version)

    @boundary
    async def delete(
        self, principal: Principal, webhook_id: int, if_version: int | None = None
    ) -> WebhookRead:
        return await self._svc.delete(principal, webhook_id, if_version)

    @boundary
    async def deliveries(
        self, principal: Principal, webhook_id: int, query: DeliveryListQuery
    ) -> Page[DeliveryRead]:
        return await self._svc.deliveries(principal, webhook_id, query)

    @boundary
    async def replay(self, principal: Principal, webhook_id: int, delivery_id: int) -> DeliveryRead:
        return await self._svc.replay(principal, webhook_id, delivery_id)

    async def consumer_stats(self) -> dict[str, Any]:
        """This replica's stream consumer: handled, failed, dead-lettered, claimed."""
        return self._consumer.stats()

    @boundary
    async def handle(self, event: Event) -> int:
        """Fan an event out to matching subscriptions, once per (event, subscription)."""
        return await self._svc.handle(event)

    @boundary
    async def deliver_due(self) -> int:
        """Attempt the deliveries due now (the loop does this on its own)."""
        return await self._svc.deliver_due()
