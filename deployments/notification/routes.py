"""The caller's own in-app notifications and notification preferences, under
`/v1/notifications` (the notification application's prefix). Path: this file ->
deployments/notification/service.py -> deployments/notification/repo.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from deployments.notification.schemas import (
    NotificationListQuery,
    NotificationRead,
    PreferencesRead,
    PreferencesUpdate,
    ReadAllResult,
    UnreadCount,
)
from deployments.notification.service import NotificationService
from gateway.context import CurrentPrincipal, RecordId, json, list_params, record, service
from gateway.listing import Page, query_parameters

router = APIRouter(tags=["notifications"])
Service = Annotated[NotificationService, Depends(service)]


@router.get(
    "/",
    response_model=Page[NotificationRead],
    openapi_extra=query_parameters(NotificationListQuery),
)
async def list_notifications(
    request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The caller's own notifications, cursor-paged. Filter `unread=true|false`;
    `sort` = `-created_at` (default) or `created_at`; `limit` (max 200), `cursor`."""
    query = await list_params(request, NotificationListQuery)
    return json(await svc.list(principal, query))


@router.get("/unread-count", response_model=UnreadCount)
async def unread_count(principal: CurrentPrincipal, svc: Service) -> Response:
    """How many of the caller's notifications are unread."""
    return json(await svc.unread_count(principal))


@router.post("/read-all", response_model=ReadAllResult)
async def mark_all_read(principal: CurrentPrincipal, svc: Service) -> Response:
    """Mark every unread notification of the caller read."""
    return json(await svc.mark_all_read(principal))


@router.post("/{notification_id}/read", response_model=NotificationRead)
async def mark_read(
    notification_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Mark one of the caller's notifications read (404 for anyone else's)."""
    return record(await svc.mark_read(principal, notification_id))


@router.get("/preferences", response_model=PreferencesRead)
async def get_preferences(principal: CurrentPrincipal, svc: Service) -> Response:
    """The caller's channels (`in_app`, `email`) per rule, defaults (on) filled in."""
    return record(await svc.preferences(principal))


@router.put("/preferences", response_model=PreferencesRead)
async def put_preferences(
    body: PreferencesUpdate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Set the channels of the named rules, e.g.
    `{"rules": {"deal.won": {"in_app": true, "email": false}}}`; other rules keep theirs."""
    return record(await svc.set_preferences(principal, body))
