"""`SalesService` as a Ray Serve deployment: thin; every method takes the caller's
`Principal` first and the same pydantic models the HTTP routes use.

    handle = serve.get_deployment_handle("SalesService", app_name="nextflow")
    deal = await handle.create_deal.remote(principal, DealCreate(...), source_key="lead:42")
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments._kit.boundary import boundary
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.product.schemas import Quote
from deployments.sales.schemas import (
    DealCreate,
    DealListQuery,
    DealOrderCreate,
    DealRead,
    DealUpdate,
    LostRequest,
    OrderCreate,
    OrderListQuery,
    OrderRead,
    OrderUpdate,
    PipelineCreate,
    PipelineListQuery,
    PipelineMove,
    PipelineRead,
    PipelineUpdate,
    StageChangeRead,
    StageCreate,
    StageHistoryQuery,
    StageMove,
    StageUpdate,
    WonRequest,
)
from deployments.sales.service import SalesService as _Logic
from gateway.errors import NotFound
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Database, Shards


class _CustomerHandle:
    """The Customer service as sales needs it, over its deployment handle."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    async def customer_exists(self, principal: Principal, customer_id: int) -> bool:
        try:
            await self._handle.get.remote(principal, customer_id)
        except NotFound:  # Ray re-raises the service's own error type
            return False
        return True

    async def contact_customer(self, principal: Principal, contact_id: int) -> int | None:
        try:
            contact = await self._handle.get_contact.remote(principal, contact_id)
        except NotFound:
            return None
        return int(contact.customer_id)


