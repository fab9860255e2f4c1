"""Reports over HTTP: each one's numbers equal plain SQL over the same generated rows
(run here, straight against the shard servers), computed by Ray tasks that asked for
the `ai` resource, cached, and dropped from the cache by the events that change them."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from ray.util.state import get_task

from cluster.settings import Settings
from tests.e2e.analytics_data import (
    Generated,
    Layout,
    generate,
    layout,
    on_each_server,
    remove,
)
from tests.e2e.conftest import make_user

pytestmark = pytest.mark.e2e
WINDOW = {"date_from": "2025-02-01", "date_to": "2025-10-31"}
START, END = "2025-02-01T00:00:00Z", "2025-11-01T00:00:00Z"


@pytest.fixture(scope="module")
def default_stages(http: httpx.Client, admin: dict[str, str]) -> list[dict[str, Any]]:
    page = http.get("/v1/sales/pipelines", headers=admin).json()["data"]
    pipeline = next(p for p in page if p["is_default"])
    return [{**s, "pipeline_id": pipeline["id"]} for s in pipeline["stages"]]


@pytest.fixture(scope="module")
def data(
    serve_app: Settings, default_stages: list[dict[str, Any]]
) -> Iterator[tuple[Layout, Generated]]:
    async def make() -> tuple[Layout, Generated]:
        lay = await layout(serve_app)
        made = await generate(
            serve_app, lay, default_stages, seed=6, deals=400, leads=300, tickets=300, changes=150
        )
        return lay, made

    lay, made = asyncio.run(make())
    yield lay, made
    asyncio.run(remove(serve_app, lay, made.owners))


def _sql(s: Settings, lay: Layout, database: str, query: str, *args: Any) -> list[dict[str, Any]]:
    """`query` on every shard server's primary; all rows together."""

    async def each(conn: asyncpg.Connection, _server: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(query, *args)]

    async def run() -> list[dict[str, Any]]:
        return [row for rows in await on_each_server(s, lay, database, each) for row in rows]

    return asyncio.run(run())


def _report(http: httpx.Client, headers: dict[str, str], name: str, **params: Any) -> Any:
    got = http.get(f"/v1/analytics/reports/{name}", headers=headers, params=params)
    assert got.status_code == 200, got.text
    return got.json()


def test_pipeline_report_equals_sql(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str], data: tuple[Layout, Generated]
) -> None:
    lay, made = data
    owner = made.owners[0]
    rows = _sql(
        serve_app, lay, "sales",
        """SELECT stage_id, currency::text AS currency, count(*) AS n, sum(amount) AS amount,
                  sum(amount * probability / 100.0) AS weighted
           FROM deals WHERE owner_id = $1 AND status = 'open' AND deleted_at IS NULL
             AND created_at >= $2::timestamptz AND created_at < $3::timestamptz
           GROUP BY 1, 2""",
        owner, _ts(START), _ts(END),
    )  # fmt: skip
    truth: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    for r in rows:  # two servers: add their groups
        t = truth[(str(r["stage_id"]), r["currency"])]
        t[0] += r["n"]
        t[1] += r["amount"]
        t[2] += r["weighted"]
    report = _report(http, admin, "pipeline", owner_id=str(owner), **WINDOW)
    got = {
        (s["stage_id"], s["currency"]): [s["deals"], Decimal(s["amount"]),
                                         Decimal(s["weighted_amount"])]
        for s in report["data"]["stages"]
    }  # fmt: skip
    assert got == dict(truth) and len(got) >= 4
    # Exact decimals, written as strings with their places.
    assert all(isinstance(s["amount"], str) for s in report["data"]["stages"])
    names = {s["stage"] for s in report["data"]["stages"]}
    assert names <= {"Prospecting", "Qualification", "Proposal", "Negotiation"}
    # The pipeline filter: the same rows (all are in the default pipeline), none elsewhere.
    pipeline_id = report["data"]["stages"][0]["pipeline_id"]
    same = _report(http, admin, "pipeline", owner_id=str(owner), pipeline_id=pipeline_id, **WINDOW)
    assert same["data"] == report["data"]
    other = _report(http, admin, "pipeline", owner_id=str(owner), pipeline_id="999999", **WINDOW)
    assert other["data"]["stages"] == []


