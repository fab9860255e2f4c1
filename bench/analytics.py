"""Benchmark: the pipeline report through Ray tasks vs one SQL aggregate on one server,
over the same deals, in one run; and batch lead-scoring throughput.

Starts a throwaway stack on free ports (as bench/get_customer.py does), then:

1. writes N deals straight into the shard servers' `sales` databases (each on the
   server the shard map names for its logical shard) and the same N rows into one
   table on one server (database `bench_single` on the catalog server);
2. times `GET /v1/analytics/reports/pipeline` (one Ray task per logical shard, reduced in the
   AnalyticsService; a new `date_to` each time so the cache never answers) against
   the same aggregate as one SQL statement on the single server; checks that both
   give the same numbers;
3. writes labelled and open leads, trains a model, and times the batch-scoring job
   (leads/s, from the job's own progress).

    .venv/bin/python bench/analytics.py --deals 1000000     # rewrites its docs section
    .venv/bin/python bench/analytics.py --servers 2,1,4     # one stack per server count
    .venv/bin/python bench/analytics.py --quick             # smoke run, docs untouched
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)

from cluster.cli import RichReporter  # noqa: E402
from cluster.settings import Settings  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/analytics.py: generated, rerun `bench/analytics.py` to update -->"
DOC_END = "<!-- END bench/analytics.py -->"
console = base.console

# Every deal is a function of its number i, so both copies hold the same rows.
DEAL_SELECT = """
    SELECT {id_expr} AS id, 1 + (i % 5000) AS customer_id, 'deal ' || i AS name,
           ((i * 7919) % 10000000)::numeric / 10000 AS amount,
           CASE WHEN i % 3 = 0 THEN 'USD' ELSE 'EUR' END AS currency,
           $1::bigint AS pipeline_id, ($2::bigint[])[1 + i % 4] AS stage_id,
           ($3::int[])[1 + i % 4] AS probability, 'open' AS status,
           1 + i % 50 AS owner_id,
           timestamptz '2025-01-01' + (i % 365) * interval '1 day' AS created_at
    FROM generate_series($4::bigint, $5::bigint) AS i
    WHERE i % $6 = ANY($7::int[])"""
COLUMNS = ("id, customer_id, name, amount, currency, pipeline_id, stage_id, probability, "
           "status, owner_id, created_at")  # fmt: skip


async def _stages(s: Settings) -> tuple[int, list[int], list[int]]:
    cat = s.catalog_address()
    conn = await asyncpg.connect(s.dsn_for(cat.host, cat.port, "sales_config"))
    try:
        rows = await conn.fetch(
            """SELECT s.pipeline_id, s.id, s.probability FROM pipeline_stages s
               JOIN pipelines p ON p.id = s.pipeline_id
               WHERE p.is_default AND s.kind = 'open' ORDER BY s.position"""
        )
    finally:
        await conn.close()
    return (
        int(rows[0]["pipeline_id"]),
        [int(r["id"]) for r in rows],
        [int(r["probability"]) for r in rows],
    )


async def _layout(s: Settings) -> tuple[dict[str, tuple[str, int]], dict[str, list[int]], int]:
    cat = s.catalog_address()
    conn = await asyncpg.connect(s.dsn_for(cat.host, cat.port, "catalog"))
    try:
        servers = {r["name"]: (r["host"], int(r["port"])) for r in
                   await conn.fetch("SELECT name, host, port FROM shard_servers")}  # fmt: skip
        owned: dict[str, list[int]] = {}
        rows = await conn.fetch("SELECT shard_key, shard_server FROM shard_map ORDER BY 1")
        for r in rows:
            owned.setdefault(r["shard_server"], []).append(int(r["shard_key"]))
    finally:
        await conn.close()
    return {k: v for k, v in servers.items() if k in owned}, owned, len(rows)


async def seed_deals(s: Settings, n: int, chunk: int = 200_000) -> float:
    """N deals on the shard servers and the same N on one server; seconds taken."""
    started = time.perf_counter()
    pipeline, stages, probs = await _stages(s)
    servers, owned, logical = await _layout(s)
    single = await asyncpg.connect(await base.scratch_database(s, "bench_single"))
    await single.execute(
        """CREATE TABLE deals (id bigint PRIMARY KEY, customer_id bigint, name text,
               amount numeric NOT NULL, currency char(3), pipeline_id bigint, stage_id bigint,
               probability integer, status text, owner_id bigint, created_at timestamptz,
               deleted_at timestamptz)"""
    )
    targets: list[tuple[asyncpg.Connection, str, list[int]]] = [(single, "i", list(range(logical)))]
    for name, (host, port) in servers.items():
        conn = await asyncpg.connect(s.dsn_for(host, port, "sales"))
        targets.append((conn, "nextflow_id((i % $6)::int)", owned[name]))
    try:
        for lo in range(1, n + 1, chunk):
            hi = min(lo + chunk - 1, n)
            await asyncio.gather(*(
                conn.execute(
                    f"INSERT INTO deals ({COLUMNS}) "
                    + DEAL_SELECT.format(id_expr=id_expr),
                    pipeline, stages, probs, lo, hi, logical, shards,
                )
                for conn, id_expr, shards in targets
            ))  # fmt: skip
            console.print(f"  deals written: {hi:,}/{n:,}")
        for conn, _, _ in targets:
            await conn.execute("ANALYZE deals")
    finally:
        for conn, _, _ in targets:
            await conn.close()
    return time.perf_counter() - started


SINGLE_SQL = """SELECT pipeline_id, stage_id, currency::text AS currency, count(*) AS deals,
       sum(amount) AS amount, sum(amount * probability) / 100 AS weighted
