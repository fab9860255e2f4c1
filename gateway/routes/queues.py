"""Support configuration: queues (with members and an assignment strategy) and the
SLA policy of each priority. Path: this file -> deployments/support/service.py ->
deployments/support/config_repo.py -> the `support_config` database."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request
from starlette.responses import Response

from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.support.schemas import (
    QueueCreate,
    QueueListQuery,
    QueueMemberPut,
    QueueRead,
    QueueUpdate,
    SlaPolicyPut,
    SlaPolicyRead,
)
from gateway.context import CurrentPrincipal, IfMatch, ServicesDep, json, no_content, record
from gateway.listing import Page, parse_list_params
from shards.ids import MAX_ID

router = APIRouter(tags=["support configuration"])
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


@router.post("/queues", status_code=201, response_model=QueueRead)
async def create_queue(
    body: QueueCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """A queue: `strategy` = `round_robin` (next active member in turn), `least_busy`
    (fewest open tickets, ties in turn) or `manual`; `members` = agent user ids."""
    queue = await services.support.create_queue.remote(principal, body)
    return record(queue, 201, f"/queues/{queue.id}")


@router.get("/queues", response_model=Page[QueueRead])
async def list_queues(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Queues; `sort` = `created_at` (default), `name` (prefix `-` to reverse)."""
    query = parse_list_params(request.query_params.multi_items(), QueueListQuery)
    return json(await services.support.list_queues.remote(principal, query))


@router.get("/queues/{queue_id}", response_model=QueueRead)
async def get_queue(
    queue_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.support.get_queue.remote(principal, queue_id))


@router.patch("/queues/{queue_id}", response_model=QueueRead)
async def update_queue(
    queue_id: RecordId,
    body: QueueUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    return record(await services.support.update_queue.remote(principal, queue_id, body, version))


@router.delete("/queues/{queue_id}", status_code=204)
async def delete_queue(
    queue_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Soft delete: existing tickets keep the queue id; new tickets cannot use it."""
    return no_content(await services.support.delete_queue.remote(principal, queue_id, version))


@router.post("/queues/{queue_id}/restore", response_model=QueueRead)
async def restore_queue(
    queue_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.support.restore_queue.remote(principal, queue_id))


@router.get("/queues/{queue_id}/history", response_model=Page[ChangeRead])
async def queue_history(
    queue_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Changes of name and strategy, creation, deletion, restore, and membership:
    `member_added`, `member_activated`, `member_deactivated`, `member_removed` with
    `user_id` and `active`. Newest first (`sort=created_at` for oldest first)."""
    query = parse_list_params(request.query_params.multi_items(), HistoryQuery)
    return json(await services.support.queue_history.remote(principal, queue_id, query))


@router.put("/queues/{queue_id}/members/{user_id}", response_model=QueueRead)
async def put_member(
    queue_id: RecordId,
    user_id: RecordId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    body: Annotated[QueueMemberPut | None, Body()] = None,
) -> Response:
    """Add an agent to the queue, or set `active` (an inactive member gets no new
    tickets). Returns the queue."""
    data = body or QueueMemberPut()
    return record(await services.support.put_member.remote(principal, queue_id, user_id, data))


@router.delete("/queues/{queue_id}/members/{user_id}", response_model=QueueRead)
async def remove_member(
    queue_id: RecordId, user_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Take an agent out of the queue. Returns the queue."""
    return record(await services.support.remove_member.remote(principal, queue_id, user_id))


@router.get("/sla-policies", response_model=Page[SlaPolicyRead])
async def list_sla_policies(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """The SLA targets of each priority (seconds): `first_response_s`, `resolution_s`."""
    return json(await services.support.list_sla_policies.remote(principal))


@router.put("/sla-policies/{priority}", response_model=SlaPolicyRead)
async def put_sla_policy(
    priority: str,
    body: SlaPolicyPut,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Set a priority's targets (`low`, `normal`, `high`, `urgent`); they apply to
    tickets created or re-prioritised from then on."""
    return record(await services.support.put_sla_policy.remote(principal, priority, body, version))


@router.get("/sla-policies/{priority}/history", response_model=Page[ChangeRead])
async def sla_policy_history(
    priority: str, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Changes of a priority's `first_response_s` and `resolution_s` (record type
    `sla_policy`, record id the policy's stable `id`). Newest first."""
    query = parse_list_params(request.query_params.multi_items(), HistoryQuery)
    return json(await services.support.sla_policy_history.remote(principal, priority, query))
