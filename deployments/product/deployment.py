"""`ProductService` as a Ray Serve deployment: thin; every method takes the caller's
`Principal` first and the same pydantic models the HTTP routes use.

    handle = serve.get_deployment_handle("ProductService", app_name="nextflow")
    quote = await handle.quote.remote(principal, price_book_id, [product_id, ...])
"""

from __future__ import annotations

from ray import serve

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.product.cache import CatalogCache
from deployments.product.schemas import (
    PriceBookCreate,
    PriceBookListQuery,
    PriceBookRead,
    PriceBookUpdate,
    PriceListQuery,
    PriceRead,
    PriceSet,
    ProductCreate,
    ProductListQuery,
    ProductRead,
    ProductUpdate,
    Quote,
)
from deployments.product.service import ProductService as _Logic
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Database


@serve.deployment(name="ProductService")
class ProductDeployment:
    def __init__(self) -> None:
        settings = get_settings()
        redis = redis_client.connect(settings.redis_url)
        self._svc = _Logic(Database("product"), CatalogCache(redis))

    async def check_health(self) -> None:
        await self._svc.db.alive()

    async def ready(self) -> None:
        await self._svc.db.ping()

    # -- products --------------------------------------------------------------------
    @boundary
    async def create_product(self, principal: Principal, data: ProductCreate) -> ProductRead:
        return await self._svc.create_product(principal, data)

    @boundary
    async def get_product(self, principal: Principal, product_id: int) -> ProductRead:
        return await self._svc.get_product(principal, product_id)

    @boundary
    async def update_product(
        self,
        principal: Principal,
        product_id: int,
        data: ProductUpdate,
        if_version: int | None = None,
    ) -> ProductRead:
        return await self._svc.update_product(principal, product_id, data, if_version)

    @boundary
    async def delete_product(
        self, principal: Principal, product_id: int, if_version: int | None = None
    ) -> ProductRead:
        return await self._svc.delete_product(principal, product_id, if_version)

    @boundary
    async def restore_product(self, principal: Principal, product_id: int) -> ProductRead:
        return await self._svc.restore_product(principal, product_id)

    @boundary
    async def list_products(
        self, principal: Principal, query: ProductListQuery
    ) -> Page[ProductRead]:
        return await self._svc.list_products(principal, query)

    @boundary
    async def product_history(
        self, principal: Principal, product_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.product_history(principal, product_id, query)

    @boundary
    async def product_prices(self, principal: Principal, product_id: int) -> list[PriceRead]:
        return await self._svc.product_prices(principal, product_id)

    # -- price books -----------------------------------------------------------------
    @boundary
    async def create_price_book(self, principal: Principal, data: PriceBookCreate) -> PriceBookRead:
        return await self._svc.create_price_book(principal, data)

    @boundary
    async def get_price_book(self, principal: Principal, book_id: int) -> PriceBookRead:
        return await self._svc.get_price_book(principal, book_id)

    @boundary
    async def update_price_book(
        self,
        principal: Principal,
        book_id: int,
        data: PriceBookUpdate,
        if_version: int | None = None,
    ) -> PriceBookRead:
        return await self._svc.update_price_book(principal, book_id, data, if_version)

    @boundary
    async def delete_price_book(
        self, principal: Principal, book_id: int, if_version: int | None = None
    ) -> PriceBookRead:
        return await self._svc.delete_price_book(principal, book_id, if_version)

    @boundary
    async def restore_price_book(self, principal: Principal, book_id: int) -> PriceBookRead:
        return await self._svc.restore_price_book(principal, book_id)

    @boundary
    async def list_price_books(
        self, principal: Principal, query: PriceBookListQuery
    ) -> Page[PriceBookRead]:
        return await self._svc.list_price_books(principal, query)

    @boundary
    async def price_book_history(
        self, principal: Principal, book_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.price_book_history(principal, book_id, query)

    # -- prices ----------------------------------------------------------------------
    @boundary
    async def set_price(
        self, principal: Principal, book_id: int, product_id: int, data: PriceSet
    ) -> PriceRead:
        return await self._svc.set_price(principal, book_id, product_id, data)

    @boundary
    async def delete_price(self, principal: Principal, book_id: int, product_id: int) -> PriceRead:
        return await self._svc.delete_price(principal, book_id, product_id)

    @boundary
    async def list_prices(
        self, principal: Principal, book_id: int, query: PriceListQuery
    ) -> Page[PriceRead]:
        return await self._svc.list_prices(principal, book_id, query)

    @boundary
    async def quote(self, principal: Principal, book_id: int, product_ids: list[int]) -> Quote:
        """Live prices of products in a book (for order lines); 422 names any product
        without an active price there."""
        return await self._svc.quote(principal, book_id, product_ids)

    @boundary
    async def cache_stats(self) -> dict[str, int]:
        return {"hits": self._svc.cache.hits, "misses": self._svc.cache.misses}
