"""Teams: the groups a role's `team` scope reaches (admins manage them; managers
may read). Users join a team through `PATCH /users/{id}` (`team_id`)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from deployments.auth.schemas import TeamCreate, TeamRead
from gateway.context import CurrentPrincipal, ServicesDep, json

router = APIRouter(prefix="/teams", tags=["users"])


@router.post("", status_code=201, response_model=TeamRead)
async def create_team(
    body: TeamCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Create a team (admin only); names are unique, case aside (409 when taken)."""
    return json(await services.auth.create_team.remote(principal, body), 201)


@router.get("", response_model=list[TeamRead])
async def list_teams(principal: CurrentPrincipal, services: ServicesDep) -> list[TeamRead]:
    """Every team with its count of active members, by name."""
    found: list[TeamRead] = await services.auth.list_teams.remote(principal)
    return found
