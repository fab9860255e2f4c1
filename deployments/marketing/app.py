"""The marketing application: its ingress answers `/v1/marketing/...` over HTTP (leads
and their conversion, campaigns and members, capture forms, and the public
`POST /v1/marketing/capture/{form_key}`), calling `MarketingService` in process;
`serve.get_app_handle("marketing")` reaches the same service methods:

    marketing = serve.get_app_handle("marketing")
    lead = await marketing.create_lead.remote(principal, LeadCreate(email="a@b.com"))

Lead conversion calls the customer and sales applications through their handles. Its
Serve `user_config` may hold `{"fail_conversion_after": "customer"}` (or "contact",
"deal"): a fault-injection seam for crash tests, off by default.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.auth.fields import FieldCache
from deployments.marketing import routes
from deployments.marketing.conversion import ConversionFaults
from deployments.marketing.service import MarketingService
from shards.client import Database, Shards


@serve.deployment(name="MarketingService")
@serve.ingress()
class MarketingApp(ServiceIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        self._svc = MarketingService(
            await Shards.connect("marketing"),
            Database("marketing_config"),
            app_handle("customer"),
            app_handle("sales"),
            fields=FieldCache(Database("auth")),
        )
        self.open_ingress(self._svc, title="NextFlow marketing", routers=[routes.router])

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's `user_config`: only the fault-injection seam for now."""
        self._svc.faults = ConversionFaults.from_user_config(config)

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer."""
        await self._svc.shards.alive()

    async def ready(self) -> None:
        """Readiness: the marketing shards and `marketing_config` answer."""
        await self._svc.shards.ping()
        await self._svc.config.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.marketing.app:build_app`)."""
    return MarketingApp.bind()  # type: ignore[attr-defined, no-any-return]
