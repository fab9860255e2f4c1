"""Benchmark: a customer's timeline (`GET /v1/customers/{id}/timeline`) for a customer
with 10,000 entries, against the customer's own activity list (one source, one shard)
and the customer itself, in the same run.

Starts a throwaway stack on free ports (as bench/get_customer.py does), makes one
customer through the API, then writes its history straight into its shard server:
activities (notes, tasks, calls, meetings, e-mails), field changes, deals with stage
moves, tickets with comments, spread over a year. Then, one request at a time, each
in turn for some rounds: the timeline's first page, a page 40 pages deep (by its
cursor), a page of two kinds; the customer's activity list; the customer. p50/p99.

    .venv/bin/python bench/timeline.py                 # 10,000 entries; rewrites docs
    .venv/bin/python bench/timeline.py --quick         # smoke run, docs untouched
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analytics as an  # noqa: E402  (bench/ is scripts, not a package)
import get_customer as base  # noqa: E402

from cluster.cli import RichReporter  # noqa: E402
from cluster.settings import Settings  # noqa: E402
from shards import ids  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/timeline.py: generated, rerun `make bench-timeline` to update -->"
DOC_END = "<!-- END bench/timeline.py -->"
console = base.console
# Of every 10 entries: 4 activities, 2 field changes, 1 deal, 1 stage move, 1 ticket,
# 1 comment.
SHARES = {"activities": 4, "changes": 2, "deals": 1, "stage moves": 1, "tickets": 1,
          "comments": 1}  # fmt: skip


async def seed(
    s: Settings, customer_id: int, owner_id: int, pipeline: dict[str, Any], entries: int
) -> dict[str, int]:
    """`entries` timeline entries of one customer on its shard server; how many of each."""
    servers, owned, _ = await an._layout(s)
    shard = ids.shard_of(customer_id)
    server = next(name for name, shards in owned.items() if shard in shards)
    host, port = servers[server]
    n = {k: entries * share // 10 for k, share in SHARES.items()}
    stages = [int(st["id"]) for st in pipeline["stages"] if st["kind"] == "open"]
    when = "now() - (i * interval '47 minutes')"  # a year and more, newest first
    conn = await asyncpg.connect(s.dsn_for(host, port, "customer"))
    try:
        await conn.execute(
            f"""INSERT INTO activities (id, kind, customer_id, subject, owner_id, created_at)
                SELECT nextflow_id($1), (ARRAY['note','task','call','meeting','email'])[1 + i % 5],
                       $2, 'Activity ' || i, $3, {when}
                FROM generate_series(1, $4::int) AS i""",
            shard, customer_id, owner_id, n["activities"],
        )  # fmt: skip
        await conn.execute(
            f"""INSERT INTO record_changes (id, record_type, record_id, action, changes,
                                            actor_id, created_at)
                SELECT nextflow_id($1), 'customer', $2, 'updated',
                       jsonb_build_object('industry', jsonb_build_array('a' || i, 'b' || i)),
                       $3, {when} - interval '5 minutes'
                FROM generate_series(1, $4::int) AS i""",
            shard, customer_id, owner_id, n["changes"],
        )  # fmt: skip
        await conn.execute("ANALYZE activities; ANALYZE record_changes")
    finally:
        await conn.close()
    conn = await asyncpg.connect(s.dsn_for(host, port, "sales"))
    try:
        await conn.execute(
            f"""INSERT INTO deals (id, customer_id, name, amount, currency, pipeline_id,
                                   stage_id, probability, owner_id, created_at)
                SELECT nextflow_id($1), $2, 'Deal ' || i, 1000 + i, 'EUR', $3,
                       ($4::bigint[])[1], 10, $5, {when} - interval '10 minutes'
                FROM generate_series(1, $6::int) AS i""",
            shard, customer_id, int(pipeline["id"]), stages, owner_id, n["deals"],
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO deal_stage_changes (id, deal_id, from_pipeline_id, from_stage_id,
                   to_pipeline_id, to_stage_id, probability, status, changed_by, changed_at)
               SELECT nextflow_id($1), d.id, $2, ($3::bigint[])[1], $2, ($3::bigint[])[2], 25,
                      'open', $4, d.created_at + interval '20 minutes'
               FROM deals d WHERE d.customer_id = $5 LIMIT $6""",
            shard, int(pipeline["id"]), stages, owner_id, customer_id, n["stage moves"],
        )  # fmt: skip
        await conn.execute("ANALYZE deals; ANALYZE deal_stage_changes")
    finally:
        await conn.close()
    conn = await asyncpg.connect(s.dsn_for(host, port, "support"))
    try:
        await conn.execute(
            f"""INSERT INTO tickets (id, customer_id, subject, priority, requester_id,
                                     first_response_due_at, resolution_due_at, created_at)
                SELECT nextflow_id($1), $2, 'Ticket ' || i, 'normal', $3,
                       now() + interval '1 day', now() + interval '3 days',
                       {when} - interval '15 minutes'
                FROM generate_series(1, $4::int) AS i""",
            shard, customer_id, owner_id, n["tickets"],
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO ticket_comments (id, ticket_id, author_id, body, public, created_at)
               SELECT nextflow_id($1), t.id, $2, 'A reply to ' || t.subject, true,
                      t.created_at + interval '30 minutes'
               FROM tickets t WHERE t.customer_id = $3 LIMIT $4""",
            shard, owner_id, customer_id, n["comments"],
        )  # fmt: skip
        await conn.execute("ANALYZE tickets; ANALYZE ticket_comments")
    finally:
        await conn.close()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.rounds = 1_000, 3
    root, settings, stack = base.tuned_stack("nftl-")
    try:
        console.rule("starting a private stack")
        stack.up(RichReporter(console))
        url = settings.serve_url
        headers = {"Authorization": f"Bearer {base.admin_token(url)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            me = http.get("/v1/auth/me").json()
            made = http.post("/v1/customers", json={"name": "Timeline Co"})
            made.raise_for_status()
            cid = int(made.json()["id"])
            pipeline = http.get("/v1/sales/pipelines").json()["data"][0]
            console.rule(f"writing {args.entries:,} timeline entries")
            seeded_at = time.perf_counter()
            counts = asyncio.run(seed(settings, cid, int(me["id"]), pipeline, args.entries))
            seeded_s = time.perf_counter() - seeded_at
            time.sleep(settings.max_replica_lag_s + 1)
            timeline = f"/v1/customers/{cid}/timeline"
            cursor = None
            for _ in range(40):  # a cursor 40 pages deep
                page = http.get(timeline, params={"limit": 50, **({"cursor": cursor} if cursor
                                                                   else {})}).json()  # fmt: skip
                cursor = page["next_cursor"]
            total = sum(counts.values())
            queries: dict[str, tuple[str, dict[str, Any]]] = {
                "timeline, first page": (timeline, {"limit": 50}),
                "timeline, page 41 (by cursor)": (timeline, {"limit": 50, "cursor": cursor}),
                "timeline, kind[in]=call,deal_stage": (
                    timeline, {"limit": 50, "kind[in]": "call,deal_stage"}),
                "activities of the customer (one source)": (
                    f"/v1/customers/{cid}/activities", {"limit": 50}),
                "the customer": (f"/v1/customers/{cid}", {}),
            }  # fmt: skip
            times: dict[str, list[float]] = {q: [] for q in queries}
            sizes: dict[str, int] = {}
            console.rule(f"{len(queries)} requests x {args.rounds} rounds")
            for counted in (False, *([True] * args.rounds)):
                for label, (path, params) in queries.items():
                    t0 = time.perf_counter()
                    r = http.get(path, params=params)
                    spent = time.perf_counter() - t0
                    r.raise_for_status()
                    sizes[label] = len(r.json().get("data", [r.json()]))
                    if counted:
                        times[label].append(spent)
    finally:
        console.rule("stopping the stack")
        stack.down(RichReporter(console))
        shutil.rmtree(root, ignore_errors=True)
    floor = an.percentiles(times["activities of the customer (one source)"])[0]
    rows = []
    for label, spent in times.items():
        p50, p99 = an.percentiles(spent)
        rows.append(f"| {label} | {sizes[label]} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | "
                    f"{p50 / floor:.2f}x |")  # fmt: skip
    mix = ", ".join(f"{v:,} {k}" for k, v in counts.items())
    section = "\n".join([
        "## A customer's timeline (`bench/timeline.py`)",
        "",
        f"One customer with {total:,} timeline entries ({mix}), written straight into its "
        f"shard server in {seeded_s:.1f} s, spread over a year. Then each request in turn, "
        f"one at a time, {args.rounds} rounds, through HAProxy and the customer ingress; "
        "a timeline page reads the customer database (activities and changes, one "
        "ShardManager call) and asks the sales, support and file applications through "
        "their deployment handles at once, each for at most 51 items after the cursor, "
        "and merges them. `vs activities` divides by the customer's activity list (one "
        "source, one ShardManager call) in the same run.",
        "",
        "| request | items | p50 ms | p99 ms | vs activities |",
        "|---|--:|--:|--:|--:|",
        *rows,
        "",
        "A page costs the same however deep its cursor (each source reads from its "
        "index at the cursor's position); the timeline's price over one source is the "
        "three handle calls made at once.",
        "",
        f"Machine: {an.machine()}",
        "",
        "Rerun: `make bench-timeline` (or `.venv/bin/python bench/timeline.py`; `--quick` "
        "for a smoke run that leaves this file alone).",
    ])  # fmt: skip
    console.print(section)
    if not args.quick:
        an.write_doc(section, DOC_BEGIN, DOC_END)


if __name__ == "__main__":
    main()
