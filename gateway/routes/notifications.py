"""The caller's own in-app notifications and notification preferences. Path: this
file -> deployments/notification/service.py -> deployments/notification/repo.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from deployments.notification.schemas import (
    NotificationListQuery,
    NotificationRead,
    PreferencesRead,
    PreferencesUpdate,
    ReadAllResult,
    UnreadCount,
)
from gateway.context import CurrentPrincipal, ServicesDep, json, record
from gateway.listing import Page, parse_list_params
from shards.ids import MAX_ID

router = APIRouter(tags=["notifications"])
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


@router.get("/notifications", response_model=Page[NotificationRead])
async def list_notifications(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """The caller's own notifications, cursor-paged. Filter `unread=true|false`;
    `sort` = `-created_at` (default) or `created_at`; `limit` (max 200), `cursor`."""
    query = parse_list_params(request.query_params.multi_items(), NotificationListQuery)
    return json(await services.notifications.list.remote(principal, query))


@router.get("/notifications/unread-count", response_model=UnreadCount)
async def unread_count(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """How many of the caller's notifications are unread."""
    return json(await services.notifications.unread_count.remote(principal))


@router.post("/notifications/read-all", response_model=ReadAllResult)
async def mark_all_read(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """Mark every unread notification of the caller read."""
    return json(await services.notifications.mark_all_read.remote(principal))


@router.post("/notifications/{notification_id}/read", response_model=NotificationRead)
async def mark_read(
    notification_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Mark one of the caller's notifications read (404 for anyone else's)."""
    return record(await services.notifications.mark_read.remote(principal, notification_id))


@router.get("/notification-preferences", response_model=PreferencesRead)
async def get_preferences(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """The caller's channels (`in_app`, `email`) per rule, defaults (on) filled in."""
    return record(await services.notifications.preferences.remote(principal))


@router.put("/notification-preferences", response_model=PreferencesRead)
async def put_preferences(
    body: PreferencesUpdate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Set the channels of the named rules, e.g.
    `{"rules": {"deal.won": {"in_app": true, "email": false}}}`; other rules keep theirs."""
    return record(await services.notifications.set_preferences.remote(principal, body))
