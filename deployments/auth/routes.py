"""Sign in, refresh, sign out, who am I, roles, users, teams and API keys, under
`/v1/auth` (the auth application's prefix). Path: this file ->
deployments/auth/service.py -> deployments/auth/repo.py -> shards/."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from starlette.responses import Response

from deployments._kit.custom_fields import (
    FieldCreate,
    FieldDefinition,
    FieldListQuery,
    FieldPurged,
    FieldUpdate,
)
from deployments.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    LoginRequest,
    RefreshRequest,
    RoleRead,
    RoleUpdate,
    TeamCreate,
    TeamRead,
    TokenPair,
    UserCreate,
    UserListQuery,
    UserRead,
    UserUpdate,
    ViewCreate,
    ViewListQuery,
    ViewRead,
    ViewUpdate,
)
from deployments.auth.service import AuthService
from gateway.context import (
    CurrentPrincipal,
    IfMatch,
    enforce,
    json,
    list_params,
    no_content,
    record,
    service,
    state,
)
from gateway.listing import Page, query_parameters
from gateway.openapi import OPTIONAL_AUTH, PUBLIC
from shards.ids import MAX_ID

router = APIRouter(tags=["auth"])
users = APIRouter(prefix="/users", tags=["users"])
teams = APIRouter(prefix="/teams", tags=["users"])
api_keys = APIRouter(prefix="/api-keys", tags=["api keys"])
views = APIRouter(prefix="/views", tags=["views"])
custom_fields = APIRouter(prefix="/fields", tags=["custom fields"])
routers = [
    router,
    users,
    teams,
    api_keys,
    views,
    custom_fields,
]  # every router of this module (deployments/api/app.py)

Service = Annotated[AuthService, Depends(service)]
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
ViewId = Annotated[int, Path(ge=1, le=MAX_ID)]
FieldId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- sessions (login, refresh and logout are public: no principal) -------------------


@router.post("/login", response_model=TokenPair, openapi_extra=PUBLIC)
async def login(body: LoginRequest, request: Request, svc: Service) -> Response:
    """Exchange e-mail and password for a short-lived access token (JWT) and a
    rotating refresh token. Throttled per client address and per account."""
    limiter = state(request).login_limiter
    if limiter is not None:
        await enforce(request, limiter, f"login-ip:{_client(request)}")
        await enforce(request, limiter, f"login-user:{str(body.email).lower()}")
    return json(await svc.login(body))


@router.post("/refresh", response_model=TokenPair, openapi_extra=PUBLIC)
async def refresh(body: RefreshRequest, request: Request, svc: Service) -> Response:
    """Spend a refresh token for a new pair. A token works once: presenting a spent
    one revokes every token of that sign-in."""
    limiter = state(request).login_limiter
    if limiter is not None:
        await enforce(request, limiter, f"refresh-ip:{_client(request)}")
    return json(await svc.refresh(body.refresh_token))


@router.post("/logout", status_code=204, openapi_extra=OPTIONAL_AUTH)
async def logout(
    body: RefreshRequest,
    svc: Service,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Revoke the refresh token and every token rotated from the same sign-in, and
    the access token sent in `Authorization: Bearer` (refused from now on)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    access = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
    await svc.logout(body.refresh_token, access)
    return Response(status_code=204)


@router.get("/me", response_model=UserRead)
async def me(principal: CurrentPrincipal, svc: Service) -> Response:
    """The signed-in user."""
    return json(await svc.me(principal))


# -- roles -----------------------------------------------------------------------------


@router.get("/roles", response_model=Page[RoleRead])
async def roles(principal: CurrentPrincipal, svc: Service) -> Response:
    """The roles and the permission strings each grants: one page, all of them."""
    return json(Page[RoleRead](data=await svc.roles(principal)))


@router.patch("/roles/{name}", response_model=RoleRead)
async def update_role(
    name: Annotated[str, Path(pattern=r"^[a-z][a-z_]{0,31}$")],
    body: RoleUpdate,
    principal: CurrentPrincipal,
    svc: Service,
) -> RoleRead:
    """Set a role's record scopes (`{"customer:read": "own"}`: own records; `team`: the
    team's; a permission not named reaches every record) and the fields it sees as null
    (`{"customer": ["email"]}`); each map given replaces the role's. Needs `role:write`
    (admin). Every access token of the role's users is cut off at once: they sign in
    again and get the new scopes."""
    return await svc.update_role(principal, name, body)


# -- users (admins manage them; managers may read) -------------------------------------


@users.post("", status_code=201, response_model=UserRead)
async def create_user(body: UserCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """Create a user with a role (admin only)."""
    user = await svc.create_user(principal, body)
    return record(user, 201, f"/v1/auth/users/{user.id}")


@users.get("", response_model=Page[UserRead], openapi_extra=query_parameters(UserListQuery))
async def list_users(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Users, newest first; filters `role`, `is_active`; cursor pages."""
    query = await list_params(request, UserListQuery)
    return json(await svc.list_users(principal, query))


@users.get("/{user_id}", response_model=UserRead)
async def get_user(user_id: UserId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_user(principal, user_id))


