"""`NotificationService` as a Ray Serve deployment: the caller's inbox and
preferences, and `handle(event)`, which every replica feeds from the event stream as a
member of the consumer group `notification` (at-least-once; effects once per event,
recipient and channel).

    handle = serve.get_deployment_handle("NotificationService", app_name="nextflow")
    count = await handle.unread_count.remote(principal)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments._kit.consumer import EventConsumer
from deployments._kit.events import NOTIFICATION_GROUP, Event
from deployments.notification.mailer import SmtpMailer
from deployments.notification.rules import RULES
from deployments.notification.schemas import (
    NotificationListQuery,
    NotificationRead,
    PreferencesRead,
    PreferencesUpdate,
    ReadAllResult,
    UnreadCount,
)
from deployments.notification.service import AuthDirectory
from deployments.notification.service import NotificationService as _Logic
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Shards


@serve.deployment(name="NotificationService")
class NotificationDeployment:
    async def __init__(self, auth: DeploymentHandle[Any]) -> None:  # type: ignore[misc]
        settings = get_settings()
        self._svc = _Logic(
            await Shards.connect("notification"),
            AuthDirectory(auth, ttl_s=settings.notification_directory_ttl_s),
            SmtpMailer.from_settings(settings),
        )
        self._redis = redis_client.connect(settings.redis_url, socket_timeout=None)
        self._consumer = EventConsumer(
            self._redis,
            group=NOTIFICATION_GROUP,
            name=serve.get_replica_context().replica_id.unique_id,
            handler=self._on_event,
            types=RULES,
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
    async def list(
        self, principal: Principal, query: NotificationListQuery
    ) -> Page[NotificationRead]:
        return await self._svc.list(principal, query)

    @boundary
    async def unread_count(self, principal: Principal) -> UnreadCount:
        return await self._svc.unread_count(principal)

    @boundary
    async def mark_read(self, principal: Principal, notification_id: int) -> NotificationRead:
        return await self._svc.mark_read(principal, notification_id)

    @boundary
    async def mark_all_read(self, principal: Principal) -> ReadAllResult:
        return await self._svc.mark_all_read(principal)

    @boundary
    async def preferences(self, principal: Principal) -> PreferencesRead:
        return await self._svc.preferences(principal)

    @boundary
    async def set_preferences(
        self, principal: Principal, data: PreferencesUpdate
    ) -> PreferencesRead:
        return await self._svc.set_preferences(principal, data)

    async def consumer_stats(self) -> dict[str, Any]:
        """This replica's stream consumer: handled, failed, dead-lettered, claimed."""
        return self._consumer.stats()

    @boundary
    async def handle(self, event: Event) -> int:
        """Apply the notification rules to an event, exactly once per event,
        recipient and channel; e-mails are sent after commit."""
        return await self._svc.handle(event)
