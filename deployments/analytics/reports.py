"""Report definitions: the query a caller sends, which shard aggregates each report
needs, and how the per-shard partials reduce into one answer. Pure functions: no
Ray, no I/O (the service submits the tasks; tests reduce partials by hand)."""

from __future__ import annotations

import decimal
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments._kit.types import Id
from deployments.analytics.repo import ShardFilters, as_decimal
from gateway.errors import Forbidden
from gateway.principal import Principal

ReportName = Literal["pipeline", "revenue", "funnel", "sla", "activity"]
REPORTS: tuple[str, ...] = ("pipeline", "revenue", "funnel", "sla", "activity")
# Which reports an event type can change (by its aggregate, the part before the dot):
# the event consumer bumps these reports' cache generation.
AFFECTS: dict[str, tuple[str, ...]] = {
    "deal": ("pipeline", "revenue", "funnel", "activity"),
    "lead": ("funnel", "activity"),
    "ticket": ("sla", "activity"),
    "comment": ("activity",),
    "customer": ("activity",),
    "contact": ("activity",),
    "order": ("activity",),
}
# Reports that a `pipeline_id` filter applies to.
BY_PIPELINE = frozenset({"pipeline", "revenue"})
_EXACT = decimal.Context(prec=60)  # sums of 18-digit amounts over millions of rows


class ReportQuery(BaseModel):
    """`GET /v1/analytics/reports/<name>?date_from=&date_to=&owner_id=&pipeline_id=`.
    Dates are UTC calendar days, both inclusive; `owner_id` is the deal/lead owner, the
    ticket's assignee, or the actor of a change (activity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    date_from: date | None = None
    date_to: date | None = None
    owner_id: Id | None = None
    pipeline_id: Id | None = Field(default=None, description="pipeline and revenue only")

    @model_validator(mode="after")
    def _ordered(self) -> ReportQuery:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from must not be after date_to")
        return self

    def within_scope(self, principal: Principal) -> ReportQuery:
        """This query as `principal` may ask it. A role whose `report:read` is scoped
        sees only the totals of records its scope reaches: `own`, the caller's (the
        query is narrowed to `owner_id` = the caller); `team`, one team member's at a
        time (`owner_id` is required: the totals of several owners at once are not
        computed). Another owner is a 403, never a report of everyone's records."""
        owners = principal.owners("report:read")
        if owners is None:
            return self
        if self.owner_id is None:
            if owners == {principal.user_id}:
                return self.model_copy(update={"owner_id": principal.user_id})
            raise Forbidden("your reports reach your team's records: name one member with owner_id")
        if self.owner_id not in owners:
            raise Forbidden("owner_id is outside the records your reports reach")
        return self

    def shard_filters(self) -> ShardFilters:
        start = datetime.combine(self.date_from, time(), UTC) if self.date_from else None
        end = (
            datetime.combine(self.date_to + timedelta(days=1), time(), UTC)
            if self.date_to
            else None
        )
        return ShardFilters(
            start=start, end=end, owner_id=self.owner_id, pipeline_id=self.pipeline_id
        )

    def cache_key(self) -> str:
        return self.model_dump_json(exclude_none=True)


class TaskInfo(BaseModel):
    shards: list[int]  # the logical shards it read, all on `server`
    server: str
    task_id: str
    node_id: str
    resources: dict[str, float]


class ReportRead(BaseModel):
    report: str
    filters: dict[str, Any]
    data: dict[str, Any]
    generated_at: datetime
    cached: bool = False
    tasks: list[TaskInfo] = Field(default_factory=list)


def _money(value: Decimal) -> str:
    """Exact decimal text without exponent or trailing noise (`"1234.5000"` stays)."""
    return format(value, "f")


