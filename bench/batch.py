"""Benchmark: batch writes against single creates, in one run (issue 25).

Starts a throwaway stack on free ports (as bench/get_customer.py does) and loads it
with wrk, the two sides interleaved round by round (alternating which goes first) so
both see the same machine:

- `POST /v1/customers/batch` with 100 creates per call (one transaction per logical
  shard, each item in a savepoint), each call with its own `Idempotency-Key` (so every
  item is kept with its effect, as a retrying client's would be);
- `POST /v1/customers`, one create per call, each with its own `Idempotency-Key`.

Reported: customers written per second on each side (a batch call's rate x 100), the
ratio, and each side's p50/p99 per call.

    .venv/bin/python bench/batch.py            # full run, rewrites its docs/benchmarks.md section
    .venv/bin/python bench/batch.py --quick    # smoke run, docs untouched
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)

from cluster.cli import RichReporter  # noqa: E402
from cluster.procs import StackError, require_executable  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/batch.py: generated, rerun `make bench-batch` to update -->"
DOC_END = "<!-- END bench/batch.py -->"
CONNECTIONS = 8
BATCH = 100
console = base.console


@dataclass(frozen=True)
class Plan:
    duration_s: int
    rounds: int
    write_doc: bool


@dataclass(frozen=True)
class Run:
    side: str
    items_per_s: float
    p50_ms: float
    p99_ms: float


def _targets(url: str, auth: str) -> tuple[base.Target, base.Target]:
    one = {"name": "Bench single", "tags": ["bench"], "industry": "retail"}
    batch = {"items": [{"op": "create", "data": {**one, "name": f"Bench batch {i}"}}
                       for i in range(BATCH)]}  # fmt: skip
    return (
        base.Target(
            f"POST /v1/customers/batch ({BATCH} creates)",
            f"{url}/v1/customers/batch",
            (auth,),
            body=orjson.dumps(batch).decode(),
            keyed=True,
        ),  # fmt: skip
        base.Target(
            "POST /v1/customers",
            f"{url}/v1/customers",
            (auth,),
            body=orjson.dumps(one).decode(),
            keyed=True,
        ),  # fmt: skip
    )


def run(plan: Plan) -> None:
    require_executable("wrk", "install it: apt-get install wrk")
    root, settings, stack = base.tuned_stack("nfbb-")
    load_at_start = os.getloadavg()[0]
    runs: list[Run] = []
    try:
        console.rule("starting a private stack")
        stack.up(RichReporter(console))
        url = settings.serve_url
        auth = f"Authorization: Bearer {base.admin_token(url)}"
        batch, single = _targets(url, auth)
        with base._progress() as progress:
            base.wrk(batch, CONNECTIONS, 3, progress)  # warm-up: replicas, pools, plans
            base.wrk(single, CONNECTIONS, 3, progress)
            for round_no in range(plan.rounds):
                order = (batch, single) if round_no % 2 == 0 else (single, batch)
                for target in order:
                    got = base.wrk(target, CONNECTIONS, plan.duration_s, progress)
                    per_call = BATCH if target is batch else 1
                    runs.append(Run(target.label, got.rps * per_call, got.p50_ms, got.p99_ms))
                time.sleep(2)  # let the relays and indexers drain between rounds
    finally:
        console.rule("stopping the stack")
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    text = _markdown(runs, _median(runs, batch.label), _median(runs, single.label), plan,
                     load_at_start)  # fmt: skip
    console.print(text)
    if plan.write_doc:
        base.write_doc_section(DOC_BEGIN, DOC_END, text)
        console.print(f"wrote {base.DOC}")


def _median(runs: Sequence[Run], side: str) -> Run:
    mine = [r for r in runs if r.side == side]
    return Run(
        side,
        statistics.median(r.items_per_s for r in mine),
        statistics.median(r.p50_ms for r in mine),
        max(r.p99_ms for r in mine),
    )


def _markdown(
    runs: Sequence[Run], batch: Run, single: Run, plan: Plan, load_at_start: float
) -> str:
    ratio = batch.items_per_s / single.items_per_s
    lines = [
        DOC_BEGIN,
        "## Batch writes: `POST /v1/customers/batch` against single creates",
        "",
        f"{CONNECTIONS} connections, {plan.rounds} rounds of {plan.duration_s} s per side, "
        "interleaved (alternating which side goes first); every call with its own "
        "`Idempotency-Key` (a batch keeps each item's, `<key>#<i>`, in its shard "
        "transaction). Medians of the rounds; p99 the worst round's.",
        "",
        "| side | customers/s | p50 ms per call | p99 ms per call | vs single |",
        "|---|--:|--:|--:|--:|",
        f"| {batch.side} | {batch.items_per_s:,.0f} | {batch.p50_ms:.1f} | "
        f"{batch.p99_ms:.1f} | {ratio:.2f}x |",
        f"| {single.side} | {single.items_per_s:,.0f} | {single.p50_ms:.1f} | "
        f"{single.p99_ms:.1f} | |",
        "",
        "Each round, customers/s: "
        + "; ".join(f"{r.side.split(' (')[0]} {r.items_per_s:,.0f}" for r in runs),
        "",
        f"Machine: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average (1 min) {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
        "at the end (other work shares the cores).",
        "",
        "Rerun: `make bench-batch` (or `.venv/bin/python bench/batch.py`; `--quick` for a "
        "smoke run that leaves this file alone).",
        DOC_END,
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short, docs untouched")
    args = parser.parse_args(argv)
    if args.quick:
        return Plan(duration_s=3, rounds=1, write_doc=False)
    return Plan(duration_s=args.duration, rounds=args.rounds, write_doc=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except (StackError, base.BenchError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
