"""Support tickets and their comments. Path: this file -> deployments/support/service.py
-> deployments/support/repo.py -> shards/.

Workflow: `POST /tickets/{id}/status {"status": ...}` moves a ticket
(new -> assigned -> pending -> resolved -> closed, reopen = resolved -> assigned/new;
closed is final; anything else is a 409), `POST /tickets/{id}/assign` gives it to an
agent. SLA targets come from `/sla-policies`; the resolution clock stops while a
ticket is pending or resolved."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.support.schemas import (
    CommentCreate,
    CommentListQuery,
    CommentRead,
    SweepResult,
    TicketAssign,
    TicketCreate,
    TicketListQuery,
    TicketRead,
    TicketStatusChange,
    TicketUpdate,
)
from gateway.context import CurrentPrincipal, IfMatch, ServicesDep, json, no_content, record
from gateway.listing import Page, parse_list_params
from shards.ids import MAX_ID

router = APIRouter(tags=["tickets"])
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


@router.post("/tickets", status_code=201, response_model=TicketRead)
async def create_ticket(
    body: TicketCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Open a ticket for a customer (it lives on the customer's shard). Without
    `queue_id` it goes to the default queue; a round-robin or least-busy queue assigns
    it at once (status `assigned`). SLA due times come from the priority's policy."""
    ticket = await services.support.create.remote(principal, body)
    return record(ticket, 201, f"/tickets/{ticket.id}")


@router.get("/tickets", response_model=Page[TicketRead])
async def list_tickets(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Tickets across all shards, cursor-paged. Filters: `status` / `status[in]=a,b`,
    `priority` / `priority[in]`, `queue_id`, `assignee_id`, `unassigned=true|false`,
    `customer_id`, `tag` / `tag[in]`, `sla_breached`, `first_response_breached`,
    `resolution_breached` (=true|false, as of now), `created_at[gte]`, `created_at[lt]`,
    `resolution_due_at[lt]` (or `due_before`); `sort` = `created_at`, `priority`,
    `resolution_due_at` (prefix `-` for descending; default `-created_at`);
    `limit` (max 200), `cursor`, `count=true`."""
    query = parse_list_params(request.query_params.multi_items(), TicketListQuery)
    return json(await services.support.list.remote(principal, query))


@router.post("/tickets/search", response_model=Page[TicketRead])
async def search_tickets(
    body: TicketListQuery, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """The same filters as the list, as a JSON body (`statuses`, `priorities`, ...)."""
    return json(await services.support.list.remote(principal, body))


@router.post("/tickets/sla/sweep", response_model=SweepResult)
async def sweep_sla(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """Store SLA breach flags now (`sla:write`); every SupportService replica also does
    this periodically. Returns the ids it flagged."""
    return json(await services.support.sweep_sla.remote(principal))


@router.get("/customers/{customer_id}/tickets", response_model=Page[TicketRead])
async def list_customer_tickets(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """A customer's tickets (one shard); the same filters and sorts as `GET /tickets`."""
    query = parse_list_params(request.query_params.multi_items(), TicketListQuery)
    return json(await services.support.list_for_customer.remote(principal, customer_id, query))


@router.get("/tickets/{ticket_id}", response_model=TicketRead)
async def get_ticket(
    ticket_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """A ticket, its breach flags as of now."""
    return record(await services.support.get.remote(principal, ticket_id))


@router.patch("/tickets/{ticket_id}", response_model=TicketRead)
async def update_ticket(
    ticket_id: RecordId,
    body: TicketUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Partial update (subject, description, priority, channel, tags, contact, queue).
    A new priority recomputes the SLA due times. `If-Match` -> 412 when stale."""
    return record(await services.support.update.remote(principal, ticket_id, body, version))


@router.delete("/tickets/{ticket_id}", status_code=204)
async def delete_ticket(
    ticket_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Soft delete (restore with `POST /tickets/{id}/restore`)."""
    return no_content(await services.support.delete.remote(principal, ticket_id, version))


@router.post("/tickets/{ticket_id}/restore", response_model=TicketRead)
async def restore_ticket(
    ticket_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.support.restore.remote(principal, ticket_id))


@router.post("/tickets/{ticket_id}/status", response_model=TicketRead)
async def change_status(
    ticket_id: RecordId,
    body: TicketStatusChange,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Move the ticket in its workflow; a move the workflow does not allow is a 409
    naming the allowed ones. Pending and resolved stop the resolution clock; leaving
    them pushes `resolution_due_at` by the stopped time."""
    return record(await services.support.set_status.remote(principal, ticket_id, body, version))


@router.post("/tickets/{ticket_id}/assign", response_model=TicketRead)
async def assign_ticket(
    ticket_id: RecordId,
    body: TicketAssign,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Assign to an agent (`ticket:assign`, or yourself with `ticket:write`); null
    unassigns. A new ticket becomes assigned; an unassigned one goes back to new."""
    return record(await services.support.assign.remote(principal, ticket_id, body, version))


@router.get("/tickets/{ticket_id}/history", response_model=Page[ChangeRead])
async def ticket_history(
    ticket_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Changes of status, priority, assignee, queue, subject, due times and breach
    flags, newest first."""
    query = parse_list_params(request.query_params.multi_items(), HistoryQuery)
    return json(await services.support.history.remote(principal, ticket_id, query))


@router.post("/tickets/{ticket_id}/comments", status_code=201, response_model=CommentRead)
async def add_comment(
    ticket_id: RecordId, body: CommentCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """A public reply (`public: true`; the first one is the ticket's first response) or
    an internal note."""
    comment = await services.support.add_comment.remote(principal, ticket_id, body)
    return record(comment, 201, f"/tickets/{ticket_id}/comments")


@router.get("/tickets/{ticket_id}/comments", response_model=Page[CommentRead])
async def list_comments(
    ticket_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Oldest first (`sort=-created_at` for newest first), cursor pages."""
    query = parse_list_params(request.query_params.multi_items(), CommentListQuery)
    return json(await services.support.list_comments.remote(principal, ticket_id, query))
