"""Orders with line items, on their customer's shard; prices come from the Product
service's price books, totals are computed on the server. Path: this file ->
deployments/sales/service.py -> deployments/sales/repo.py -> shards/."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.sales.schemas import (
    DealOrderCreate,
    OrderCreate,
    OrderListQuery,
    OrderRead,
    OrderUpdate,
)
from gateway.context import CurrentPrincipal, IfMatch, ServicesDep, json, no_content, record
from gateway.listing import Page, parse_list_params
from shards.ids import MAX_ID

router = APIRouter(tags=["orders"])
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


@router.post("/orders", status_code=201, response_model=OrderRead)
async def create_order(
    body: OrderCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """A draft order. Each line: `product_id`, `quantity` (decimal string > 0),
    `discount_percent`, optional `tax_percent` (default: the product's); sku, name and
    unit price are snapshotted from the price book (an explicit `unit_price` needs
    `product:write`). Currency from the price book; totals computed, never sent."""
    order = await services.sales.create_order.remote(principal, body)
    return record(order, 201, f"/orders/{order.id}")


@router.post("/deals/{deal_id}/order", status_code=201, response_model=OrderRead)
async def create_deal_order(
    deal_id: RecordId, body: DealOrderCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """An order from a won deal (409 unless won, or when it already has a live order)."""
    order = await services.sales.create_deal_order.remote(principal, deal_id, body)
    return record(order, 201, f"/orders/{order.id}")


@router.get("/orders", response_model=Page[OrderRead])
async def list_orders(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Orders across all shards, cursor-paged. Filters: `status`, `customer_id`,
    `deal_id`, `price_book_id`, `owner_id`, `total[gte]`, `total[lte]`,
    `created_at[gte]`, `created_at[lt]`; `sort` = `created_at`, `total` (`-` for
    descending; default `-created_at`); `limit`, `cursor`, `count=true`."""
    query = parse_list_params(request.query_params.multi_items(), OrderListQuery)
    return json(await services.sales.list_orders.remote(principal, query))


@router.get("/customers/{customer_id}/orders", response_model=Page[OrderRead])
async def list_customer_orders(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """A customer's orders (one shard); the same filters and sorts as `GET /orders`."""
    query = parse_list_params(request.query_params.multi_items(), OrderListQuery)
    return json(await services.sales.list_customer_orders.remote(principal, customer_id, query))


@router.get("/orders/{order_id}", response_model=OrderRead)
async def get_order(
    order_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.sales.get_order.remote(principal, order_id))


@router.patch("/orders/{order_id}", response_model=OrderRead)
async def update_order(
    order_id: RecordId,
    body: OrderUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Drafts only (409 once confirmed or cancelled): `notes`, or `lines` (replaced and
    re-priced, with an optional new `price_book_id`)."""
    return record(await services.sales.update_order.remote(principal, order_id, body, version))


@router.delete("/orders/{order_id}", status_code=204)
async def delete_order(
    order_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Soft delete of a draft or cancelled order (409 for a confirmed one)."""
    return no_content(await services.sales.delete_order.remote(principal, order_id, version))


@router.post("/orders/{order_id}/restore", response_model=OrderRead)
async def restore_order(
    order_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.sales.restore_order.remote(principal, order_id))


@router.post("/orders/{order_id}/confirm", response_model=OrderRead)
async def confirm_order(
    order_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Draft -> confirmed; a confirmed order can no longer change (only be cancelled)."""
    return record(await services.sales.confirm_order.remote(principal, order_id, version))


@router.post("/orders/{order_id}/cancel", response_model=OrderRead)
async def cancel_order(
    order_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Draft or confirmed -> cancelled."""
    return record(await services.sales.cancel_order.remote(principal, order_id, version))


@router.get("/orders/{order_id}/history", response_model=Page[ChangeRead])
async def order_history(
    order_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Changes of status, price book, currency, totals and notes; newest first."""
    query = parse_list_params(request.query_params.multi_items(), HistoryQuery)
    return json(await services.sales.order_history.remote(principal, order_id, query))