class _ProductHandle:
    """The Product service's prices for order lines, over its deployment handle."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    async def quote(self, principal: Principal, book_id: int, product_ids: list[int]) -> Quote:
        quote: Quote = await self._handle.quote.remote(principal, book_id, product_ids)
        return quote


@serve.deployment(name="SalesService")
class SalesDeployment:
    async def __init__(  # type: ignore[misc]  # Serve awaits async inits
        self, customers: DeploymentHandle[Any], products: DeploymentHandle[Any]
    ) -> None:
        self._svc = _Logic(
            await Shards.connect("sales"),
            Database("sales_config"),
            _CustomerHandle(customers),
            _ProductHandle(products),
        )

    async def check_health(self) -> None:
        """Serve's liveness check: the shard manager actors answer."""
        await self._svc.shards.alive()
        await self._svc.config.alive()

    async def ready(self) -> None:
        """Readiness: the sales database on every server and sales_config answer."""
        await self._svc.shards.ping()
        await self._svc.config.ping()

    # -- pipelines -------------------------------------------------------------------
    @boundary
    async def create_pipeline(self, principal: Principal, data: PipelineCreate) -> PipelineRead:
        return await self._svc.create_pipeline(principal, data)

    @boundary
    async def get_pipeline(self, principal: Principal, pipeline_id: int) -> PipelineRead:
        return await self._svc.get_pipeline(principal, pipeline_id)

    @boundary
    async def list_pipelines(
        self, principal: Principal, query: PipelineListQuery
    ) -> Page[PipelineRead]:
        return await self._svc.list_pipelines(principal, query)

    @boundary
    async def update_pipeline(
        self,
        principal: Principal,
        pipeline_id: int,
        data: PipelineUpdate,
        if_version: int | None = None,
    ) -> PipelineRead:
        return await self._svc.update_pipeline(principal, pipeline_id, data, if_version)

    @boundary
    async def delete_pipeline(
        self, principal: Principal, pipeline_id: int, if_version: int | None = None
    ) -> PipelineRead:
        return await self._svc.delete_pipeline(principal, pipeline_id, if_version)

    @boundary
    async def restore_pipeline(self, principal: Principal, pipeline_id: int) -> PipelineRead:
        return await self._svc.restore_pipeline(principal, pipeline_id)

    @boundary
    async def add_stage(
        self, principal: Principal, pipeline_id: int, data: StageCreate
    ) -> PipelineRead:
        return await self._svc.add_stage(principal, pipeline_id, data)

    @boundary
    async def update_stage(
        self,
        principal: Principal,
        pipeline_id: int,
        stage_id: int,
        data: StageUpdate,
        if_version: int | None = None,
    ) -> PipelineRead:
        return await self._svc.update_stage(principal, pipeline_id, stage_id, data, if_version)

    # -- deals -----------------------------------------------------------------------
    @boundary
    async def pipeline_history(
        self, principal: Principal, pipeline_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.pipeline_history(principal, pipeline_id, query)

    @boundary
    async def create_deal(
        self, principal: Principal, data: DealCreate, source_key: str | None = None
    ) -> DealRead:
        """Idempotent with `source_key`: the same key returns the deal made first."""
        return await self._svc.create_deal(principal, data, source_key)

    @boundary
    async def get_deal(self, principal: Principal, deal_id: int) -> DealRead:
        return await self._svc.get_deal(principal, deal_id)

    @boundary
    async def update_deal(
        self,
        principal: Principal,
        deal_id: int,
        data: DealUpdate,
        if_version: int | None = None,
    ) -> DealRead:
        return await self._svc.update_deal(principal, deal_id, data, if_version)

    @boundary
    async def delete_deal(
        self, principal: Principal, deal_id: int, if_version: int | None = None
    ) -> DealRead:
        return await self._svc.delete_deal(principal, deal_id, if_version)

    @boundary
    async def restore_deal(self, principal: Principal, deal_id: int) -> DealRead:
        return await self._svc.restore_deal(principal, deal_id)

    @boundary
    async def list_deals(self, principal: Principal, query: DealListQuery) -> Page[DealRead]:
        return await self._svc.list_deals(principal, query)

    @boundary
    async def list_customer_deals(
        self, principal: Principal, customer_id: int, query: DealListQuery
    ) -> Page[DealRead]:
        return await self._svc.list_customer_deals(principal, customer_id, query)

    @boundary
    async def deal_history(
        self, principal: Principal, deal_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.deal_history(principal, deal_id, query)

    @boundary
    async def stage_history(
        self, principal: Principal, deal_id: int, query: StageHistoryQuery
    ) -> Page[StageChangeRead]:
        return await self._svc.stage_history(principal, deal_id, query)

    @boundary
    async def move_stage(
        self, principal: Principal, deal_id: int, data: StageMove, if_version: int | None = None
    ) -> DealRead:
        return await self._svc.move_stage(principal, deal_id, data, if_version)

    @boundary
    async def move_pipeline(
        self, principal: Principal, deal_id: int, data: PipelineMove, if_version: int | None = None
    ) -> DealRead:
        return await self._svc.move_pipeline(principal, deal_id, data, if_version)

    @boundary
    async def win(
        self, principal: Principal, deal_id: int, data: WonRequest, if_version: int | None = None
    ) -> DealRead:
        return await self._svc.win(principal, deal_id, data, if_version)

    @boundary
    async def lose(
        self, principal: Principal, deal_id: int, data: LostRequest, if_version: int | None = None
    ) -> DealRead:
        return await self._svc.lose(principal, deal_id, data, if_version)

    @boundary
    async def reopen(
        self, principal: Principal, deal_id: int, if_version: int | None = None
    ) -> DealRead:
        return await self._svc.reopen(principal, deal_id, if_version)

    # -- orders ----------------------------------------------------------------------
    @boundary
    async def create_order(self, principal: Principal, data: OrderCreate) -> OrderRead:
        return await self._svc.create_order(principal, data)

    @boundary
    async def create_deal_order(
        self, principal: Principal, deal_id: int, data: DealOrderCreate
    ) -> OrderRead:
        return await self._svc.create_deal_order(principal, deal_id, data)

    @boundary
    async def get_order(self, principal: Principal, order_id: int) -> OrderRead:
        return await self._svc.get_order(principal, order_id)

    @boundary
    async def update_order(
        self,
        principal: Principal,
        order_id: int,
        data: OrderUpdate,
        if_version: int | None = None,
    ) -> OrderRead:
        return await self._svc.update_order(principal, order_id, data, if_version)

    @boundary
    async def confirm_order(
        self, principal: Principal, order_id: int, if_version: int | None = None
    ) -> OrderRead:
        return await self._svc.set_order_status(principal, order_id, "confirmed", if_version)

    @boundary
    async def cancel_order(
        self, principal: Principal, order_id: int, if_version: int | None = None
    ) -> OrderRead:
        return await self._svc.set_order_status(principal, order_id, "cancelled", if_version)

    @boundary
    async def delete_order(
        self, principal: Principal, order_id: int, if_version: int | None = None
    ) -> OrderRead:
        return await self._svc.delete_order(principal, order_id, if_version)

    @boundary
    async def restore_order(self, principal: Principal, order_id: int) -> OrderRead:
        return await self._svc.restore_order(principal, order_id)

    @boundary
    async def list_orders(self, principal: Principal, query: OrderListQuery) -> Page[OrderRead]:
        return await self._svc.list_orders(principal, query)

    @boundary
    async def list_customer_orders(
        self, principal: Principal, customer_id: int, query: OrderListQuery
    ) -> Page[OrderRead]:
        return await self._svc.list_customer_orders(principal, customer_id, query)

    @boundary
    async def order_history(
        self, principal: Principal, order_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.order_history(principal, order_id, query)
