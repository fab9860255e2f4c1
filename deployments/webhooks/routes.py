"""Outbound webhook subscriptions and their delivery logs, under `/v1/webhooks` (the
webhooks application's prefix). Path: this file -> deployments/webhooks/service.py ->
deployments/webhooks/repo.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from deployments.webhooks.schemas import (
    DeliveryListQuery,
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookListQuery,
    WebhookRead,
    WebhookUpdate,
)
from deployments.webhooks.service import WebhookService
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

router = APIRouter(tags=["webhooks"])
Service = Annotated[WebhookService, Depends(service)]


@router.post("/", status_code=201, response_model=WebhookCreated)
async def create_webhook(
    body: WebhookCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Subscribe a URL to event types (`deal.won`, `deal.*`, `*`). The answer carries
    the signing `secret`, shown only here. URLs on private, loopback, link-local,
    multicast or reserved addresses are refused (422) unless settings allow them."""
    created = await svc.create(principal, body)
    return record(created, 201, f"/v1/webhooks/{created.id}")


@router.get("/", response_model=Page[WebhookRead], openapi_extra=query_parameters(WebhookListQuery))
async def list_webhooks(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Subscriptions, cursor-paged; filter `active=true|false`."""
    query = await list_params(request, WebhookListQuery)
    return json(await svc.list(principal, query))


@router.get("/{webhook_id}", response_model=WebhookRead)
async def get_webhook(webhook_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get(principal, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookRead)
async def update_webhook(
    webhook_id: RecordId,
    body: WebhookUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Partial update (`active: true` re-enables one disabled by HTTP 410)."""
    return record(await svc.update(principal, webhook_id, body, version))


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(
    webhook_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Delete a subscription; its pending deliveries are cancelled."""
    return no_content(await svc.delete(principal, webhook_id, version))


@router.get(
    "/{webhook_id}/deliveries",
    response_model=Page[DeliveryRead],
    openapi_extra=query_parameters(DeliveryListQuery),
)
async def list_deliveries(
    webhook_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The delivery log: status, attempts, last response code, next attempt.
    Filter `status=pending|succeeded|failed|cancelled`."""
    query = await list_params(request, DeliveryListQuery)
    return json(await svc.deliveries(principal, webhook_id, query))


@router.post("/{webhook_id}/deliveries/{delivery_id}/replay", response_model=DeliveryRead)
async def replay_delivery(
    webhook_id: RecordId, delivery_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Send a delivery again now, with a fresh retry schedule."""
    return json(await svc.replay(principal, webhook_id, delivery_id))
