"""Deals (opportunities), on their customer's shard. Path: this file ->
deployments/sales/service.py -> deployments/sales/repo.py -> shards/."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.sales.schemas import (
    DealCreate,
    DealListQuery,
    DealRead,
    DealUpdate,
    LostRequest,
    PipelineMove,
    StageChangeRead,
    StageHistoryQuery,
    StageMove,
    WonRequest,
)
from gateway import idempotency
from gateway.context import CurrentPrincipal, IfMatch, ServicesDep, json, no_content, record
from gateway.listing import Page, parse_list_params
from shards.ids import MAX_ID

router = APIRouter(tags=["deals"])
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


@router.post("/deals", status_code=201, response_model=DealRead)
async def create_deal(
    body: DealCreate, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Create a deal on its customer's shard (422 naming `customer_id` when the customer
    does not exist). Pipeline defaults to the default one, stage to its first open
    stage, probability to the stage's; `weighted_amount` is computed. An
    `Idempotency-Key` is also the deal's `source_key` (one deal per key)."""
    key = idempotency.source_key(request)
    deal = await services.sales.create_deal.remote(principal, body, source_key=key)
    return record(deal, 201, f"/deals/{deal.id}")


@router.get("/deals", response_model=Page[DealRead])
async def list_deals(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Deals across all shards, cursor-paged. Filters: `status`, `pipeline_id`,
    `stage_id`, `owner_id`, `customer_id`, `amount[gte]`, `amount[lte]`,
    `expected_close_date[gte]`, `expected_close_date[lt]`, `created_at[gte]`,
    `created_at[lt]`; `sort` = `created_at`, `amount`, `expected_close_date` (prefix
    `-` for descending; default `-created_at`); `limit`, `cursor`, `count=true`."""
    query = parse_list_params(request.query_params.multi_items(), DealListQuery)
    return json(await services.sales.list_deals.remote(principal, query))


@router.get("/customers/{customer_id}/deals", response_model=Page[DealRead])
async def list_customer_deals(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """A customer's deals (one shard); the same filters and sorts as `GET /deals`."""
    query = parse_list_params(request.query_params.multi_items(), DealListQuery)
    return json(await services.sales.list_customer_deals.remote(principal, customer_id, query))


@router.get("/deals/{deal_id}", response_model=DealRead)
async def get_deal(
    deal_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.sales.get_deal.remote(principal, deal_id))


@router.patch("/deals/{deal_id}", response_model=DealRead)
async def update_deal(
    deal_id: RecordId,
    body: DealUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Partial update of name, amount, contact, owner (`deal:assign` for another),
    probability, expected close date. Stage and status change through the actions."""
    return record(await services.sales.update_deal.remote(principal, deal_id, body, version))


@router.delete("/deals/{deal_id}", status_code=204)
async def delete_deal(
    deal_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Soft delete (restore with `POST /deals/{id}/restore`)."""
    return no_content(await services.sales.delete_deal.remote(principal, deal_id, version))


@router.post("/deals/{deal_id}/restore", response_model=DealRead)
async def restore_deal(
    deal_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.sales.restore_deal.remote(principal, deal_id))


@router.get("/deals/{deal_id}/history", response_model=Page[ChangeRead])
async def deal_history(
    deal_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Changes of name, amount, currency, stage, pipeline, owner, probability, status
    and expected close date; newest first (`sort=created_at` for oldest first)."""
    query = parse_list_params(request.query_params.multi_items(), HistoryQuery)
    return json(await services.sales.deal_history.remote(principal, deal_id, query))


@router.get("/deals/{deal_id}/stage-history", response_model=Page[StageChangeRead])
async def stage_history(
    deal_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Every stage transition, oldest first: from/to stage and pipeline, probability,
    who, when, and seconds spent in the previous stage."""
    query = parse_list_params(request.query_params.multi_items(), StageHistoryQuery)
    return json(await services.sales.stage_history.remote(principal, deal_id, query))


@router.post("/deals/{deal_id}/stage", response_model=DealRead)
async def move_stage(
    deal_id: RecordId,
    body: StageMove,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Move an open deal to another open stage of its pipeline (probability from the
    stage unless given). Won/lost stages: use `/won` or `/lost` (422 here)."""
    return record(await services.sales.move_stage.remote(principal, deal_id, body, version))


@router.post("/deals/{deal_id}/move", response_model=DealRead)
async def move_pipeline(
    deal_id: RecordId,
    body: PipelineMove,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Move an open deal to an open stage of another pipeline."""
    return record(await services.sales.move_pipeline.remote(principal, deal_id, body, version))


@router.post("/deals/{deal_id}/won", response_model=DealRead)
async def win_deal(
    deal_id: RecordId,
    body: WonRequest,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Close as won (the pipeline's won stage; reason optional). 409 unless open."""
    return record(await services.sales.win.remote(principal, deal_id, body, version))


@router.post("/deals/{deal_id}/lost", response_model=DealRead)
async def lose_deal(
    deal_id: RecordId,
    body: LostRequest,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Close as lost (the pipeline's lost stage); `reason` is required. 409 unless open."""
    return record(await services.sales.lose.remote(principal, deal_id, body, version))


@router.post("/deals/{deal_id}/reopen", response_model=DealRead)
async def reopen_deal(
    deal_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Reopen a won or lost deal into the open stage it left. 409 when already open."""
    return record(await services.sales.reopen.remote(principal, deal_id, version))