def _rate(part: int, whole: int) -> str | None:
    """A ratio as a decimal string with 4 places (None for 0/0)."""
    if whole == 0:
        return None
    return _money((Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001")))


def reduce_pipeline(
    partials: Iterable[list[dict[str, Any]]], stages: Mapping[int, Mapping[str, Any]]
) -> dict[str, Any]:
    sums: dict[tuple[int, int, str], list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    for rows in partials:
        for r in rows:
            acc = sums[(int(r["pipeline_id"]), int(r["stage_id"]), r["currency"])]
            acc[0] += int(r["deals"])
            acc[1] = _EXACT.add(acc[1], as_decimal(r["amount"]))
            acc[2] = _EXACT.add(acc[2], as_decimal(r["weighted_x100"]))
    out = []
    for (pipeline_id, stage_id, currency), (count, amount, weighted) in sums.items():
        stage = stages.get(stage_id, {})
        out.append({
            "pipeline_id": str(pipeline_id),
            "pipeline": stage.get("pipeline"),
            "stage_id": str(stage_id),
            "stage": stage.get("name"),
            "position": stage.get("position"),
            "currency": currency,
            "deals": count,
            "amount": _money(amount),
            "weighted_amount": _money(_EXACT.divide(weighted, Decimal(100))),
        })  # fmt: skip
    out.sort(key=lambda s: (int(s["pipeline_id"]), s["position"] or 0, int(s["stage_id"]),
                            s["currency"]))  # fmt: skip
    return {"stages": out}


def reduce_revenue(partials: Iterable[list[dict[str, Any]]]) -> dict[str, Any]:
    sums: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for rows in partials:
        for r in rows:
            acc = sums[(r["month"], r["currency"])]
            acc[0] += int(r["deals"])
            acc[1] = _EXACT.add(acc[1], as_decimal(r["amount"]))
    months = [
        {"month": month, "currency": currency, "deals": count, "amount": _money(amount)}
        for (month, currency), (count, amount) in sorted(sums.items())
    ]
    return {"months": months}


def funnel_deal_ids(partials: Iterable[dict[str, Any]]) -> list[int]:
    return sorted({d for p in partials for d in p["deal_ids"]})


def reduce_funnel(partials: Iterable[dict[str, Any]], won: int) -> dict[str, Any]:
    parts = list(partials)
    leads = sum(p["leads"] for p in parts)
    customers = sum(p["customers"] for p in parts)
    return {
        "leads": leads,
        "customers": customers,
        "deals_won": won,
        "lead_to_customer": _rate(customers, leads),
        "customer_to_won": _rate(won, customers),
        "lead_to_won": _rate(won, leads),
    }


def _sla_entry(c: list[int]) -> dict[str, Any]:
    tickets, first, resolution, met = c
    return {
        "tickets": tickets,
        "met": met,
        "first_response_breached": first,
        "resolution_breached": resolution,
        "compliance": _rate(met, tickets),
    }


def reduce_sla(partials: Iterable[list[dict[str, Any]]]) -> dict[str, Any]:
    by_priority: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    by_agent: dict[int | None, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for rows in partials:
        for r in rows:
            values = (r["tickets"], r["first_response_breached"], r["resolution_breached"],
                      r["met"])  # fmt: skip
            for acc in (by_priority[r["priority"]], by_agent[r["assignee_id"]]):
                for i, v in enumerate(values):
                    acc[i] += int(v)
    rank = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
    return {
        "by_priority": [
            {"priority": p, **_sla_entry(c)}
            for p, c in sorted(by_priority.items(), key=lambda kv: rank.get(kv[0], 9))
        ],
        "by_agent": [
            {"assignee_id": None if a is None else str(a), **_sla_entry(c)}
            for a, c in sorted(by_agent.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
        ],
    }


def reduce_activity(partials: Iterable[list[dict[str, Any]]]) -> dict[str, Any]:
    owners: dict[int, dict[str, Any]] = {}
    for rows in partials:
        for r in rows:
            owner = owners.setdefault(
                int(r["actor_id"]), {"changes": 0, "by_record_type": {}, "by_action": {}}
            )
            n = int(r["changes"])
            owner["changes"] += n
            owner["by_record_type"][r["record_type"]] = (
                owner["by_record_type"].get(r["record_type"], 0) + n
            )
            owner["by_action"][r["action"]] = owner["by_action"].get(r["action"], 0) + n
    ordered = sorted(owners.items(), key=lambda kv: (-kv[1]["changes"], kv[0]))
    return {"owners": [{"owner_id": str(k), **v} for k, v in ordered]}
