"""Customers and their contacts, under `/v1/customers` (the customer application's
prefix). Path: this file -> deployments/customer/service.py ->
deployments/customer/repo.py -> shards/."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from deployments._kit.custom_fields import ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.customer.activities import routes as activities
from deployments.customer.duplicates.schemas import (
    HEADER,
    HEADER_DOC,
    ContactDuplicates,
    ContactMatches,
    CustomerDuplicates,
    CustomerMatches,
    DuplicateMode,
    DuplicateQuery,
    KeysBacklog,
)
from deployments.customer.schemas import (
    ContactBatch,
    ContactBatchResult,
    ContactCreate,
    ContactListQuery,
    ContactRead,
    ContactUpdate,
    CustomerBatch,
    CustomerBatchResult,
    CustomerCreate,
    CustomerListQuery,
    CustomerRead,
    CustomerSearch,
    CustomerUpdate,
)
from deployments.customer.service import CustomerService
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

router = APIRouter(tags=["customers"])
Service = Annotated[CustomerService, Depends(service)]
# Every route of the customer application (activities' own paths never clash with
# these: their fixed segments differ).
routers = [router, activities.router]


@router.post(
    "/", status_code=201, response_model=CustomerRead, responses={201: {"headers": HEADER_DOC}}
)
@idempotency.in_effect
async def create_customer(
    body: CustomerCreate,
    request: Request,
    principal: CurrentPrincipal,
    svc: Service,
    duplicates: DuplicateMode = "warn",
) -> Response:
    """Create a customer. It is placed on a logical shard that its id carries. With an
    `Idempotency-Key`, the key is kept in the customer's own transaction: one customer
    however often the create runs, and a repeat answers with it.
    Likely duplicates (same normalised e-mail, phone or name as a customer the caller
    may read): `duplicates=warn` (default) creates it and names them in the
    `NextFlow-Duplicates` header, `reject` refuses with 409 `likely-duplicate` naming
    them, `ignore` does not look."""
    once = idempotency.effect_key(request)
    customer, found = await svc.create_checked(principal, body, once, duplicates)
    answer = record(customer, 201, f"/v1/customers/{customer.id}")
    return idempotency.answered(_reported(answer, found), once)


def _reported(answer: Response, found: list[int]) -> Response:
    if found:
        answer.headers[HEADER] = ",".join(str(i) for i in found)
    return answer


@router.post("/batch", response_model=CustomerBatchResult)
@idempotency.in_effect
async def batch_customers(
    body: CustomerBatch, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Up to 100 items, each `{"op": "create", "data": {...}}`, `{"op": "update",
    "id": ..., "if_match": <version>, "data": {...}}` or `{"op": "delete", "id": ...,
    "if_match": <version>}`. Answers 200 with each item's result in order: its status
    (201, 200, or the single operation's error: 403, 404, 409, 412, 422, 503), the
    record (a delete's as deleted) or a problem. Items are grouped by logical shard and
    written in one transaction per shard, each in a savepoint of its own (one item's
    failure leaves the others). With an `Idempotency-Key`, every item is kept with its
    effect under `<key>#<index>`: a retried batch makes nothing twice."""
    once = idempotency.effect_key(request)
    return idempotency.answered(json(await svc.batch(principal, body, once)), once)


