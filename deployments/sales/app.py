"""The sales application: its ingress answers `/v1/sales/...` (pipelines, deals,
orders) over HTTP and `nextflow.v1.DealService` over gRPC, calling `SalesService` in
process; `serve.get_app_handle("sales")` reaches the same service methods:

    sales = serve.get_app_handle("sales")
    deal = await sales.create_deal.remote(principal, DealCreate(...), source_key="lead:42")

It reaches the customer and product applications over their handles (`app_handle`):
whether a customer exists, a contact's customer, and the prices of order lines.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.auth.fields import FieldCache
from deployments.product.schemas import Quote
from deployments.sales import routes
from deployments.sales.schemas import DealCreate, DealListQuery, StageMove
from deployments.sales.service import SalesService
from gateway.errors import NotFound
from gateway.principal import Principal
from gateway.rpc import Call, GrpcIngress, from_proto, list_query, record_id, to_proto
from nextflow.v1 import common_pb2, deals_pb2
from shards.client import Database, Shards


class _CustomerHandle:
    """The customer application as sales needs it, over its deployment handle."""

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
    """The product application's prices for order lines, over its deployment handle."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    async def quote(self, principal: Principal, book_id: int, product_ids: list[int]) -> Quote:
        quote: Quote = await self._handle.quote.remote(principal, book_id, product_ids)
        return quote


@serve.deployment(name="SalesService")
@serve.ingress()
class SalesApp(ServiceIngress, GrpcIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        self._svc = SalesService(
            await Shards.connect("sales"),
            Database("sales_config"),
            _CustomerHandle(app_handle("customer")),
            _ProductHandle(app_handle("product")),
            FieldCache(Database("auth")),
        )
        self.open_ingress(self._svc, title="NextFlow sales", routers=[routes.router])

    async def check_health(self) -> None:
        """Serve's liveness check: the shard manager actors answer."""
        await self._svc.shards.alive()
        await self._svc.config.alive()

    async def ready(self) -> None:
        """Readiness: the sales database on every server and sales_config answer."""
        await self._svc.shards.ping()
        await self._svc.config.ping()

    # -- nextflow.v1.DealService (gRPC) -----------------------------------------------

    async def GetDeal(  # noqa: N802 (the RPC's name)
        self, request: deals_pb2.GetDealRequest, grpc_context: Any
    ) -> deals_pb2.Deal:
        async def run(principal: Principal, call: Call) -> deals_pb2.Deal:
            found = await self._service.get_deal(principal, record_id(request.id))
            return to_proto(found, deals_pb2.Deal)

        return await self._call(grpc_context, deals_pb2.Deal, run)

    async def ListDeals(  # noqa: N802
        self, request: common_pb2.ListRequest, grpc_context: Any
    ) -> deals_pb2.ListDealsResponse:
        async def run(principal: Principal, call: Call) -> deals_pb2.ListDealsResponse:
            query = list_query(request, DealListQuery)
            page = await self._service.list_deals(principal, query)
            return to_proto(page, deals_pb2.ListDealsResponse)

        return await self._call(grpc_context, deals_pb2.ListDealsResponse, run)

    async def CreateDeal(  # noqa: N802
        self, request: deals_pb2.CreateDealRequest, grpc_context: Any
    ) -> deals_pb2.Deal:
        async def run(principal: Principal, call: Call) -> deals_pb2.Deal:
            data = DealCreate.model_validate(from_proto(request))
            made = await self._service.create_deal(principal, data, once=call.once(request))
            return await self._write(principal, call, made, deals_pb2.Deal)

        return await self._call(grpc_context, deals_pb2.Deal, run)

    async def MoveDealStage(  # noqa: N802
        self, request: deals_pb2.MoveDealStageRequest, grpc_context: Any
    ) -> deals_pb2.Deal:
        async def run(principal: Principal, call: Call) -> deals_pb2.Deal:
            version = call.version()
            body = from_proto(request)
            body.pop("id", None)
            moved = await self._service.move_stage(
                principal, record_id(request.id), StageMove.model_validate(body), version
            )
            return await self._write(principal, call, moved, deals_pb2.Deal)

        return await self._call(grpc_context, deals_pb2.Deal, run)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.sales.app:build_app`)."""
    return SalesApp.bind()  # type: ignore[attr-defined, no-any-return]
