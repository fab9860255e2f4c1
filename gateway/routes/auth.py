"""Sign in, refresh, sign out, who am I, and roles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from starlette.responses import Response

from deployments.auth.schemas import (
    LoginRequest,
    RefreshRequest,
    RoleRead,
    RoleUpdate,
    TokenPair,
    UserRead,
)
from gateway.context import CurrentPrincipal, ServicesDep, enforce, json, state

router = APIRouter(prefix="/auth", tags=["auth"])


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/login", response_model=TokenPair)
async def login(body: LoginRequest, request: Request, services: ServicesDep) -> Response:
    """Exchange e-mail and password for a short-lived access token (JWT) and a
    rotating refresh token. Throttled per client address and per account."""
    limiter = state(request).login_limiter
    if limiter is not None:
        await enforce(request, limiter, f"login-ip:{_client(request)}")
        await enforce(request, limiter, f"login-user:{str(body.email).lower()}")
    return json(await services.auth.login.remote(body))


@router.post("/refresh", response_model=TokenPair)
async def refresh(body: RefreshRequest, request: Request, services: ServicesDep) -> Response:
    """Spend a refresh token for a new pair. A token works once: presenting a spent
    one revokes every token of that sign-in."""
    limiter = state(request).login_limiter
    if limiter is not None:
        await enforce(request, limiter, f"refresh-ip:{_client(request)}")
    return json(await services.auth.refresh.remote(body.refresh_token))


@router.post("/logout", status_code=204)
async def logout(
    body: RefreshRequest,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Revoke the refresh token and every token rotated from the same sign-in, and
    the access token sent in `Authorization: Bearer` (refused from now on)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    access = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
    await services.auth.logout.remote(body.refresh_token, access)
    return Response(status_code=204)


@router.get("/me", response_model=UserRead)
async def me(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """The signed-in user."""
    return json(await services.auth.me.remote(principal))


@router.get("/roles", response_model=list[RoleRead])
async def roles(principal: CurrentPrincipal, services: ServicesDep) -> list[RoleRead]:
    """The roles and the permission strings each grants."""
    found: list[RoleRead] = await services.auth.roles.remote(principal)
    return found


@router.patch("/roles/{name}", response_model=RoleRead)
async def update_role(
    name: Annotated[str, Path(pattern=r"^[a-z][a-z_]{0,31}$")],
    body: RoleUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> RoleRead:
    """Set a role's record scopes (`{"customer:read": "own"}`: own records; `team`: the
    team's; a permission not named reaches every record) and the fields it sees as null
    (`{"customer": ["email"]}`); each map given replaces the role's. Needs `role:write`
    (admin). Every access token of the role's users is cut off at once: they sign in
    again and get the new scopes."""
    updated: RoleRead = await services.auth.update_role.remote(principal, name, body)
    return updated
