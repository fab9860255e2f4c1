"""The auth application: its ingress answers `/v1/auth/...` over HTTP (sign-in,
tokens, roles, users, teams, API keys), calling `AuthService` in process;
`app_handle("auth")` (deployments/_kit/ingress.py) reaches the same service methods:

    auth = app_handle("auth")
    user = await auth.get_user.remote(principal, user_id)
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.custom_fields import HOLDERS
from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.auth import routes
from deployments.auth.service import AuthService
from shards.client import Database


@serve.deployment(name="AuthService")
@serve.ingress()
class AuthApp(ServiceIngress):
    def __init__(self) -> None:
        settings = get_settings()
        redis = redis_client.connect(settings.redis_url)
        holders = {app: app_handle(app) for app, _ in HOLDERS.values()}
        self._svc = AuthService(Database("auth"), settings, redis, holders)
        self.open_ingress(self._svc, title="NextFlow auth", routers=routes.routers)

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.db.alive()

    async def ready(self) -> None:
        """Readiness: every database this service uses answers `SELECT 1`."""
        await self._svc.db.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.auth.app:build_app`)."""
    return AuthApp.bind()  # type: ignore[attr-defined, no-any-return]