@router.post("/contacts/batch", response_model=ContactBatchResult)
@idempotency.in_effect
async def batch_contacts(
    body: ContactBatch, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Up to 100 contact items, as `POST /v1/customers/batch` (a create names its
    `customer_id`; the contact goes to that customer's shard)."""
    once = idempotency.effect_key(request)
    return idempotency.answered(json(await svc.batch_contacts(principal, body, once)), once)


@router.get(
    "/", response_model=Page[CustomerRead], openapi_extra=query_parameters(CustomerListQuery)
)
async def list_customers(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Customers across all shards, cursor-paged. Filters: `name[prefix]`,
    `tag` / `tag[in]=a,b`, `owner_id`, `created_at[gte]`, `created_at[lt]`, and
    custom fields as `cf.<key>` / `cf.<key>[in]=a,b` (any type), `cf.<key>[gt|gte|lt|
    lte]` (number, decimal, date, datetime);
    `sort` = `created_at`, `-created_at` (default), `name`, `-name`;
    `limit` (max 200), `cursor`, `count=true` for a total."""
    query = await list_params(request, CustomerListQuery)
    return json(await svc.list(principal, query))


@router.post("/search", response_model=Page[CustomerRead])
async def search_customers(
    body: CustomerSearch, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The list's query as a JSON body, spelled as in the query string:
    `{"filter": {"name[prefix]": "Ac", "tag[in]": ["vip"]}, "sort": "name",
    "limit": 100}`; `"view": "<id>"` applies a saved view under it."""
    return json(await svc.list(principal, await search_params(request, body, CustomerListQuery)))


@router.get(
    "/duplicates",
    response_model=Page[CustomerDuplicates],
    openapi_extra=query_parameters(DuplicateQuery),
)
async def list_customer_duplicates(
    request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Groups of customers that are likely one: the same normalised e-mail address,
    phone number (last 9 digits) or name (case, accents and legal form aside: "ACME
    Inc." and "Acme"), across every shard, in the order of that value, cursor-paged.
    Each group names only customers the caller may read, two or more. Kept a moment
    behind the writes (an event consumer keeps the keys)."""
    query = await list_params(request, DuplicateQuery)
    return json(await svc.list_customer_duplicates(principal, query))


@router.post("/duplicates/rebuild", status_code=202, response_model=KeysBacklog)
async def rebuild_duplicate_keys(principal: CurrentPrincipal, svc: Service) -> Response:
    """Queue every live customer and contact for its match keys to be written again
    (records from before duplicates were kept, or after a change to how keys are made;
    `customer:write` and `contact:write` on every record). Answers at once; the keys
    are written in the background, `GET /v1/customers/duplicates/backlog` says how many
    records still wait."""
    return json(await svc.rebuild_keys(principal), 202)


@router.get("/duplicates/backlog", response_model=KeysBacklog)
async def duplicate_keys_backlog(principal: CurrentPrincipal, svc: Service) -> Response:
    """How many records wait for their match keys: an import's wait for it to end."""
    return json(await svc.keys_backlog(principal))


@router.get(
    "/contacts/duplicates",
    response_model=Page[ContactDuplicates],
    openapi_extra=query_parameters(DuplicateQuery),
)
async def list_contact_duplicates(
    request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Groups of contacts that are likely one person: the same normalised e-mail or
    phone anywhere, or the same name within one customer; as the customers' list."""
    query = await list_params(request, DuplicateQuery)
    return json(await svc.list_contact_duplicates(principal, query))


@router.get("/schema", response_model=ObjectSchema)
async def customer_schema(principal: CurrentPrincipal, svc: Service) -> Response:
    """The customer create body as JSON Schema, with `custom_fields` spelled out from
    the live custom field definitions (`/v1/auth/fields`), and the definitions: what
    a client builds a form from."""
    return json(await svc.schema(principal))


@router.get("/{customer_id}", response_model=CustomerRead)
async def get_customer(
    customer_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.get(principal, customer_id))


@router.patch("/{customer_id}", response_model=CustomerRead)
async def update_customer(
    customer_id: RecordId,
    body: CustomerUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Partial update. Send `If-Match: "<version>"` to refuse a stale write (412)."""
    return record(await svc.update(principal, customer_id, body, version))


@router.delete("/{customer_id}", status_code=204)
async def delete_customer(
    customer_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Soft delete (restore with `POST /v1/customers/{id}/restore`)."""
    return no_content(await svc.delete(principal, customer_id, version))


@router.post("/{customer_id}/restore", response_model=CustomerRead)
async def restore_customer(
    customer_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.restore(principal, customer_id))


@router.get("/{customer_id}/duplicates", response_model=CustomerMatches)
async def customer_duplicates(
    customer_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The customers likely the same as this one (at most 20, oldest first), with what
    matched."""
    return json(await svc.customer_duplicates(principal, customer_id))


@router.get(
    "/{customer_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def customer_history(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of name, email, phone, website, industry, tags and owner, with creation,
    deletion and restore; newest first (`sort=created_at` for oldest first)."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.history(principal, customer_id, query))


@router.post(
    "/{customer_id}/contacts",
    status_code=201,
    response_model=ContactRead,
    responses={201: {"headers": HEADER_DOC}},
)
@idempotency.in_effect
async def create_contact(
    customer_id: RecordId,
    body: ContactCreate,
    request: Request,
    principal: CurrentPrincipal,
    svc: Service,
    duplicates: DuplicateMode = "warn",
) -> Response:
    """Add a contact; it lives on its customer's shard. An `Idempotency-Key` is kept in
    the contact's own transaction (one contact however often the create runs).
    `duplicates` as for a customer: a contact with the e-mail or phone of another, or
    the name of another of the same customer."""
    once = idempotency.effect_key(request)
    contact, found = await svc.create_contact_checked(
        principal, customer_id, body, once, duplicates
    )
    answer = record(contact, 201, f"/v1/customers/contacts/{contact.id}")
    return idempotency.answered(_reported(answer, found), once)


@router.get(
    "/{customer_id}/contacts",
    response_model=Page[ContactRead],
    openapi_extra=query_parameters(ContactListQuery),
)
async def list_contacts(
    customer_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A customer's contacts; `sort` = `created_at` or `-created_at`, cursor pages."""
    query = await list_params(request, ContactListQuery)
    return json(await svc.list_contacts(principal, customer_id, query))


@router.get("/contacts/schema", response_model=ObjectSchema)
async def contact_schema(principal: CurrentPrincipal, svc: Service) -> Response:
    """The contact create body as JSON Schema with its live custom fields."""
    return json(await svc.contact_schema(principal))


@router.get("/contacts/{contact_id}", response_model=ContactRead)
async def get_contact(contact_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_contact(principal, contact_id))


@router.patch("/contacts/{contact_id}", response_model=ContactRead)
async def update_contact(
    contact_id: RecordId,
    body: ContactUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    return record(await svc.update_contact(principal, contact_id, body, version))


@router.delete("/contacts/{contact_id}", status_code=204)
async def delete_contact(
    contact_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    return no_content(await svc.delete_contact(principal, contact_id, version))


@router.post("/contacts/{contact_id}/restore", response_model=ContactRead)
async def restore_contact(
    contact_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.restore_contact(principal, contact_id))


@router.get("/contacts/{contact_id}/duplicates", response_model=ContactMatches)
async def contact_duplicates(
    contact_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The contacts likely the same person as this one (at most 20, oldest first)."""
    return json(await svc.contact_duplicates(principal, contact_id))


@router.get(
    "/contacts/{contact_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def contact_history(
    contact_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of first and last name, email, phone and title, with creation, deletion
    and restore; newest first (`sort=created_at` for oldest first)."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.contact_history(principal, contact_id, query))
