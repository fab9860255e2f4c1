"""The product application: its ingress answers `/v1/products/...` (products, price
books, prices) over HTTP, calling `ProductService` in process;
`serve.get_app_handle("product")` reaches the same service methods:

    products = serve.get_app_handle("product")
    quote = await products.quote.remote(principal, price_book_id, [product_id, ...])
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.ingress import ServiceIngress
from deployments.auth.fields import FieldCache
from deployments.product import routes
from deployments.product.cache import CatalogCache
from deployments.product.service import ProductService
from shards.client import Database


@serve.deployment(name="ProductService")
@serve.ingress()
class ProductApp(ServiceIngress):
    def __init__(self) -> None:
        settings = get_settings()
        redis = redis_client.connect(settings.redis_url)
        self._svc = ProductService(
            Database("product"), CatalogCache(redis), FieldCache(Database("auth"))
        )
        self.open_ingress(self._svc, title="NextFlow products", routers=[routes.router])

    async def check_health(self) -> None:
        """Serve's liveness check: the product database's manager answers."""
        await self._svc.db.alive()

    async def ready(self) -> None:
        """Readiness: the product database answers `SELECT 1`."""
        await self._svc.db.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.product.app:build_app`)."""
    return ProductApp.bind()  # type: ignore[attr-defined, no-any-return]
