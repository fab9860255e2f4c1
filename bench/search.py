"""Benchmark: search (`GET /v1/ai/search`) over generated customers and tickets, each mode
against PostgreSQL's own full-text search over the same rows on one server, in one
run; and how fast the index is rebuilt (`POST /v1/ai/search/reindex`, with embeddings).

Starts a throwaway stack on free ports (as bench/get_customer.py does), then:

1. writes N customers and N/5 tickets straight into the shard servers (each on the
   server the shard map names for its logical shard), and the same texts into one
   table on one server with a GIN index on their `to_tsvector('simple', ...)`;
2. rebuilds the search index as the job an operator runs (words and embeddings);
3. sends the same queries one at a time to `GET /v1/ai/search` in each mode and to the
   single server (`ts_rank` top 10 of `@@ plainto_tsquery`), interleaved; p50/p99.

    .venv/bin/python bench/search.py --customers 50000      # rewrites its docs section
    .venv/bin/python bench/search.py --quick                # smoke run, docs untouched
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analytics as an  # noqa: E402  (bench/ is scripts, not a package)
import get_customer as base  # noqa: E402

from cluster.cli import RichReporter  # noqa: E402
from cluster.settings import Settings  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/search.py: generated, rerun `bench/search.py` to update -->"
DOC_END = "<!-- END bench/search.py -->"
console = base.console
FIRST = ["Acme", "Blue", "Northwind", "Globex", "Initech", "Umbrella", "Stark", "Wayne",
         "Hooli", "Vandelay", "Cyberdyne", "Soylent", "Tyrell", "Wonka", "Gringotts",
         "Oceanic", "Monarch", "Duff", "Aperture", "Massive"]  # fmt: skip
SECOND = ["Bakery", "Logistics", "Software", "Dental", "Hotel", "Farm", "Brewery",
          "Robotics", "Pharma", "Textiles", "Airlines", "Insurance", "Bank", "Foods",
          "Motors", "Studios", "Clinic", "Energy", "Mining", "Media"]  # fmt: skip
ISSUES = [
    ("Invoice charged twice", "Our card was billed two times for the same invoice."),
    ("Cannot log in", "The password reset e-mail never arrives in the inbox."),
    ("Export fails", "Exporting the report to CSV stops with an error."),
    ("Printer offline", "The label printer in the warehouse does not respond."),
    ("Slow dashboard", "The dashboard takes a minute to load every morning."),
    ("Wrong address", "Parcels are sent to the old office address."),
    ("Refund request", "Please refund the cancelled order from last week."),
    ("App crashes", "The mobile app closes when opening the orders tab."),
]
QUERIES = ["northwind bakery", "globex robotics 1234", "acme", "double billing on my card",
           "parcel delivered to former office", "cannot sign in", "stark energy",
           "refund cancelled order", "csv export error", "dashboard very slow"]  # fmt: skip
SINGLE_SQL = """SELECT id, title FROM docs
WHERE tsv @@ plainto_tsquery('simple', $1)
ORDER BY ts_rank(tsv, plainto_tsquery('simple', $1)) DESC, id LIMIT 10"""


def _name(first: int, second: int) -> str:
    """SQL: a company name from two word lists ($first, $second) and the row number."""
    return (f"(${first}::text[])[1 + i % 20] || ' ' || (${second}::text[])[1 + (i / 20) % 20]"
            " || ' ' || i")  # fmt: skip


async def seed(s: Settings, customers: int) -> float:
    """Customers and tickets on the shard servers, the same texts on one server."""
    started = time.perf_counter()
    servers, owned, logical = await an._layout(s)
    tickets = max(customers // 5, 1)
    subjects, bodies = [t for t, _ in ISSUES], [d for _, d in ISSUES]
    subject = "($1::text[])[1 + i % 8]"
    body = "($2::text[])[1 + i % 8] || ' Customer ' || i || '.'"
    for server, (host, port) in servers.items():
        mine = owned[server]
        conn = await asyncpg.connect(s.dsn_for(host, port, "customer"))
        try:
            await conn.execute(
                f"""INSERT INTO customers (id, name, industry)
                    SELECT nextflow_id((i % $4)::int), {_name(1, 2)},
                           ($2::text[])[1 + (i / 20) % 20]
                    FROM generate_series(1, $3::bigint) AS i WHERE i % $4 = ANY($5::int[])""",
                FIRST, SECOND, customers, logical, mine,
            )  # fmt: skip
        finally:
            await conn.close()
        conn = await asyncpg.connect(s.dsn_for(host, port, "support"))
        try:
            await conn.execute(
                f"""INSERT INTO tickets (id, customer_id, subject, description, priority,
                        first_response_due_at, resolution_due_at)
                    SELECT nextflow_id((i % $4)::int), i, {subject}, {body}, 'normal',
                           now() + interval '1 day', now() + interval '3 days'
                    FROM generate_series(1, $3::bigint) AS i WHERE i % $4 = ANY($5::int[])""",
                subjects, bodies, tickets, logical, mine,
            )  # fmt: skip
        finally:
            await conn.close()
    single = await asyncpg.connect(await base.scratch_database(s, "bench_search"))
    try:
        await single.execute("CREATE TABLE docs (id bigint PRIMARY KEY, title text, tsv tsvector)")
        await single.execute(
            f"""INSERT INTO docs SELECT i, {_name(1, 2)}, to_tsvector('simple',
                    {_name(1, 2)} || ' ' || ($2::text[])[1 + (i / 20) % 20])
                FROM generate_series(1, $3::bigint) AS i""",
            FIRST, SECOND, customers,
        )  # fmt: skip
        await single.execute(
            f"""INSERT INTO docs SELECT 10000000 + i, {subject}, to_tsvector('simple',
                    {subject} || ' ' || {subject} || ' ' || {body})
                FROM generate_series(1, $3::bigint) AS i""",
            subjects, bodies, tickets,
        )  # fmt: skip
        await single.execute("CREATE INDEX ON docs USING gin (tsv)")
        await single.execute("ANALYZE docs")
    finally:
        await single.close()
    return time.perf_counter() - started


async def time_single(s: Settings, queries: list[str]) -> list[float]:
    cat = s.catalog_address()
    conn = await asyncpg.connect(s.dsn_for(cat.host, cat.port, "bench_search"))
    times = []
    try:
        for q in queries:
            t0 = time.perf_counter()
            await conn.fetch(SINGLE_SQL, q)
            times.append(time.perf_counter() - t0)
    finally:
        await conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5, help="times each query is sent")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.customers, args.rounds = 2_000, 1
    root, settings, stack = base.tuned_stack("nfs-")
    try:
        console.rule("starting a private stack")
        stack.up(RichReporter(console))
        url = settings.serve_url
        headers = {"Authorization": f"Bearer {base.admin_token(url)}"}
        console.rule(f"seeding {args.customers:,} customers and {args.customers // 5:,} tickets")
        seeded_s = asyncio.run(seed(settings, args.customers))
        with httpx.Client(base_url=url, timeout=600) as http:
            console.rule("rebuilding the search index (words and embeddings)")
            job, index_s = an.run_job(http, headers, "/v1/ai/search/reindex")
            indexed = int(job["result"]["indexed"]) if job.get("result") else 0
            console.print(f"  {job['status']}: {indexed:,} records in {index_s:.1f}s")
            time.sleep(settings.max_replica_lag_s + 2)
            # Lexical twice: with near words (prefixes, one typo: the default) and with
            # whole words only, to show what the near words cost in the same run.
            modes = {
                "mode=lexical": {"mode": "lexical"},
                "mode=lexical&near=false": {"mode": "lexical", "near": "false"},
                "mode=semantic": {"mode": "semantic"},
                "mode=hybrid": {"mode": "hybrid"},
            }
            timed: dict[str, list[float]] = {m: [] for m in modes}
            found: dict[str, int] = {m: 0 for m in modes}
            # The first semantic query reads every stored vector into the servers' vector
            # actors (ai/vectors.py): timed apart, as what the first search after a
            # restart costs.
            t0 = time.perf_counter()
            http.get("/v1/ai/search", headers=headers, params={"q": QUERIES[0], "mode": "semantic"})
            first_s = time.perf_counter() - t0
            for q in QUERIES[:2]:  # not counted: task workers start, caches fill
                for params in modes.values():
                    http.get("/v1/ai/search", headers=headers, params={"q": q, **params})
            for _ in range(args.rounds):
                for q in QUERIES:
                    for m, params in modes.items():
                        t0 = time.perf_counter()
                        r = http.get("/v1/ai/search", headers=headers, params={"q": q, **params})
                        timed[m].append(time.perf_counter() - t0)
                        r.raise_for_status()
                        found[m] += bool(r.json()["data"])
        asyncio.run(time_single(settings, QUERIES))
        single = asyncio.run(time_single(settings, QUERIES * args.rounds))
    finally:
        console.rule("stopping the stack")
        stack.down(RichReporter(console))
        shutil.rmtree(root, ignore_errors=True)
    s50, s99 = an.percentiles(single)
    rows = [f"| PostgreSQL full-text, one server, one table | {s50 * 1000:.1f} | {s99 * 1000:.1f} "
            "| 1.0x | |"]  # fmt: skip
    for m in timed:
        p50, p99 = an.percentiles(timed[m])
        rows.append(f"| GET /v1/ai/search?{m} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | "
                    f"{p50 / s50:.1f}x | {found[m]}/{len(timed[m])} |")  # fmt: skip
    total = indexed
    section = "\n".join([
        "## Search (`bench/search.py`)",
        "",
        f"{args.customers:,} customers and {args.customers // 5:,} tickets written straight "
        "into the shard servers, and the same texts into one table on one server with a GIN "
        "index on `to_tsvector('simple', ...)`. The index rebuilt by `POST /v1/ai/search/reindex` "
        f"(words and all-MiniLM-L6-v2 embeddings): **{total:,} records in {index_s:.0f} s = "
        f"{total / index_s:,.0f} records/s** (status {job['status']}). Then {len(QUERIES)} "
        f"queries x {args.rounds} rounds, one at a time, each mode in turn (lexical twice: "
        "with words a query word begins and words one typo away, the default, and with "
        "`near=false`, whole words only), against PostgreSQL's own `ts_rank` top 10 on the "
        "single server in the same run.",
        "",
        "| path | p50 ms | p99 ms | p50 vs one server | queries with hits |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "The single-server query is the floor, not an equal: it ranks one table with no "
        "scope, no hidden fields, no global statistics across shards and no HTTP. Search "
        "goes through the Gateway, the AIService, per shard server one Ray task (words) or "
        "a call to its vector actor (meaning), merged in the AIService; semantic also "
        "embeds the query in the model actor, and its vector actors bring their matrices "
        "up to date from `indexed_at` and check the candidates against their live records "
        "before answering. The first semantic query after a start, which reads every "
        f"stored vector into the actors, took {first_s:.1f} s (not in the table).",
        "",
        f"Seeding took {seeded_s:.0f} s. Machine: {an.machine()}",
    ])  # fmt: skip
    console.print(section)
    if not args.quick:
        an.write_doc(section, DOC_BEGIN, DOC_END)


if __name__ == "__main__":
    main()
