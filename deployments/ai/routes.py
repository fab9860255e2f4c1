"""Lead scoring, search, ticket summaries and next actions, under `/v1/ai` (the ai
application's prefix). Path: this file -> deployments/ai/service.py (jobs of Ray
tasks; models in the catalog database `ai`; the search index beside the records);
jobs are polled and cancelled at `/v1/integration/jobs/{id}`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.responses import Response

from deployments.ai.repo import ModelRead
from deployments.ai.service import (
    AIService,
    LeadScore,
    NextActions,
    SearchResult,
    TicketSummary,
)
from deployments.integration.repo import JobAccepted
from gateway.context import CurrentPrincipal, RecordId, json, service

router = APIRouter(tags=["ai"])
Service = Annotated[AIService, Depends(service)]


class ModelList(BaseModel):
    data: list[ModelRead]


@router.post("/lead-scoring/train", status_code=202, response_model=JobAccepted)
async def train(principal: CurrentPrincipal, svc: Service) -> Response:
    """Train a new lead-scoring model on every lead with a known outcome (converted or
    unqualified), gathered by one Ray task per logical shard. A job: poll
    `status_url`; its `result` has the model version and the held-out AUC."""
    accepted = await svc.start_training(principal)
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.post("/lead-scoring/score", status_code=202, response_model=JobAccepted)
async def score_all(principal: CurrentPrincipal, svc: Service) -> Response:
    """Score every open lead with the newest model, in batches of Ray tasks that write
    `score` back to the leads. A job (cancel with `POST /v1/integration/jobs/{id}/cancel`)."""
    accepted = await svc.start_scoring(principal)
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.get("/lead-scoring/models", response_model=ModelList)
async def models(
    principal: CurrentPrincipal,
    svc: Service,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """The trained models, newest (the one in use) first, with their held-out AUC."""
    return json(ModelList(data=await svc.list_models(principal, limit)))


@router.get("/leads/{lead_id}/score", response_model=LeadScore)
async def score_one(lead_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    """The newest model's score for one lead, computed now."""
    return json(await svc.score_lead(principal, lead_id))


_TYPES = "^(customer|contact|ticket)(,(customer|contact|ticket))*$"


@router.get("/search", response_model=SearchResult)
async def search(
    principal: CurrentPrincipal,
    svc: Service,
    q: Annotated[str, Query(min_length=1, max_length=200, pattern=r"\S")],
    types: Annotated[
        str | None,
        Query(description="comma-separated: customer,contact,ticket", pattern=_TYPES),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    mode: Annotated[
        Literal["hybrid", "semantic", "lexical"] | None,
        Query(description="hybrid (default with embeddings on), semantic, or lexical"),
    ] = None,
    near: Annotated[
        bool,
        Query(
            description="Also words a query word begins and words one typo away (the"
            " default); false: whole words only, faster."
        ),
    ] = True,
) -> Response:
    """Records matching `q` best, across every shard, from the search index kept beside
    the records: by words (BM25 over names, e-mails, phones, titles, tags, ticket
    subjects and descriptions), by meaning (sentence embeddings, when the `ai` extra
    is installed), or both fused. Only the types, records and fields the caller may
    read. A `q` with no letter or digit finds nothing."""
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    return json(await svc.search(principal, q, wanted, limit, mode, near))


@router.post("/search/reindex", status_code=202, response_model=JobAccepted)
async def reindex(principal: CurrentPrincipal, svc: Service) -> Response:
    """Rebuild the search index of every customer, contact and ticket (Ray tasks, shard
    by shard): after a model change, or for data from before the index. Writes keep it
    up to date on their own. A job (cancel with `POST /v1/integration/jobs/{id}/cancel`)."""
    accepted = await svc.start_reindex(principal)
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.get("/tickets/{ticket_id}/summary", response_model=TicketSummary)
async def ticket_summary(
    ticket_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The thread's (description and comments) most telling sentences, in order."""
    return json(await svc.ticket_summary(principal, ticket_id))


@router.get("/tickets/{ticket_id}/next-actions", response_model=NextActions)
async def ticket_next_actions(
    ticket_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """What to do next with a ticket, best first, each with its rule's reason."""
    return json(await svc.ticket_next_actions(principal, ticket_id))


@router.get("/deals/{deal_id}/next-actions", response_model=NextActions)
async def deal_next_actions(
    deal_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """What to do next with a deal, best first; `score` is the lead score of the lead
    it came from (when scored) or its stage probability."""
    return json(await svc.deal_next_actions(principal, deal_id))
