"""Pipelines and their stages, deals and orders, under `/v1/sales` (the sales
application's prefix). Path: this file -> deployments/sales/service.py ->
deployments/sales/repo.py -> shards/ (deals and orders on their customer's shard,
pipelines in sales_config). Order prices come from the product application's price
books; totals are computed on the server."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from deployments._kit.custom_fields import ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.sales.schemas import (
    DealBatch,
    DealBatchResult,
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
from deployments.sales.service import SalesService
from gateway import idempotency
from gateway.context import (
    CurrentPrincipal,
    IfMatch,
    RecordId,
    json,
    list_params,
    no_content,
    record,
    service,
)
from gateway.listing import Page, query_parameters

router = APIRouter()
Service = Annotated[SalesService, Depends(service)]
_BY_PATH = {"customer_id"}  # a customer's own lists take it from the path


# -- pipelines ----------------------------------------------------------------------
@router.post("/pipelines", status_code=201, response_model=PipelineRead, tags=["pipelines"])
async def create_pipeline(
    body: PipelineCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Create a pipeline with its stages in order (each: name, probability 0-100, kind
    `open|won|lost`); `is_default: true` makes it the default for new deals."""
    pipeline = await svc.create_pipeline(principal, body)
    return record(pipeline, 201, f"/v1/sales/pipelines/{pipeline.id}")