def _ts(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_revenue_report_equals_sql(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str], data: tuple[Layout, Generated]
) -> None:
    lay, made = data
    owner = made.owners[1]
    rows = _sql(
        serve_app, lay, "sales",
        """SELECT to_char(closed_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month,
                  currency::text AS currency, count(*) AS n, sum(amount) AS amount
           FROM deals WHERE owner_id = $1 AND status = 'won' AND deleted_at IS NULL
             AND closed_at >= $2::timestamptz AND closed_at < $3::timestamptz
           GROUP BY 1, 2""",
        owner, _ts(START), _ts(END),
    )  # fmt: skip
    truth: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for r in rows:
        truth[(r["month"], r["currency"])][0] += r["n"]
        truth[(r["month"], r["currency"])][1] += r["amount"]
    report = _report(http, admin, "revenue", owner_id=str(owner), **WINDOW)
    got = {(m["month"], m["currency"]): [m["deals"], Decimal(m["amount"])]
           for m in report["data"]["months"]}  # fmt: skip
    assert got == dict(truth) and len(got) >= 3
    assert [m["month"] for m in report["data"]["months"]] == sorted(
        m["month"] for m in report["data"]["months"]
    )


def test_funnel_report_equals_sql(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str], data: tuple[Layout, Generated]
) -> None:
    lay, made = data
    owner = made.owners[2]
    leads = _sql(
        serve_app, lay, "marketing",
        """SELECT converted_customer_id, converted_deal_id FROM leads
           WHERE owner_id = $1 AND deleted_at IS NULL
             AND created_at >= $2::timestamptz AND created_at < $3::timestamptz""",
        owner, _ts(START), _ts(END),
    )  # fmt: skip
    deal_ids = [r["converted_deal_id"] for r in leads if r["converted_deal_id"] is not None]
    won = _sql(
        serve_app,
        lay,
        "sales",
        "SELECT count(*) AS n FROM deals WHERE id = ANY($1::bigint[]) AND status = 'won'",
        deal_ids,
    )
    customers = sum(1 for r in leads if r["converted_customer_id"] is not None)
    won_count = sum(r["n"] for r in won)
    report = _report(http, admin, "funnel", owner_id=str(owner), **WINDOW)["data"]
    assert (report["leads"], report["customers"], report["deals_won"]) == (
        len(leads),
        customers,
        won_count,
    )
    assert won_count > 0 and customers > won_count
    assert Decimal(report["lead_to_customer"]) == round(Decimal(customers) / len(leads), 4)


def test_sla_report_equals_sql(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str], data: tuple[Layout, Generated]
) -> None:
    lay, made = data
    rows = _sql(
        serve_app, lay, "support",
        """SELECT priority, assignee_id, count(*) AS n,
                  count(*) FILTER (WHERE NOT first_response_breached
                                     AND NOT resolution_breached) AS met
           FROM tickets WHERE deleted_at IS NULL
             AND created_at >= $1::timestamptz AND created_at < $2::timestamptz
           GROUP BY 1, 2""",
        _ts(START), _ts(END),
    )  # fmt: skip
    by_priority: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_agent: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        agent = None if r["assignee_id"] is None else str(r["assignee_id"])
        for acc in (by_priority[r["priority"]], by_agent[agent]):
            acc[0] += r["n"]
            acc[1] += r["met"]
    report = _report(http, admin, "sla", **WINDOW)["data"]
    assert {p["priority"]: [p["tickets"], p["met"]] for p in report["by_priority"]} == dict(
        by_priority
    )
    assert {a["assignee_id"]: [a["tickets"], a["met"]] for a in report["by_agent"]} == dict(
        by_agent
    )
    assert {str(o) for o in made.owners} <= {a["assignee_id"] for a in report["by_agent"]}
    # Filtered by agent: just that agent's row.
    mine = _report(http, admin, "sla", owner_id=str(made.owners[0]), **WINDOW)["data"]
    assert [a["assignee_id"] for a in mine["by_agent"]] == [str(made.owners[0])]
    assert mine["by_agent"][0]["tickets"] == by_agent[str(made.owners[0])][0]


def test_activity_report_equals_sql(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str], data: tuple[Layout, Generated]
) -> None:
    lay, made = data
    truth: dict[str, int] = defaultdict(int)
    for database in ("customer", "sales", "marketing", "support"):
        for r in _sql(
            serve_app, lay, database,
            """SELECT actor_id, count(*) AS n FROM record_changes
               WHERE actor_id = ANY($1::bigint[])
                 AND created_at >= $2::timestamptz AND created_at < $3::timestamptz
               GROUP BY 1""",
            made.owners, _ts(START), _ts(END),
        ):  # fmt: skip
            truth[str(r["actor_id"])] += r["n"]
    report = _report(http, admin, "activity", **WINDOW)["data"]
    got = {o["owner_id"]: o["changes"] for o in report["owners"]}
    assert {k: got.get(k) for k in truth} == dict(truth)
    assert len(truth) == 3