@users.patch("/{user_id}", response_model=UserRead)
async def update_user(
    user_id: UserId,
    body: UserUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Change name, password, role or active flag (admin only). Changing the password,
    the role or deactivating revokes the user's refresh tokens."""
    return record(await svc.update_user(principal, user_id, body, version))


@users.delete("/{user_id}", status_code=204)
async def deactivate_user(
    user_id: UserId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Deactivate a user (kept for history; sign-in and their API keys stop working)."""
    return no_content(await svc.deactivate_user(principal, user_id, version))


# -- teams: the groups a role's `team` scope reaches (admins manage them; managers may
# read). Users join a team through `PATCH /v1/auth/users/{id}` (`team_id`). ------------


@teams.post("", status_code=201, response_model=TeamRead)
async def create_team(body: TeamCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """Create a team (admin only); names are unique, case aside (409 when taken)."""
    return json(await svc.create_team(principal, body), 201)


@teams.get("", response_model=Page[TeamRead])
async def list_teams(principal: CurrentPrincipal, svc: Service) -> Response:
    """Every team with its count of active members, by name: one page, all of them."""
    return json(Page[TeamRead](data=await svc.list_teams(principal)))


# -- API keys: created once (the secret is shown only then), stored hashed, revocable,
# scoped to a subset of their owner's permissions. -------------------------------------


@api_keys.post("", status_code=201, response_model=ApiKeyCreated)
async def create_api_key(body: ApiKeyCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """Create a key for yourself; send it as `Authorization: Bearer nf_...` or `X-API-Key`."""
    created = await svc.create_api_key(principal, body)
    return json(created, 201, {"Location": f"/v1/auth/api-keys/{created.id}"})


@api_keys.get("", response_model=Page[ApiKeyRead])
async def list_api_keys(principal: CurrentPrincipal, svc: Service) -> Response:
    """Your keys (every key for admins), without secrets: one page, all of them."""
    return json(Page[ApiKeyRead](data=await svc.list_api_keys(principal)))


@api_keys.delete("/{key_id}", response_model=ApiKeyRead)
async def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    principal: CurrentPrincipal,
    svc: Service,
) -> Response:
    """Revoke a key at once."""
    return json(await svc.revoke_api_key(principal, key_id))


# -- saved views: a user's named list views (filters, sort, columns), used by a list
# as `?view=<id>`; shared ones by the owner's team too. -------------------------------
@views.post("", status_code=201, response_model=ViewRead)
async def create_view(body: ViewCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """Save a view of a list (`object`: customers, deals, orders, leads, campaigns,
    tickets, products): its filters as the list's query string spells them, checked as
    the list checks them (422 naming `filters.<parameter>`), its `sort`, the `columns`
    a client shows (fields of the records). `GET /v1/<list>?view=<id>` then applies it;
    parameters the request gives replace the view's of the same field."""
    view = await svc.create_view(principal, body)
    return record(view, 201, f"/v1/auth/views/{view.id}")


@views.get("", response_model=Page[ViewRead], openapi_extra=query_parameters(ViewListQuery))
async def list_views(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Your views and those your team shares; `object` to keep one list's."""
    query = await list_params(request, ViewListQuery)
    return json(await svc.list_views(principal, query))


@views.get("/{view_id}", response_model=ViewRead)
async def get_view(view_id: ViewId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_view(principal, view_id))


@views.patch("/{view_id}", response_model=ViewRead)
async def update_view(
    view_id: ViewId, body: ViewUpdate, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Change your view (403 for one your team shares with you)."""
    return record(await svc.update_view(principal, view_id, body, version))


@views.delete("/{view_id}", status_code=204)
async def delete_view(
    view_id: ViewId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    return no_content(await svc.delete_view(principal, view_id, version))


# -- custom fields: admins define them per object; every signed-in caller reads them.
@custom_fields.post("", status_code=201, response_model=FieldDefinition)
async def create_field(body: FieldCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """Define a custom field of `customers`, `contacts`, `deals`, `leads`, `tickets` or
    `products` (`field:write`). Its values are written as `custom_fields.<key>` of
    the records, checked by the type (text, long_text, number, decimal, date,
    datetime, boolean, single_select, multi_select, email, url, phone), `required`
    and `options`, and filtered as `cf.<key>[eq]=` in the object's list."""
    made = await svc.create_field(principal, body)
    return record(made, 201, f"/v1/auth/fields/{made.id}")


@custom_fields.get(
    "", response_model=Page[FieldDefinition], openapi_extra=query_parameters(FieldListQuery)
)
async def list_fields(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Definitions, oldest first; `object` for one object's, `deleted=true` for the
    deleted ones."""
    query = await list_params(request, FieldListQuery)
    return json(await svc.list_fields(principal, query))


@custom_fields.get("/{field_id}", response_model=FieldDefinition)
async def get_field(field_id: FieldId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_field(principal, field_id))


@custom_fields.patch("/{field_id}", response_model=FieldDefinition)
async def update_field(
    field_id: FieldId,
    body: FieldUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Relabel, describe, require, default, add options (never the key or type: the
    stored values stay as they are)."""
    return record(await svc.update_field(principal, field_id, body, version))


@custom_fields.delete("/{field_id}", status_code=204)
async def delete_field(
    field_id: FieldId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Hide the field: reads leave its values out and writes refuse it; the values stay
    stored until the field is restored (`POST .../restore`)."""
    return no_content(await svc.delete_field(principal, field_id, version))


@custom_fields.post("/{field_id}/purge", response_model=FieldPurged)
async def purge_field(field_id: FieldId, principal: CurrentPrincipal, svc: Service) -> Response:
    """Remove a deleted field's values from every record of its object (409 for a live
    field). The field stays deleted, its key reserved. One pass over the object's
    table on each server: at millions of records it can outlast the request (504);
    what it removed stays removed, and a repeat finishes the rest."""
    return json(await svc.purge_field(principal, field_id))


@custom_fields.post("/{field_id}/restore", response_model=FieldDefinition)
async def restore_field(field_id: FieldId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.restore_field(principal, field_id))
