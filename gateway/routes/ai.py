"""Lead scoring, search, ticket summaries and next actions. Path: this file ->
deployments/ai (jobs of Ray tasks; models in the catalog database `ai`; the search
index beside the records); jobs are polled and cancelled at /jobs/{id} (imports.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from starlette.responses import Response

from deployments.ai.repo import ModelRead
from deployments.ai.service import LeadScore, NextActions, SearchResult, TicketSummary
from deployments.integration.repo import JobAccepted
from gateway.context import CurrentPrincipal, ServicesDep, json
from shards.ids import MAX_ID

router = APIRouter(tags=["ai"])
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


class ModelList(BaseModel):
    data: list[ModelRead]


@router.post("/ai/lead-scoring/train", status_code=202, response_model=JobAccepted)
async def train(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """Train a new lead-scoring model on every lead with a known outcome (converted or
    unqualified), gathered by one Ray task per logical shard. A job: poll
    `status_url`; its `result` has the model version and the held-out AUC."""
    accepted = await services.ai.start_training.remote(principal)
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.post("/ai/lead-scoring/score", status_code=202, response_model=JobAccepted)
async def score_all(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """Score every open lead with the newest model, in batches of Ray tasks that write
    `score` back to the leads. A job (cancel with `POST /jobs/{id}/cancel`)."""
    accepted = await services.ai.start_scoring.remote(principal)
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.get("/ai/lead-scoring/models", response_model=ModelList)
async def models(
    principal: CurrentPrincipal,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """The trained models, newest (the one in use) first, with their held-out AUC."""
    return json(ModelList(data=await services.ai.list_models.remote(principal, limit)))


@router.get("/ai/leads/{lead_id}/score", response_model=LeadScore)
async def score_one(
    lead_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """The newest model's score for one lead, computed now."""
    return json(await services.ai.score_lead.remote(principal, lead_id))


@router.get("/search", response_model=SearchResult)
async def search(
    principal: CurrentPrincipal,
    services: ServicesDep,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    types: Annotated[
        str | None, Query(description="comma-separated: customer,contact,ticket")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    mode: Annotated[
        str | None,
        Query(description="hybrid (default with embeddings on), semantic, or lexical"),
    ] = None,
) -> Response:
    """Records matching `q` best, across every shard, from the search index kept beside
    the records: by words (BM25 over names, e-mails, phones, titles, tags, ticket
    subjects and descriptions), by meaning (sentence embeddings, when the `ai` extra
    is installed), or both fused. Only the types, records and fields the caller may
    read."""
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    return json(await services.ai.search.remote(principal, q, wanted, limit, mode))


@router.post("/ai/search/reindex", status_code=202, response_model=JobAccepted)
async def reindex(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """Rebuild the search index of every customer, contact and ticket (Ray tasks, shard
    by shard): after a model change, or for data from before the index. Writes keep it
    up to date on their own. A job (cancel with `POST /jobs/{id}/cancel`)."""
    accepted = await services.ai.start_reindex.remote(principal)
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.get("/ai/tickets/{ticket_id}/summary", response_model=TicketSummary)
async def ticket_summary(
    ticket_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """The thread's (description and comments) most telling sentences, in order."""
    return json(await services.ai.ticket_summary.remote(principal, ticket_id))


@router.get("/ai/tickets/{ticket_id}/next-actions", response_model=NextActions)
async def ticket_next_actions(
    ticket_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """What to do next with a ticket, best first, each with its rule's reason."""
    return json(await services.ai.ticket_next_actions.remote(principal, ticket_id))


@router.get("/ai/deals/{deal_id}/next-actions", response_model=NextActions)
async def deal_next_actions(
    deal_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """What to do next with a deal, best first; `score` is the lead score of the lead
    it came from (when scored) or its stage probability."""
    return json(await services.ai.deal_next_actions.remote(principal, deal_id))
