"""Benchmark: the domain services' hot paths against the foundation's, in one run.

Starts a throwaway stack on free ports (as bench/get_customer.py does), seeds
customers and tickets over the API, then loads with wrk, each pair interleaved so
both sides see the same machine:

- `POST /v1/sales/deals` (checks the customer through CustomerService, reads the cached
  pipeline, writes the deal + its stage history + its change history on the
  customer's shard) against the foundation's `POST /v1/customers`;
- `GET /v1/support/tickets?limit=50` and
  `GET /v1/support/tickets?status=assigned&limit=50` (cursor pages
  merged across every shard server) against `GET /v1/customers?limit=50`.

The ratio is what the extra work costs; absolute req/s depend on the (shared, noisy)
machine, so the report gives p50/p99 and ratios, not single times.

    .venv/bin/python bench/domain.py            # full run, rewrites its docs/benchmarks.md section
    .venv/bin/python bench/domain.py --quick    # smoke run, docs untouched
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)

from cluster.cli import RichReporter  # noqa: E402
from cluster.procs import StackError, require_executable  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/domain.py: generated, rerun `make bench-domain` to update -->"
DOC_END = "<!-- END bench/domain.py -->"
CONNECTIONS = 32
console = base.console


@dataclass(frozen=True)
class Plan:
    duration_s: int
    customers: int
    tickets: int
    rounds: int
    write_doc: bool


@dataclass(frozen=True)
class Row:
    pair: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    baseline: str | None = None
    baseline_rps: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.baseline_rps is None else self.rps / self.baseline_rps


async def _seed(base_url: str, token: str, plan: Plan) -> tuple[list[int], int]:
    """Customers, then tickets spread over them, through the API."""
    customers = await base.seed_customers(base_url, token, plan.customers)
    gate = asyncio.Semaphore(base.SEED_CONCURRENCY)
    headers = {"Authorization": f"Bearer {token}"}
    with base._progress() as progress:
        task = progress.add_task("creating tickets", total=plan.tickets)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:

            async def create(n: int) -> None:
                body = {
                    "customer_id": str(customers[n % len(customers)]),
                    "subject": f"Bench ticket {n}",
                    "description": "Printer on fire",
                    "priority": ("low", "normal", "high", "urgent")[n % 4],
                }
                async with gate:
                    response = await client.post("/v1/support/tickets", json=body)
                if response.status_code != 201:
                    raise base.BenchError(f"POST /v1/support/tickets: HTTP {response.status_code}")
                progress.advance(task)

            await asyncio.gather(*(create(n) for n in range(plan.tickets)))
    return customers, plan.tickets


def _pairs(url: str, auth: str, customer_id: int) -> list[tuple[str, base.Target, base.Target]]:
    headers = (auth,)
    deal = orjson.dumps(
        {
            "customer_id": str(customer_id),
            "name": "Bench deal",
            "amount": {"amount": "1200.00", "currency": "EUR"},
        }
    ).decode()
    customer = orjson.dumps({"name": "Bench write", "tags": ["bench"]}).decode()
    return [
        (
            "create",
            base.Target("POST /v1/sales/deals", f"{url}/v1/sales/deals", headers, body=deal),
            base.Target("POST /v1/customers", f"{url}/v1/customers", headers, body=customer),
        ),
        (
            "list",
            base.Target(
                "GET /v1/support/tickets?limit=50", f"{url}/v1/support/tickets?limit=50", headers
            ),
            base.Target("GET /v1/customers?limit=50", f"{url}/v1/customers?limit=50", headers),
        ),
        (
            "list (filtered)",
            base.Target(
                "GET /v1/support/tickets?status=new&limit=50",
                f"{url}/v1/support/tickets?status=new&limit=50",
                headers,
            ),
            base.Target("GET /v1/customers?limit=50", f"{url}/v1/customers?limit=50", headers),
        ),
    ]


def _check(target: base.Target) -> None:
    """One request of the target answers 2xx (the ingress may take a moment)."""
    headers = dict(h.split(": ", 1) for h in target.headers)
    if target.body is None:
        base.wait_for_200(target, 60)
        return
    headers["Content-Type"] = "application/json"
    response = httpx.post(target.url, headers=headers, content=target.body.encode(), timeout=30)
    if response.status_code >= 300:
        raise base.BenchError(f"{target.label}: HTTP {response.status_code}: {response.text}")


def run(plan: Plan) -> None:
    require_executable("wrk", "install it: apt-get install wrk")
    root, settings, stack = base.tuned_stack("nfb-")
    load_at_start = os.getloadavg()[0]
    rows: list[Row] = []
    try:
        console.rule("starting a private stack")
        stack.up(RichReporter(console))
        url = settings.serve_url
        token = base.admin_token(url)
        customers, _ = asyncio.run(_seed(url, token, plan))
        auth = f"Authorization: Bearer {token}"
        pairs = _pairs(url, auth, customers[0])
        for _, target, baseline in pairs:
            _check(baseline)
            _check(target)
        with base._progress() as progress:
            for round_no in range(plan.rounds):
                for pair, target, baseline in pairs:
                    # Alternate which side goes first, so drift hits both alike.
                    first, second = (target, baseline) if round_no % 2 == 0 else (baseline, target)
                    got = {
                        t.label: base.wrk(t, CONNECTIONS, plan.duration_s, progress)
                        for t in (first, second)
                    }
                    mine, theirs = got[target.label], got[baseline.label]
                    rows.append(
                        Row(
                            pair,
                            target.label,
                            mine.rps,
                            mine.p50_ms,
                            mine.p99_ms,
                            baseline.label,
                            theirs.rps,
                        )  # fmt: skip
                    )
                    rows.append(Row(pair, baseline.label, theirs.rps, theirs.p50_ms, theirs.p99_ms))
    finally:
        console.rule("stopping the stack")
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    summary = _summarise(rows)
    console.print(_table(summary))
    if plan.write_doc:
        base.write_doc_section(DOC_BEGIN, DOC_END, _markdown(summary, plan, load_at_start))
        console.print(f"wrote {base.DOC}")


def _summarise(rows: list[Row]) -> list[Row]:
    """Median of the rounds per target (and of its paired baseline)."""
    out: list[Row] = []
    seen: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        seen.setdefault((row.pair, row.target), []).append(row)
    for (pair, target), group in seen.items():
        with_base = [r for r in group if r.baseline_rps is not None]
        out.append(
            Row(
                pair,
                target,
                statistics.median(r.rps for r in group),
                statistics.median(r.p50_ms for r in group),
                statistics.median(r.p99_ms for r in group),
                group[0].baseline,
                statistics.median(r.baseline_rps for r in with_base)  # type: ignore[misc]
                if with_base
                else None,
            )
        )
    return out


_COLUMNS = ("pair", "target", "req/s", "p50 ms", "p99 ms", "vs baseline")


def _cells(row: Row) -> list[str]:
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}x {row.baseline}"
    return [
        row.pair,
        row.target,
        f"{row.rps:,.0f}",
        f"{row.p50_ms:.1f}",
        f"{row.p99_ms:.1f}",
        ratio,
    ]


def _table(rows: Sequence[Row]) -> Table:
    table = Table(title=f"domain services vs the foundation, {CONNECTIONS} connections")
    for name in _COLUMNS:
        table.add_column(name)
    for row in rows:
        table.add_row(*_cells(row))
    return table


def _markdown(rows: Sequence[Row], plan: Plan, load_at_start: float) -> str:
    lines = [
        DOC_BEGIN,
        "## Domain services: creating deals, listing tickets (`bench/domain.py`)",
        "",
        f"Full stack (HAProxy ingress, throughput-optimized Serve, 2 shard servers with "
        f"replicas), {plan.customers} customers and {plan.tickets} tickets seeded through "
        f"the API, wrk at {CONNECTIONS} connections, {plan.duration_s} s per run, "
        f"{plan.rounds} rounds with the order of each pair alternated; medians of the "
        "rounds. `vs baseline` divides the median req/s by the median req/s of the "
        "foundation's endpoint, measured right next to it in every round.",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
        *("| " + " | ".join(_cells(row)) + " |" for row in rows),
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in base.machine(load_at_start).items()),
        DOC_END,
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="short smoke run; docs untouched")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--tickets", type=int, default=3000)
    args = parser.parse_args(argv)
    if args.quick:
        return Plan(duration_s=3, customers=50, tickets=100, rounds=1, write_doc=False)
    return Plan(args.duration, args.customers, args.tickets, args.rounds, write_doc=True)


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    began = time.monotonic()
    try:
        run(plan)
    except (base.BenchError, StackError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    console.print(f"done in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
