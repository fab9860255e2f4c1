"""API keys: created once (the secret is shown only then), stored hashed, revocable,
scoped to a subset of their owner's permissions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from deployments.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from gateway.context import CurrentPrincipal, ServicesDep, json
from shards.ids import MAX_ID

router = APIRouter(prefix="/api-keys", tags=["api keys"])


@router.post("", status_code=201, response_model=ApiKeyCreated)
async def create_api_key(
    body: ApiKeyCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Create a key for yourself; send it as `Authorization: Bearer nf_...` or `X-API-Key`."""
    created = await services.auth.create_api_key.remote(principal, body)
    return json(created, 201, {"Location": f"/api-keys/{created.id}"})


@router.get("", response_model=list[ApiKeyRead])
async def list_api_keys(principal: CurrentPrincipal, services: ServicesDep) -> list[ApiKeyRead]:
    """Your keys (every key for admins), without secrets."""
    keys: list[ApiKeyRead] = await services.auth.list_api_keys.remote(principal)
    return keys


@router.delete("/{key_id}", response_model=ApiKeyRead)
async def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> Response:
    """Revoke a key at once."""
    return json(await services.auth.revoke_api_key.remote(principal, key_id))