FROM deals WHERE deleted_at IS NULL AND status = 'open'
  AND created_at < $1::timestamptz
GROUP BY pipeline_id, stage_id, currency"""


async def time_single(s: Settings, runs: int) -> tuple[list[float], dict[tuple[str, str], Any]]:
    cat = s.catalog_address()
    conn = await asyncpg.connect(s.dsn_for(cat.host, cat.port, "bench_single"))
    times = []
    rows: list[Any] = []
    try:
        for k in range(runs):
            end = datetime(2099, 1, 1, tzinfo=UTC) + timedelta(days=k)
            t0 = time.perf_counter()
            rows = await conn.fetch(SINGLE_SQL, end)
            times.append(time.perf_counter() - t0)
    finally:
        await conn.close()
    truth = {(str(r["stage_id"]), r["currency"]): (r["deals"], r["amount"], r["weighted"])
             for r in rows}  # fmt: skip
    return times, truth


def time_report(
    url: str, token: str, runs: int, first_day: int = 0
) -> tuple[list[float], dict[Any, Any], int]:
    times = []
    got: dict[Any, Any] = {}
    tasks = 0
    with httpx.Client(base_url=url, timeout=600) as http:
        for k in range(runs):
            to = (date(2098, 12, 31) + timedelta(days=first_day + k)).isoformat()  # not cached
            t0 = time.perf_counter()
            r = http.get("/v1/analytics/reports/pipeline", params={"date_to": to},
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            body = r.json()
            assert body["cached"] is False
            tasks = len(body["tasks"])
            got = {(st["stage_id"], st["currency"]): (st["deals"], Decimal(st["amount"]),
                                                       Decimal(st["weighted_amount"]))
                   for st in body["data"]["stages"]}  # fmt: skip
    return times, got, tasks


async def seed_leads(s: Settings, labelled: int, open_leads: int) -> None:
    servers, owned, logical = await _layout(s)
    for name, (host, port) in servers.items():
        conn = await asyncpg.connect(s.dsn_for(host, port, "marketing"))
        try:
            await conn.execute(
                """INSERT INTO leads (id, email, title, source, company, status)
                   SELECT nextflow_id((i % $3)::int), 'bench' || i || '@' ||
                          CASE WHEN i % 2 = 0 THEN 'corp' || (i % 97) || '.example'
                               ELSE 'gmail.com' END,
                          CASE WHEN i % 5 < 2 THEN 'VP Sales' ELSE 'Analyst' END,
                          CASE WHEN i % 7 < 3 THEN 'referral' ELSE 'ad' END, 'Co ' || i,
                          CASE WHEN i > $2 THEN 'new'
                               WHEN (i % 2 = 0 AND i % 5 < 2) OR i % 11 = 0 THEN 'converted'
                               ELSE 'unqualified' END
                   FROM generate_series(1, $1::bigint) AS i
                   WHERE i % $3 = ANY($4::int[])""",
                labelled + open_leads, labelled, logical, owned[name],
            )  # fmt: skip
        finally:
            await conn.close()


def run_job(http: httpx.Client, headers: dict[str, str], path: str) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    accepted = http.post(path, headers=headers)
    accepted.raise_for_status()
    url = accepted.json()["status_url"]
    while True:
        job = http.get(url, headers=headers).json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    return job, time.perf_counter() - t0


def percentiles(times: list[float]) -> tuple[float, float]:
    """p50 and p99 of request times."""
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def machine() -> str:
    load = os.getloadavg()[0]
    return (f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; CPUs: {os.cpu_count()} (nproc); "
            f"OS: {platform.system()} {platform.release()}; load average (1 min) at the end: "
            f"{load:.2f} (other work on the machine shares the cores); Python: "
            f"{platform.python_version()}")  # fmt: skip


def write_doc(section: str, begin: str = DOC_BEGIN, end: str = DOC_END) -> None:
    """Replace (or append) the generated section between `begin` and `end`."""
    doc = base.DOC
    text = doc.read_text()
    block = f"{begin}\n{section}\n{end}"
    if begin in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def pipeline_on(servers: int, deals: int, runs: int, leads: int | None) -> dict[str, Any]:
    """A private stack with `servers` shard servers: the pipeline report against one
    SQL aggregate over the same `deals`, and (when `leads`) lead scoring."""
    base.SHARD_SERVERS = servers
    root, settings, stack = base.tuned_stack("nfb-")
    out: dict[str, Any] = {"servers": servers}
    try:
        console.rule(f"starting a private stack with {servers} shard server(s)")
        stack.up(RichReporter(console))
        url = settings.serve_url
        token = base.admin_token(url)
        headers = {"Authorization": f"Bearer {token}"}
        console.rule(f"seeding {deals:,} deals twice (shards, one server)")
        out["seeded_s"] = asyncio.run(seed_deals(settings, deals))
        console.print(f"  seeded in {out['seeded_s']:.0f}s; waiting for the standbys")
        time.sleep(settings.max_replica_lag_s + 2)
        # One run of each first, not counted: Ray starts its task workers, PostgreSQL
        # reads the rows into its cache.
        asyncio.run(time_single(settings, 1))
        time_report(url, token, 1, first_day=1000)
        single_t, truth = asyncio.run(time_single(settings, runs))
        report_t, got, out["tasks"] = time_report(url, token, runs)
        out["same"] = got == {k: (v[0], Decimal(v[1]), Decimal(v[2])) for k, v in truth.items()}
        out["single"], out["report"] = single_t, report_t
        medians = statistics.median(report_t), statistics.median(single_t)
        console.print(f"  identical results: {out['same']}; medians: report {medians[0]:.3f}s,"
                      f" SQL {medians[1]:.3f}s")  # fmt: skip
        if leads:
            console.rule(f"lead scoring: {leads:,} open leads")
            asyncio.run(seed_leads(settings, labelled=max(leads // 5, 2000), open_leads=leads))
            time.sleep(settings.max_replica_lag_s + 2)
            with httpx.Client(base_url=url, timeout=600) as http:
                out["trained"], out["train_s"] = run_job(http, headers, "/v1/ai/lead-scoring/train")
                out["scored"], out["score_s"] = run_job(http, headers, "/v1/ai/lead-scoring/score")
            out["batch"] = settings.ai_score_batch_size
            out["in_flight"] = settings.ai_tasks_in_flight
    finally:
        console.rule("stopping the stack")
        stack.down(RichReporter(console))
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=50_000, help="open leads to score")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--servers", default="2,1,4",
        help="shard-server counts, one stack each; the first also scores leads",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.deals, args.leads, args.runs, args.servers = 20_000, 2_000, 2, "2"
    counts = [int(n) for n in args.servers.split(",")]
    results = [pipeline_on(n, args.deals, args.runs, args.leads if i == 0 else None)
               for i, n in enumerate(counts)]  # fmt: skip
    main_run = results[0]
    rows = []
    for r in sorted(results, key=lambda r: r["servers"]):
        single_med, report_med = statistics.median(r["single"]), statistics.median(r["report"])
        rows.append(
            f"| {r['servers']} | {r['tasks']} | {report_med:.3f} | {min(r['report']):.3f} | "
            f"{single_med:.3f} | **{report_med / single_med:.2f}x** | {r['same']} |"
        )
    trained, scored = main_run["trained"]["result"], main_run["scored"]["result"]
    section = "\n".join([
        "## Analytics and lead scoring on Ray tasks (`bench/analytics.py`)",
        "",
        f"{args.deals:,} open deals, written twice in the same run: across the shard servers "
        "(10 logical shards) and into one table on one server. The pipeline report "
        "(`GET /v1/analytics/reports/pipeline`: one Ray task of 0.25 CPU + 0.25 `ai` "
        "per shard server, "
        "over the logical shards it holds, reduced in the AnalyticsService, cache bypassed) "
        "against the same `GROUP BY` as one SQL statement on the single server; medians of "
        f"{args.runs} runs; one private stack per server count, all on this machine.",
        "",
        "| shard servers | Ray tasks | report median s | min s | one SQL median s | ratio | same numbers |",  # noqa: E501
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "How it scales with servers, as measured here: every server of these stacks shares "
        "the same 2 cores, so more servers only split the same CPU among more processes (n "
        "primaries, n standbys, n tasks): "
        + ", ".join(f"{r['servers']} server(s) {statistics.median(r['report']) / statistics.median(r['single']):.2f}x" for r in results)  # noqa: E501
        + ". What separate machines would give (each server scanning 1/n of the rows, plus "
        "the tasks' fixed cost) is not measured: this machine cannot show it. Medians against "
        "minimums show how loaded the shared machine was (load average below).",
        "",
        f"Lead scoring ({main_run['servers']} servers): trained on "
        f"{trained.get('n_train', 0) + trained.get('n_test', 0):,} labelled leads in "
        f"{main_run['train_s']:.1f} s (held-out AUC {trained.get('auc', 0):.3f}); batch scoring "
        f"of {scored.get('scored', 0):,} open leads in {main_run['score_s']:.1f} s = "
        f"**{scored.get('scored', 0) / main_run['score_s']:,.0f} leads/s** "
        f"({scored.get('tasks', 0)} Ray tasks of {main_run['batch']} leads, "
        f"{main_run['in_flight']} in flight; status {main_run['scored']['status']}).",
        "",
        f"Seeding both copies took {main_run['seeded_s']:.0f} s. Machine: {machine()}",
    ])  # fmt: skip
    console.print(section)
    if not args.quick:
        write_doc(section)


if __name__ == "__main__":
    main()
