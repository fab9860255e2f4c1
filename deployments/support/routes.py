"""Support, under `/v1/support` (the support application's prefix): tickets and their
comments, and the support configuration (queues with members and an assignment
strategy, the SLA policy of each priority). Path: this file ->
deployments/support/service.py -> deployments/support/repo.py -> shards/ (tickets) or
deployments/support/config_repo.py -> the `support_config` database (configuration).

Workflow: `POST /v1/support/tickets/{id}/status {"status": ...}` moves a ticket
(new -> assigned -> pending -> resolved -> closed, reopen = resolved -> assigned/new;
closed is final; anything else is a 409), `POST /v1/support/tickets/{id}/assign` gives
it to an agent. SLA targets come from `/v1/support/sla-policies`; the resolution clock
stops while a ticket is pending or resolved."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from starlette.responses import Response

from deployments._kit.custom_fields import ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.support.rules import Priority
from deployments.support.schemas import (
    CommentCreate,
    CommentListQuery,
    CommentRead,
    QueueCreate,
    QueueListQuery,
    QueueMemberPut,
    QueueRead,
    QueueUpdate,
    SlaPolicyPut,
    SlaPolicyRead,
    SweepResult,
    TicketAssign,
    TicketBatch,
    TicketBatchResult,
    TicketCreate,
    TicketListQuery,
    TicketRead,
    TicketSearch,
    TicketStatusChange,
    TicketUpdate,
)
from deployments.support.service import SupportService
from gateway import idempotency
from gateway.context import (
    CurrentPrincipal,
    IfMatch,
    RecordId,
    json,
    list_params,
    no_content,
    record,
    search_params,
    service,
)
from gateway.listing import Page, query_parameters

router = APIRouter()  # the application's routes: the two below
_tickets = APIRouter(tags=["tickets"])
_config = APIRouter(tags=["support configuration"])
Service = Annotated[SupportService, Depends(service)]


@_tickets.post("/tickets", status_code=201, response_model=TicketRead)
async def create_ticket(body: TicketCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """Open a ticket for a customer (it lives on the customer's shard). Without
    `queue_id` it goes to the default queue; a round-robin or least-busy queue assigns
    it at once (status `assigned`). SLA due times come from the priority's policy."""
    ticket = await svc.create(principal, body)
    return record(ticket, 201, f"/v1/support/tickets/{ticket.id}")


@_tickets.get(
    "/tickets", response_model=Page[TicketRead], openapi_extra=query_parameters(TicketListQuery)
)
async def list_tickets(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Tickets across all shards, cursor-paged. Filters: `status` / `status[in]=a,b`,
    `priority` / `priority[in]`, `queue_id`, `assignee_id`, `unassigned=true|false`,
    `customer_id`, `tag` / `tag[in]`, `sla_breached`, `first_response_breached`,
    `resolution_breached` (=true|false, as of now), `created_at[gte]`, `created_at[lt]`,
    `resolution_due_at[lt]`; `sort` = `created_at`, `priority`,
    `resolution_due_at` (prefix `-` for descending; default `-created_at`);
    `limit` (max 200), `cursor`, `count=true`."""
    query = await list_params(request, TicketListQuery)
    return json(await svc.list(principal, query))


@_tickets.post("/tickets/batch", response_model=TicketBatchResult)
@idempotency.in_effect
async def batch_tickets(
    body: TicketBatch, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Up to 100 ticket items, as `POST /v1/customers/batch`: each create checked as a
    single one (customer, contact, queue; its assignee picked by the queue), updates
    with `if_match`, deletes; one transaction per logical shard; each item once under
    one `Idempotency-Key`. Status and assignment keep their own actions."""
    once = idempotency.effect_key(request)
    return idempotency.answered(json(await svc.batch(principal, body, once)), once)


@_tickets.post("/tickets/search", response_model=Page[TicketRead])
async def search_tickets(
    body: TicketSearch, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The list's query as a JSON body, spelled as in the query string:
    `{"filter": {"status[in]": ["open", "pending"], "queue_id": 7}, "sort": "priority"}`;
    `"view": "<id>"` applies a saved view under it."""
    return json(await svc.list(principal, await search_params(request, body, TicketListQuery)))


@_tickets.post("/tickets/sla/sweep", response_model=SweepResult)
async def sweep_sla(principal: CurrentPrincipal, svc: Service) -> Response:
    """Store SLA breach flags now (`sla:write`); every SupportService replica also does
    this periodically. Returns the ids it flagged."""
    return json(await svc.sweep_sla(principal))


@_tickets.get(
    "/customers/{customer_id}/tickets",
    response_model=Page[TicketRead],
    openapi_extra=query_parameters(TicketListQuery, without={"customer_id"}),  # the path's
)
async def list_customer_tickets(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A customer's tickets (one shard); the same filters and sorts as
    `GET /v1/support/tickets`."""
    query = await list_params(request, TicketListQuery, without={"customer_id"})
    return json(await svc.list_for_customer(principal, customer_id, query))


@_tickets.get("/tickets/schema", response_model=ObjectSchema)
async def ticket_schema(principal: CurrentPrincipal, svc: Service) -> Response:
    """The ticket create body as JSON Schema with its live custom fields."""
    return json(await svc.ticket_schema(principal))


@_tickets.get("/tickets/{ticket_id}", response_model=TicketRead)
async def get_ticket(ticket_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    """A ticket, its breach flags as of now."""
    return record(await svc.get(principal, ticket_id))


@_tickets.patch("/tickets/{ticket_id}", response_model=TicketRead)
async def update_ticket(
    ticket_id: RecordId,
    body: TicketUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Partial update (subject, description, priority, channel, tags, contact, queue).
    A new priority recomputes the SLA due times. `If-Match` -> 412 when stale."""
    return record(await svc.update(principal, ticket_id, body, version))


@_tickets.delete("/tickets/{ticket_id}", status_code=204)
async def delete_ticket(
    ticket_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Soft delete (restore with `POST /v1/support/tickets/{id}/restore`)."""
    return no_content(await svc.delete(principal, ticket_id, version))


@_tickets.post("/tickets/{ticket_id}/restore", response_model=TicketRead)
async def restore_ticket(
    ticket_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.restore(principal, ticket_id))


@_tickets.post("/tickets/{ticket_id}/status", response_model=TicketRead)
async def change_status(
    ticket_id: RecordId,
    body: TicketStatusChange,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Move the ticket in its workflow; a move the workflow does not allow is a 409
    naming the allowed ones. Pending and resolved stop the resolution clock; leaving
    them pushes `resolution_due_at` by the stopped time."""
    return record(await svc.set_status(principal, ticket_id, body, version))


@_tickets.post("/tickets/{ticket_id}/assign", response_model=TicketRead)
async def assign_ticket(
    ticket_id: RecordId,
    body: TicketAssign,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Assign to an agent (`ticket:assign`, or yourself with `ticket:write`); null
    unassigns. A new ticket becomes assigned; an unassigned one goes back to new."""
    return record(await svc.assign(principal, ticket_id, body, version))


@_tickets.get(
    "/tickets/{ticket_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def ticket_history(
    ticket_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of status, priority, assignee, queue, subject, due times and breach
    flags, newest first."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.history(principal, ticket_id, query))


@_tickets.post("/tickets/{ticket_id}/comments", status_code=201, response_model=CommentRead)
async def add_comment(
    ticket_id: RecordId, body: CommentCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A public reply (`public: true`; the first one is the ticket's first response) or
    an internal note."""
    comment = await svc.add_comment(principal, ticket_id, body)
    return record(comment, 201, f"/v1/support/tickets/{ticket_id}/comments")


@_tickets.get(
    "/tickets/{ticket_id}/comments",
    response_model=Page[CommentRead],
    openapi_extra=query_parameters(CommentListQuery),
)
async def list_comments(
    ticket_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Oldest first (`sort=-created_at` for newest first), cursor pages."""
    query = await list_params(request, CommentListQuery)
    return json(await svc.list_comments(principal, ticket_id, query))


# -- support configuration: queues and SLA policies --------------------------------
@_config.post("/queues", status_code=201, response_model=QueueRead)
async def create_queue(body: QueueCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """A queue: `strategy` = `round_robin` (next active member in turn), `least_busy`
    (fewest open tickets, ties in turn) or `manual`; `members` = agent user ids."""
    queue = await svc.create_queue(principal, body)
    return record(queue, 201, f"/v1/support/queues/{queue.id}")


@_config.get(
    "/queues", response_model=Page[QueueRead], openapi_extra=query_parameters(QueueListQuery)
)
async def list_queues(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Queues; `sort` = `created_at` (default), `name` (prefix `-` to reverse)."""
    query = await list_params(request, QueueListQuery)
    return json(await svc.list_queues(principal, query))


@_config.get("/queues/{queue_id}", response_model=QueueRead)
async def get_queue(queue_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_queue(principal, queue_id))


@_config.patch("/queues/{queue_id}", response_model=QueueRead)
async def update_queue(
    queue_id: RecordId,
    body: QueueUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    return record(await svc.update_queue(principal, queue_id, body, version))


@_config.delete("/queues/{queue_id}", status_code=204)
async def delete_queue(
    queue_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Soft delete: existing tickets keep the queue id; new tickets cannot use it."""
    return no_content(await svc.delete_queue(principal, queue_id, version))


@_config.post("/queues/{queue_id}/restore", response_model=QueueRead)
async def restore_queue(queue_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.restore_queue(principal, queue_id))


@_config.get(
    "/queues/{queue_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def queue_history(
    queue_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of name and strategy, creation, deletion, restore, and membership:
    `member_added`, `member_activated`, `member_deactivated`, `member_removed` with
    `user_id` and `active`. Newest first (`sort=created_at` for oldest first)."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.queue_history(principal, queue_id, query))


@_config.put("/queues/{queue_id}/members/{user_id}", response_model=QueueRead)
async def put_member(
    queue_id: RecordId,
    user_id: RecordId,
    principal: CurrentPrincipal,
    svc: Service,
    body: Annotated[QueueMemberPut | None, Body()] = None,
) -> Response:
    """Add an agent to the queue, or set `active` (an inactive member gets no new
    tickets). Returns the queue."""
    data = body or QueueMemberPut()
    return record(await svc.put_member(principal, queue_id, user_id, data))


@_config.delete("/queues/{queue_id}/members/{user_id}", response_model=QueueRead)
async def remove_queue_member(
    queue_id: RecordId, user_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Take an agent out of the queue. Returns the queue."""
    return record(await svc.remove_member(principal, queue_id, user_id))


@_config.get("/sla-policies", response_model=Page[SlaPolicyRead])
async def list_sla_policies(principal: CurrentPrincipal, svc: Service) -> Response:
    """The SLA targets of each priority (seconds): `first_response_s`, `resolution_s`."""
    return json(await svc.list_sla_policies(principal))


@_config.put("/sla-policies/{priority}", response_model=SlaPolicyRead)
async def put_sla_policy(
    priority: Priority,
    body: SlaPolicyPut,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Set a priority's targets (`low`, `normal`, `high`, `urgent`); they apply to
    tickets created or re-prioritised from then on."""
    return record(await svc.put_sla_policy(principal, priority, body, version))


@_config.get(
    "/sla-policies/{priority}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def sla_policy_history(
    priority: Priority, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of a priority's `first_response_s` and `resolution_s` (record type
    `sla_policy`, record id the policy's stable `id`). Newest first."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.sla_policy_history(principal, priority, query))


router.include_router(_tickets)
router.include_router(_config)
