"""Reports, under `/v1/analytics` (the analytics application's prefix). Path: this
file -> deployments/analytics/service.py (Ray tasks per logical shard)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import ValidationError
from starlette.responses import Response

from deployments.analytics.reports import ReportQuery, ReportRead
from deployments.analytics.service import AnalyticsService
from gateway.context import CurrentPrincipal, json, service
from gateway.errors import Validation

router = APIRouter(tags=["reports"])
Service = Annotated[AnalyticsService, Depends(service)]
ReportName = Annotated[str, Path(max_length=40, description="pipeline|revenue|funnel|sla|activity")]


def report_query(request: Request) -> ReportQuery:
    params = request.query_params
    repeated = sorted({k for k in params if len(params.getlist(k)) > 1})
    if repeated:
        raise Validation(
            "each filter may be given once",
            [{"field": k, "message": "given more than once"} for k in repeated],
        )
    try:
        return ReportQuery.model_validate(dict(params))
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "query", "message": e["msg"]}
            for e in exc.errors()
        ]
        raise Validation("invalid report filters", errors) from None


@router.get("/reports/{name}", response_model=ReportRead)
async def get_report(
    name: ReportName, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A report over every shard: `pipeline` (open deals by stage: count, amount,
    weighted amount), `revenue` (won deals by month), `funnel` (lead -> customer ->
    deal won), `sla` (ticket SLA compliance by priority and agent), `activity`
    (changes per owner). Filters: `date_from`, `date_to` (UTC days, inclusive),
    `owner_id`, `pipeline_id` (pipeline and revenue). Amounts are decimal strings per
    currency. Cached for a while; events that change a report drop its cache."""
    query = report_query(request)
    return json(await svc.report(principal, name, query))
