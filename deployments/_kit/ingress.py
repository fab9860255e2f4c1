"""What every domain service's Serve application is made of: one ingress deployment
that answers HTTP through the shared pipeline (gateway/pipeline.py) and calls its
service in process, and whose service methods a deployment handle reaches directly:

    @serve.deployment(name="CustomerService")
    @serve.ingress()
    class CustomerApp(ServiceIngress):
        async def __init__(self) -> None:
            self._svc = CustomerService(await Shards.connect("customer"))
            self.open_ingress(self._svc, title="Customers", routers=[routes.router])

    handle = serve.get_app_handle("customer")
    customer = await handle.get.remote(principal, customer_id)

One request is one Serve hop (the ingress replica) plus the ShardManager calls its
service makes. Deployment handles are for in-cluster Python code, which is trusted
with the `Principal` it passes (as a service is trusted by another): the HTTP and gRPC
edges are where callers prove who they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.settings import get_settings
from deployments._kit.boundary import bounded
from deployments._kit.consumer import EventConsumer
from deployments.auth.idempotency import IdempotencyKeys
from deployments.auth.keys import ApiKeyCache
from deployments.auth.saved import ViewCache
from gateway.pipeline import Pipeline, Ready, build_api, open_pipeline
from shards.client import Database

log = logging.getLogger("nextflow.service")

# Each application and its ingress deployment (`serve_config.yaml` names them alike).
APPS = {
    "auth": "AuthService",
    "customer": "CustomerService",
    "product": "ProductService",
    "sales": "SalesService",
    "marketing": "MarketingService",
    "support": "SupportService",
    "notification": "NotificationService",
    "file": "FileService",
    "integration": "IntegrationService",
    "webhooks": "WebhookService",
    "analytics": "AnalyticsService",
    "ai": "AIService",
}

# Names Serve itself looks up on a deployment: never answered by a service method.
_SERVE_NAMES = frozenset({"check_health", "reconfigure", "record_autoscaling_stats", "ready"})


def app_handle(app: str) -> DeploymentHandle[Any]:
    """A handle on another service's application (its ingress deployment), for real
    composition only: a Serve handle call is the dearest hop a request can take."""
    # Not checked against the controller: an application may still be deploying when
    # another takes its handle (the calls wait for its replicas).
    return serve.get_deployment_handle(APPS[app], app_name=app, _check_exists=False)


class ServiceIngress:
    """Base of every service's ingress deployment (see the module's docstring)."""

    _pipeline: Pipeline
    _api: FastAPI

    def open_ingress(
        self,
        service: Any,
        *,
        title: str,
        routers: Iterable[APIRouter],
        ready: dict[str, Ready] | None = None,
        description: str = "",
    ) -> None:
        """Build the pipeline and the FastAPI app; `service` is what the routes call
        and what handles reach (behind its boundary: errors, read-your-writes);
        `ready`: what `/ready` checks beside Redis (default: this app's `ready`)."""
        settings = get_settings()
        auth = Database("auth")
        self._service = bounded(service)
        self._pipeline = open_pipeline(
            settings,
            api_keys=ApiKeyCache(auth, settings.api_key_cache_ttl_s),
            idempotency=IdempotencyKeys(
                auth, settings.request_timeout_s + 30, settings.idempotency_retention_s
            ),
            views=ViewCache(auth),
        )
        self._api = build_api(
            self._pipeline,
            title=title,
            routers=routers,
            service=self._service,
            ready=ready if ready is not None else {"databases": self.ready},
            description=description,
            settings=settings,
        )

    def every(self, interval_s: float, work: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run `work()` every `interval_s` in this replica (0: never), first after a
        random part of the interval (replicas out of step: their runs rarely overlap,
        and an overlap must be harmless); a failed run is logged and the next one
        tries again (a shard down now). Stopped with the replica."""
        if interval_s <= 0:
            return

        async def forever() -> None:
            await asyncio.sleep(random.uniform(0, interval_s))
            while True:
                try:
                    await work()
                except Exception:
                    log.warning("%s failed; again in %.0f s", what, interval_s, exc_info=True)
                await asyncio.sleep(interval_s)

        self.background(forever())

    def background(self, work: Awaitable[None]) -> None:
        """Run `work` in this replica until it ends or the replica stops."""
        tasks: list[asyncio.Task[None]] = self.__dict__.setdefault("_periodic", [])
        tasks.append(asyncio.get_running_loop().create_task(_ran(work)))

    def consume(self, redis: Any, group: str, **options: Any) -> None:
        """Make this replica a member of the event stream's consumer group `group`
        (`EventConsumer(redis, group=group, name=<the replica's id>, **options)`),
        reading until the replica stops; `consumer_stats()` reports it."""
        name = serve.get_replica_context().replica_id.unique_id
        consumer = EventConsumer(redis, group=group, name=name, **options)
        self.__dict__["_consumer"] = consumer
        self.background(consumer.run())

    async def consumer_stats(self) -> dict[str, Any]:
        """This replica's event consumer (handled, failed, dead-lettered, claimed), for
        operators and tests: it lives in the replica, not in the service."""
        consumer: EventConsumer | None = self.__dict__.get("_consumer")
        if consumer is None:
            raise AttributeError("this replica consumes no events")
        return consumer.stats()

    def __del__(self) -> None:
        consumer: EventConsumer | None = self.__dict__.get("_consumer")
        if consumer is not None:
            consumer.stop()
        for task in self.__dict__.get("_periodic", []):
            with contextlib.suppress(RuntimeError):
                task.cancel()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._api

    def __getattr__(self, name: str) -> Any:
        """A handle's method call: the service's method of that name, behind its
        boundary (only coroutine methods; nothing private)."""
        if name.startswith("_") or name in _SERVE_NAMES:
            raise AttributeError(name)
        service = self.__dict__.get("_service")
        if service is None:
            raise AttributeError(name)
        found = getattr(service, name)
        if not callable(found):
            raise AttributeError(name)
        return found

    async def ready(self) -> None:
        """Readiness: what this service needs answers (each application says what)."""


async def _ran(work: Awaitable[None]) -> None:
    await work
