"""Activities and a customer's timeline, under `/v1/customers` (the customer
application's prefix). Path: this file -> service.py -> repo.py -> shards/."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from deployments._kit.timeline import TimelineItem, TimelineQuery
from deployments.customer.activities.schemas import (
    ActivityCreate,
    ActivityListQuery,
    ActivityRead,
    ActivityUpdate,
    TaskListQuery,
)
from deployments.customer.activities.service import Activities
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

router = APIRouter(tags=["activities"])
Service = Annotated[Activities, Depends(service)]


@router.post("/activities", status_code=201, response_model=ActivityRead)
@idempotency.in_effect
async def create_activity(
    body: ActivityCreate, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Log a note, task, call, meeting or e-mail on a customer (`customer_id`), or on
    a lead not yet converted (`lead_id` alone). It may name one of the customer's
    contacts, deals and tickets. A task is due (`due_at`), assigned (`assignee_id`,
    the caller by default), prioritised and reminded (`remind_at`: the assignee gets
    a notification). An `Idempotency-Key` is kept in the activity's own transaction."""
    once = idempotency.effect_key(request)
    made = await svc.create_activity(principal, body, once)
    return idempotency.answered(record(made, 201, f"/v1/customers/activities/{made.id}"), once)


@router.get(
    "/activities/my-tasks",
    response_model=Page[ActivityRead],
    openapi_extra=query_parameters(TaskListQuery),
)
async def my_tasks(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """The caller's open tasks across every shard, soonest due first (those with no
    due date last). Filter: `due_at[lt]` (e.g. overdue: now)."""
    query = await list_params(request, TaskListQuery)
    return json(await svc.my_tasks(principal, query))


@router.get("/activities/{activity_id}", response_model=ActivityRead)
async def get_activity(
    activity_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.get_activity(principal, activity_id))


@router.patch("/activities/{activity_id}", response_model=ActivityRead)
async def update_activity(
    activity_id: RecordId,
    body: ActivityUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Partial update by its owner, or a task's assignee; `{"done": true}` completes a
    task (`false` reopens it). `If-Match: "<version>"` refuses a stale write (412)."""
    return record(await svc.update_activity(principal, activity_id, body, version))


@router.delete("/activities/{activity_id}", status_code=204)
async def delete_activity(
    activity_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Soft delete (restore with `POST /v1/customers/activities/{id}/restore`)."""
    return no_content(await svc.delete_activity(principal, activity_id, version))


@router.post("/activities/{activity_id}/restore", response_model=ActivityRead)
async def restore_activity(
    activity_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.restore_activity(principal, activity_id))


@router.get(
    "/{customer_id}/activities",
    response_model=Page[ActivityRead],
    openapi_extra=query_parameters(ActivityListQuery),
)
async def list_activities(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A customer's activities, newest first by `at` (when it happened, else when it
    was logged). Filters: `kind` / `kind[in]=call,meeting`, `open=true` (tasks not
    done) or `open=false`."""
    query = await list_params(request, ActivityListQuery)
    return json(await svc.list_activities(principal, customer_id, query))


@router.get(
    "/leads/{lead_id}/activities",
    response_model=Page[ActivityRead],
    openapi_extra=query_parameters(ActivityListQuery),
)
async def list_lead_activities(
    lead_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A lead's activities (logged before its conversion, and those its customer got
    from it), as `GET /v1/customers/{id}/activities`."""
    query = await list_params(request, ActivityListQuery)
    return json(await svc.list_lead_activities(principal, lead_id, query))


@router.get(
    "/{customer_id}/timeline",
    response_model=Page[TimelineItem],
    openapi_extra=query_parameters(TimelineQuery),
)
async def customer_timeline(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Everything that happened to a customer in one cursor-paged stream, newest first
    (`sort=at` for oldest first): its activities (`note`, `task`, `call`, `meeting`,
    `email`), field changes of it and its contacts (`change`), deals created
    (`deal`) and moved (`deal_stage`), orders (`order`), tickets (`ticket`) and their
    comments (`comment`), and files attached to it (`file`); each kind only when the
    caller may read it. Filters: `kind[in]=call,deal_stage`, `at[gte]`, `at[lt]`."""
    query = await list_params(request, TimelineQuery)
    return json(await svc.timeline(principal, customer_id, query))
