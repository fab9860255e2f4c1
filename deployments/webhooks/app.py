"""The webhooks application: its ingress answers `/v1/webhooks/...` over HTTP
(subscriptions and delivery logs), calling `WebhookService` in process. Every replica
feeds `handle(event)` from the event stream as a member of the consumer group
`webhooks` (deliveries once per event and subscription) and runs a delivery loop (due
deliveries shared by `FOR UPDATE SKIP LOCKED`). `serve.get_app_handle("webhooks")`
reaches the same service methods:

    webhooks = serve.get_app_handle("webhooks")
    created = await webhooks.create.remote(principal, WebhookCreate(url=..., event_types=["*"]))
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from ray import serve
from ray.serve import Application

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.events import WEBHOOKS_GROUP
from deployments._kit.ingress import ServiceIngress
from deployments._kit.sealed import SecretBox
from deployments.webhooks import guard, routes
from deployments.webhooks.backoff import Backoff
from deployments.webhooks.service import WebhookService
from shards.client import Database

log = logging.getLogger("nextflow.webhooks")


@serve.deployment(name="WebhookService")
@serve.ingress()
class WebhookApp(ServiceIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        s = get_settings()
        self._db = Database("integration")
        # No proxies from the environment, no redirects: the SSRF guard decides where
        # a delivery connects.
        self._client = httpx.AsyncClient(
            timeout=s.webhook_timeout_s, follow_redirects=False, trust_env=False
        )
        self._svc = WebhookService(
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
        self.open_ingress(self._svc, title="NextFlow webhooks", routers=[routes.router])
        self.background(self._reseal())
        interval = s.webhook_poll_interval_s
        if interval > 0:
            self.background(self._svc.run_forever(interval))
        self._redis = redis_client.connect(s.redis_url, socket_timeout=None)
        self.consume(self._redis, WEBHOOKS_GROUP, batch_handler=self._svc.handle_all)

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

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the integration database's pool answers."""
        await self._db.alive()

    async def ready(self) -> None:
        """Readiness: the integration database answers `SELECT 1`."""
        await self._db.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.webhooks.app:build_app`)."""
    return WebhookApp.bind()  # type: ignore[attr-defined, no-any-return]
