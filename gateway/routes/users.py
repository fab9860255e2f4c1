"""Users (admins manage them; managers may read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from deployments.auth.schemas import UserCreate, UserListQuery, UserRead, UserUpdate
from gateway.context import CurrentPrincipal, IfMatch, ServicesDep, json, no_content, record
from gateway.listing import Page, parse_list_params
from shards.ids import MAX_ID

router = APIRouter(prefix="/users", tags=["users"])
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post("", status_code=201, response_model=UserRead)
async def create_user(
    body: UserCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Create a user with a role (admin only)."""
    user = await services.auth.create_user.remote(principal, body)
    return record(user, 201, f"/users/{user.id}")


@router.get("", response_model=Page[UserRead])
async def list_users(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Users, newest first; filters `role`, `is_active`; cursor pages."""
    query = parse_list_params(request.query_params.multi_items(), UserListQuery)
    return json(await services.auth.list_users.remote(principal, query))


@router.get("/{user_id}", response_model=UserRead)
async def get_user(user_id: UserId, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    return record(await services.auth.get_user.remote(principal, user_id))


@router.patch("/{user_id}", response_model=UserRead)
async def update_user(
    user_id: UserId,
    body: UserUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Change name, password, role or active flag (admin only). Changing the password,
    the role or deactivating revokes the user's refresh tokens."""
    return record(await services.auth.update_user.remote(principal, user_id, body, version))


@router.delete("/{user_id}", status_code=204)
async def deactivate_user(
    user_id: UserId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    """Deactivate a user (kept for history; sign-in and their API keys stop working)."""
    return no_content(await services.auth.deactivate_user.remote(principal, user_id, version))
