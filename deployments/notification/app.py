"""The notification application: its ingress answers `/v1/notifications/...` over
HTTP (the caller's inbox and preferences), calling `NotificationService` in process,
and every replica feeds `handle(event)` from the event stream as a member of the
consumer group `notification` (at-least-once; effects once per event, recipient and
channel). `app_handle("notification")` reaches the same service methods:

    notifications = app_handle("notification")
    count = await notifications.unread_count.remote(principal)
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.events import NOTIFICATION_GROUP
from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.notification import routes
from deployments.notification.mailer import SmtpMailer
from deployments.notification.rules import RULES
from deployments.notification.service import AuthDirectory, NotificationService
from shards.client import Shards


@serve.deployment(name="NotificationService")
@serve.ingress()
class NotificationApp(ServiceIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        settings = get_settings()
        self._svc = NotificationService(
            await Shards.connect("notification"),
            AuthDirectory(app_handle("auth"), ttl_s=settings.notification_directory_ttl_s),
            SmtpMailer.from_settings(settings),
        )
        self.open_ingress(self._svc, title="NextFlow notifications", routers=[routes.router])
        self._redis = redis_client.connect(settings.redis_url, socket_timeout=None)
        self.consume(self._redis, NOTIFICATION_GROUP, handler=self._svc.handle, types=RULES)

    async def check_health(self) -> None:
        await self._svc.shards.alive()

    async def ready(self) -> None:
        await self._svc.shards.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.notification.app:build_app`)."""
    return NotificationApp.bind()  # type: ignore[attr-defined, no-any-return]
