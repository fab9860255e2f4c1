"""Sales pipelines and their ordered stages. Path: this file ->
deployments/sales/service.py -> deployments/sales/repo.py -> shards/ (sales_config)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.sales.schemas import (
    PipelineCreate,
    PipelineListQuery,
    PipelineRead,
    PipelineUpdate,
    StageCreate,
    StageUpdate,
)
from gateway.context import CurrentPrincipal, IfMatch, ServicesDep, json, no_content, record
from gateway.listing import Page, parse_list_params
from shards.ids import MAX_ID

router = APIRouter(tags=["pipelines"])
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


@router.post("/pipelines", status_code=201, response_model=PipelineRead)
async def create_pipeline(
    body: PipelineCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Create a pipeline with its stages in order (each: name, probability 0-100, kind
    `open|won|lost`); `is_default: true` makes it the default for new deals."""
    pipeline = await services.sales.create_pipeline.remote(principal, body)
    return record(pipeline, 201, f"/pipelines/{pipeline.id}")


@router.get("/pipelines", response_model=Page[PipelineRead])
async def list_pipelines(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Every pipeline with its stages; `sort` = `created_at` (default) or `-created_at`."""
    query = parse_list_params(request.query_params.multi_items(), PipelineListQuery)
    return json(await services.sales.list_pipelines.remote(principal, query))


@router.get("/pipelines/{pipeline_id}", response_model=PipelineRead)
async def get_pipeline(
    pipeline_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.sales.get_pipeline.remote(principal, pipeline_id))


@router.patch("/pipelines/{pipeline_id}", response_model=PipelineRead)
async def update_pipeline(
    pipeline_id: RecordId,
    body: PipelineUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Rename, or make default (`is_default: true`). `If-Match` -> 412 when stale."""
    return record(
        await services.sales.update_pipeline.remote(principal, pipeline_id, body, version)
    )


@router.delete("/pipelines/{pipeline_id}", status_code=204)
async def delete_pipeline(
    pipeline_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Soft delete (409 for the default pipeline). Its deals keep it."""
    return no_content(await services.sales.delete_pipeline.remote(principal, pipeline_id, version))


@router.post("/pipelines/{pipeline_id}/restore", response_model=PipelineRead)
async def restore_pipeline(
    pipeline_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.sales.restore_pipeline.remote(principal, pipeline_id))


@router.get("/pipelines/{pipeline_id}/history", response_model=Page[ChangeRead])
async def pipeline_history(
    pipeline_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Changes of name and default flag (also when another pipeline takes the default),
    creation, deletion, restore, and of its stages: `stage_added` / `stage_updated`
    with the stage's id under `stage_id` and its name, position, probability and kind
    changes. Newest first (`sort=created_at` for oldest first)."""
    query = parse_list_params(request.query_params.multi_items(), HistoryQuery)
    return json(await services.sales.pipeline_history.remote(principal, pipeline_id, query))


@router.post("/pipelines/{pipeline_id}/stages", status_code=201, response_model=PipelineRead)
async def add_stage(
    pipeline_id: RecordId, body: StageCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Add a stage at `position` (1-based; default last). Returns the whole pipeline."""
    pipeline = await services.sales.add_stage.remote(principal, pipeline_id, body)
    return record(pipeline, 201, f"/pipelines/{pipeline.id}")


@router.patch("/pipelines/{pipeline_id}/stages/{stage_id}", response_model=PipelineRead)
async def update_stage(
    pipeline_id: RecordId,
    stage_id: RecordId,
    body: StageUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Rename, re-weight, change kind, or reorder (`position`, 1-based) a stage.
    `If-Match` is the stage's version. Returns the whole pipeline."""
    return record(
        await services.sales.update_stage.remote(principal, pipeline_id, stage_id, body, version)
    )