def _finished(task_id: str, ray_address: str) -> Any:
    """Ray's record of a finished task with its worker's pid (the state API fills it in
    asynchronously, from events the worker sends: a worker stopped too soon may never
    send them)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = get_task(task_id, address=ray_address)
        if isinstance(state, list):
            state = state[-1] if state else None
        finished = state is not None and state.state == "FINISHED"
        if finished and state.required_resources and state.worker_pid:
            return state
        time.sleep(0.5)
    raise AssertionError(f"task {task_id}: no record of it finished on a worker")


def test_reports_run_as_ray_tasks_with_the_ai_resource(
    ray_driver: None,
    serve_app: Settings,
    http: httpx.Client,
    admin: dict[str, str],
    data: tuple[Layout, Generated],
) -> None:
    lay, made = data
    # A filter no other test uses: computed now, not answered from the cache.
    report = _report(http, admin, "revenue", owner_id=str(made.owners[0]), date_from="2025-03-01")
    assert report["cached"] is False
    tasks = report["tasks"]
    # One task per shard server, over the logical shards the map puts there: together
    # every logical shard, each once.
    assert sorted(s for t in tasks for s in t["shards"]) == sorted(lay.shard_server)
    assert sorted(t["server"] for t in tasks) == sorted(set(lay.shard_server.values()))
    assert len({t["task_id"] for t in tasks}) == len(tasks)
    for t in tasks:
        assert t["resources"]["ai"] == pytest.approx(0.25)
        assert t["resources"]["CPU"] == pytest.approx(0.25)
        assert all(lay.shard_server[s] == t["server"] for s in t["shards"])
    # Ray's own record of the task agrees.
    state = _finished(tasks[0]["task_id"], serve_app.ray_address)
    assert state.required_resources.get("ai") == pytest.approx(0.25)
    assert state.name.endswith("shard_reads") and state.type == "NORMAL_TASK"
    # The workers stay for the next report or search: Ray stops an idle task worker
    # after 1 s unless told otherwise, and the next call then waits for a new Python
    # process (1.8-2.7 s measured, against 0.1 s warm; `ray_idle_worker_keep_s`).
    pids = {_finished(t["task_id"], serve_app.ray_address).worker_pid for t in tasks}
    time.sleep(4)
    for pid in pids:
        os.kill(pid, 0)  # raises ProcessLookupError once Ray has stopped the worker


def test_cache_and_event_invalidation(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str]
) -> None:
    # A fresh owner: no other test's deals count in this report.
    me = http.get("/v1/auth/me", headers=make_user(http, admin, "agent")).json()
    customer = http.post("/v1/customers", headers=admin, json={"name": "Report Co"}).json()

    def deal(amount: str) -> None:
        made = http.post(
            "/v1/sales/deals",
            headers=admin,
            json={"customer_id": customer["id"], "name": "Counted",
                  "amount": {"amount": amount, "currency": "EUR"}, "owner_id": me["id"]},
        )  # fmt: skip
        assert made.status_code == 201, made.text

    deal("100.10")
    # The deal's event reaches the consumer soon after; wait until the report has it.
    params = {"owner_id": me["id"], "date_from": "2026-01-01"}

    def total() -> tuple[Decimal, bool]:
        report = _report(http, admin, "pipeline", **params)
        stages = report["data"]["stages"]
        return sum((Decimal(s["amount"]) for s in stages), Decimal(0)), report["cached"]

    deadline = time.monotonic() + 30
    while total()[0] < Decimal("100.10") and time.monotonic() < deadline:
        time.sleep(0.5)
    # The event drops the cache twice: at once and a replica's lag later (a report
    # computed in between may have read a standby that was behind). After that, the
    # next report is cached and the one after it comes from the cache.
    time.sleep(serve_app.max_replica_lag_s + 1)
    first, _ = total()
    assert first == Decimal("100.10")
    again, cached = total()
    assert cached is True and again == first
    # A new deal: its event drops the cached report (TTL is minutes), within seconds.
    deal("0.0001")
    deadline = time.monotonic() + 30
    while (now := total())[0] == first and time.monotonic() < deadline:
        time.sleep(0.3)
    assert now[0] == first + Decimal("0.0001")


def test_report_permissions_and_bad_input(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    agent = make_user(http, admin, "agent")
    assert http.get("/v1/analytics/reports/pipeline", headers=agent).status_code == 403
    assert http.get("/v1/analytics/reports/pipeline").status_code == 401
    assert http.get("/v1/analytics/reports/funnel", headers=viewer).status_code == 200
    unknown = http.get("/v1/analytics/reports/nope", headers=admin)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    for params, field in (
        ({"date_from": "yesterday"}, "date_from"),
        ({"date_from": "2025-05-01", "date_to": "2025-04-01"}, "query"),
        ({"owner_id": "-3"}, "owner_id"),
        ({"colour": "red"}, "colour"),
        ({"pipeline_id": "1"}, "pipeline_id"),  # not a filter of the SLA report
    ):
        bad = http.get("/v1/analytics/reports/sla", headers=admin, params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["errors"][0]["field"] == field, bad.json()