@router.get(
    "/pipelines",
    response_model=Page[PipelineRead],
    tags=["pipelines"],
    openapi_extra=query_parameters(PipelineListQuery),
)
async def list_pipelines(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Every pipeline with its stages; `sort` = `created_at` (default) or `-created_at`."""
    query = await list_params(request, PipelineListQuery)
    return json(await svc.list_pipelines(principal, query))


@router.get("/pipelines/{pipeline_id}", response_model=PipelineRead, tags=["pipelines"])
async def get_pipeline(
    pipeline_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.get_pipeline(principal, pipeline_id))


@router.patch("/pipelines/{pipeline_id}", response_model=PipelineRead, tags=["pipelines"])
async def update_pipeline(
    pipeline_id: RecordId,
    body: PipelineUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Rename, or make default (`is_default: true`). `If-Match` -> 412 when stale."""
    return record(await svc.update_pipeline(principal, pipeline_id, body, version))


@router.delete("/pipelines/{pipeline_id}", status_code=204, tags=["pipelines"])
async def delete_pipeline(
    pipeline_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Soft delete (409 for the default pipeline). Its deals keep it."""
    return no_content(await svc.delete_pipeline(principal, pipeline_id, version))


@router.post("/pipelines/{pipeline_id}/restore", response_model=PipelineRead, tags=["pipelines"])
async def restore_pipeline(
    pipeline_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.restore_pipeline(principal, pipeline_id))


@router.get(
    "/pipelines/{pipeline_id}/history",
    response_model=Page[ChangeRead],
    tags=["pipelines"],
    openapi_extra=query_parameters(HistoryQuery),
)
async def pipeline_history(
    pipeline_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of name and default flag (also when another pipeline takes the default),
    creation, deletion, restore, and of its stages: `stage_added` / `stage_updated`
    with the stage's id under `stage_id` and its name, position, probability and kind
    changes. Newest first (`sort=created_at` for oldest first)."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.pipeline_history(principal, pipeline_id, query))


@router.post(
    "/pipelines/{pipeline_id}/stages",
    status_code=201,
    response_model=PipelineRead,
    tags=["pipelines"],
)
async def add_stage(
    pipeline_id: RecordId, body: StageCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Add a stage at `position` (1-based; default last). Returns the whole pipeline."""
    pipeline = await svc.add_stage(principal, pipeline_id, body)
    return record(pipeline, 201, f"/v1/sales/pipelines/{pipeline.id}")


@router.patch(
    "/pipelines/{pipeline_id}/stages/{stage_id}", response_model=PipelineRead, tags=["pipelines"]
)
async def update_stage(
    pipeline_id: RecordId,
    stage_id: RecordId,
    body: StageUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Rename, re-weight, change kind, or reorder (`position`, 1-based) a stage.
    `If-Match` is the stage's version. Returns the whole pipeline."""
    return record(await svc.update_stage(principal, pipeline_id, stage_id, body, version))


# -- deals --------------------------------------------------------------------------
@router.post("/deals", status_code=201, response_model=DealRead, tags=["deals"])
@idempotency.in_effect
async def create_deal(
    body: DealCreate, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Create a deal on its customer's shard (422 naming `customer_id` when the customer
    does not exist). Pipeline defaults to the default one, stage to its first open
    stage, probability to the stage's; `weighted_amount` is computed. An
    `Idempotency-Key` is kept in the deal's own transaction (one deal per key)."""
    once = idempotency.effect_key(request)
    deal = await svc.create_deal(principal, body, once=once)
    return idempotency.answered(record(deal, 201, f"/v1/sales/deals/{deal.id}"), once)


@router.post("/deals/batch", response_model=DealBatchResult, tags=["deals"])
@idempotency.in_effect
async def batch_deals(
    body: DealBatch, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Up to 100 deal items, as `POST /v1/customers/batch`: each create on its
    customer's shard with the single create's checks (customer, contact, pipeline,
    stage, owner), updates with `if_match`, deletes; one transaction per logical shard;
    each item once under one `Idempotency-Key`. Stage moves keep their own action."""
    once = idempotency.effect_key(request)
    return idempotency.answered(json(await svc.batch_deals(principal, body, once)), once)


@router.get(
    "/deals",
    response_model=Page[DealRead],
    tags=["deals"],
    openapi_extra=query_parameters(DealListQuery),
)
async def list_deals(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Deals across all shards, cursor-paged. Filters: `status`, `pipeline_id`,
    `stage_id`, `owner_id`, `customer_id`, `amount[gte]`, `amount[lte]`,
    `expected_close_date[gte]`, `expected_close_date[lt]`, `created_at[gte]`,
    `created_at[lt]`; `sort` = `created_at`, `amount`, `expected_close_date` (prefix
    `-` for descending; default `-created_at`); `limit`, `cursor`, `count=true`."""
    query = await list_params(request, DealListQuery)
    return json(await svc.list_deals(principal, query))


@router.get(
    "/customers/{customer_id}/deals",
    response_model=Page[DealRead],
    tags=["deals"],
    openapi_extra=query_parameters(DealListQuery, without=_BY_PATH),
)
async def list_customer_deals(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A customer's deals (one shard); the same filters and sorts as `GET /v1/sales/deals`."""
    query = await list_params(request, DealListQuery, without=_BY_PATH)
    return json(await svc.list_customer_deals(principal, customer_id, query))


@router.get("/deals/schema", response_model=ObjectSchema, tags=["deals"])
async def deal_schema(principal: CurrentPrincipal, svc: Service) -> Response:
    """The deal create body as JSON Schema with its live custom fields."""
    return json(await svc.deal_schema(principal))


@router.get("/deals/{deal_id}", response_model=DealRead, tags=["deals"])
async def get_deal(deal_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_deal(principal, deal_id))


@router.patch("/deals/{deal_id}", response_model=DealRead, tags=["deals"])
async def update_deal(
    deal_id: RecordId,
    body: DealUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Partial update of name, amount, contact, owner (`deal:assign` for another),
    probability, expected close date. Stage and status change through the actions."""
    return record(await svc.update_deal(principal, deal_id, body, version))


@router.delete("/deals/{deal_id}", status_code=204, tags=["deals"])
async def delete_deal(
    deal_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Soft delete (restore with `POST /v1/sales/deals/{id}/restore`)."""
    return no_content(await svc.delete_deal(principal, deal_id, version))


@router.post("/deals/{deal_id}/restore", response_model=DealRead, tags=["deals"])
async def restore_deal(deal_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.restore_deal(principal, deal_id))


@router.get(
    "/deals/{deal_id}/history",
    response_model=Page[ChangeRead],
    tags=["deals"],
    openapi_extra=query_parameters(HistoryQuery),
)
async def deal_history(
    deal_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of name, amount, currency, stage, pipeline, owner, probability, status
    and expected close date; newest first (`sort=created_at` for oldest first)."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.deal_history(principal, deal_id, query))


@router.get(
    "/deals/{deal_id}/stage-history",
    response_model=Page[StageChangeRead],
    tags=["deals"],
    openapi_extra=query_parameters(StageHistoryQuery),
)
async def stage_history(
    deal_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Every stage transition, oldest first: from/to stage and pipeline, probability,
    who, when, and seconds spent in the previous stage."""
    query = await list_params(request, StageHistoryQuery)
    return json(await svc.stage_history(principal, deal_id, query))


@router.post("/deals/{deal_id}/stage", response_model=DealRead, tags=["deals"])
async def move_stage(
    deal_id: RecordId,
    body: StageMove,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Move an open deal to another open stage of its pipeline (probability from the
    stage unless given). Won/lost stages: use `/won` or `/lost` (422 here)."""
    return record(await svc.move_stage(principal, deal_id, body, version))


@router.post("/deals/{deal_id}/move", response_model=DealRead, tags=["deals"])
async def move_pipeline(
    deal_id: RecordId,
    body: PipelineMove,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Move an open deal to an open stage of another pipeline."""
    return record(await svc.move_pipeline(principal, deal_id, body, version))


@router.post("/deals/{deal_id}/won", response_model=DealRead, tags=["deals"])
async def win_deal(
    deal_id: RecordId,
    body: WonRequest,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Close as won (the pipeline's won stage; reason optional). 409 unless open."""
    return record(await svc.win(principal, deal_id, body, version))


@router.post("/deals/{deal_id}/lost", response_model=DealRead, tags=["deals"])
async def lose_deal(
    deal_id: RecordId,
    body: LostRequest,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Close as lost (the pipeline's lost stage); `reason` is required. 409 unless open."""
    return record(await svc.lose(principal, deal_id, body, version))


@router.post("/deals/{deal_id}/reopen", response_model=DealRead, tags=["deals"])
async def reopen_deal(
    deal_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Reopen a won or lost deal into the open stage it left. 409 when already open."""
    return record(await svc.reopen(principal, deal_id, version))


# -- orders -------------------------------------------------------------------------
@router.post("/orders", status_code=201, response_model=OrderRead, tags=["orders"])
async def create_order(body: OrderCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """A draft order. Each line: `product_id`, `quantity` (decimal string > 0),
    `discount_percent`, optional `tax_percent` (default: the product's); sku, name and
    unit price are snapshotted from the price book (an explicit `unit_price` needs
    `product:write`). Currency from the price book; totals computed, never sent."""
    order = await svc.create_order(principal, body)
    return record(order, 201, f"/v1/sales/orders/{order.id}")


@router.post("/deals/{deal_id}/order", status_code=201, response_model=OrderRead, tags=["orders"])
async def create_deal_order(
    deal_id: RecordId, body: DealOrderCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """An order from a won deal (409 unless won, or when it already has a live order)."""
    order = await svc.create_deal_order(principal, deal_id, body)
    return record(order, 201, f"/v1/sales/orders/{order.id}")


@router.get(
    "/orders",
    response_model=Page[OrderRead],
    tags=["orders"],
    openapi_extra=query_parameters(OrderListQuery),
)
async def list_orders(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Orders across all shards, cursor-paged. Filters: `status`, `customer_id`,
    `deal_id`, `price_book_id`, `owner_id`, `total[gte]`, `total[lte]`,
    `created_at[gte]`, `created_at[lt]`; `sort` = `created_at`, `total` (`-` for
    descending; default `-created_at`); `limit`, `cursor`, `count=true`."""
    query = await list_params(request, OrderListQuery)
    return json(await svc.list_orders(principal, query))


@router.get(
    "/customers/{customer_id}/orders",
    response_model=Page[OrderRead],
    tags=["orders"],
    openapi_extra=query_parameters(OrderListQuery, without=_BY_PATH),
)
async def list_customer_orders(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A customer's orders (one shard); the same filters and sorts as `GET /v1/sales/orders`."""
    query = await list_params(request, OrderListQuery, without=_BY_PATH)
    return json(await svc.list_customer_orders(principal, customer_id, query))


@router.get("/orders/{order_id}", response_model=OrderRead, tags=["orders"])
async def get_order(order_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_order(principal, order_id))


@router.patch("/orders/{order_id}", response_model=OrderRead, tags=["orders"])
async def update_order(
    order_id: RecordId,
    body: OrderUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Drafts only (409 once confirmed or cancelled): `notes`, or `lines` (replaced and
    re-priced, with an optional new `price_book_id`)."""
    return record(await svc.update_order(principal, order_id, body, version))


@router.delete("/orders/{order_id}", status_code=204, tags=["orders"])
async def delete_order(
    order_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Soft delete of a draft or cancelled order (409 for a confirmed one)."""
    return no_content(await svc.delete_order(principal, order_id, version))


@router.post("/orders/{order_id}/restore", response_model=OrderRead, tags=["orders"])
async def restore_order(order_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.restore_order(principal, order_id))


@router.post("/orders/{order_id}/confirm", response_model=OrderRead, tags=["orders"])
async def confirm_order(
    order_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Draft -> confirmed; a confirmed order can no longer change (only be cancelled)."""
    return record(await svc.confirm_order(principal, order_id, version))


@router.post("/orders/{order_id}/cancel", response_model=OrderRead, tags=["orders"])
async def cancel_order(
    order_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Draft or confirmed -> cancelled."""
    return record(await svc.cancel_order(principal, order_id, version))


@router.get(
    "/orders/{order_id}/history",
    response_model=Page[ChangeRead],
    tags=["orders"],
    openapi_extra=query_parameters(HistoryQuery),
)
async def order_history(
    order_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of status, price book, currency, totals and notes; newest first."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.order_history(principal, order_id, query))
