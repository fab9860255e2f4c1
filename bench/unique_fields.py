"""Benchmark: creating customers with a unique custom field against a plain one, in
one run (issue 25).

A unique field's value is claimed in the auth database before the customer is written
and kept after (two more calls on the write path: deployments/_kit/unique_values.py).
This measures what that costs: on a throwaway stack (as bench/get_customer.py starts
one), two text fields are defined on customers, one unique, and wrk sends
`POST /v1/customers` with a value no other request has (`@N@` in the body, each
request's own `Idempotency-Key`), to the plain field on one side and to the unique
field on the other, interleaved round by round (alternating which goes first).

    .venv/bin/python bench/unique_fields.py          # full run, rewrites its docs section
    .venv/bin/python bench/unique_fields.py --quick  # smoke run, docs untouched
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

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)

from cluster.cli import RichReporter  # noqa: E402
from cluster.procs import StackError, require_executable  # noqa: E402

DOC_BEGIN = (
    "<!-- BEGIN bench/unique_fields.py: generated, rerun `make bench-unique-fields` to update -->"
)
DOC_END = "<!-- END bench/unique_fields.py -->"
CONNECTIONS = 8
console = base.console


@dataclass(frozen=True)
class Plan:
    duration_s: int
    rounds: int
    write_doc: bool


@dataclass(frozen=True)
class Run:
    side: str
    rps: float
    p50_ms: float
    p99_ms: float


def _define(url: str, token: str) -> None:
    """The two fields, then wait until the customer ingress takes both (a 5 s cache)."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        for key, unique in (("ref_plain", False), ("ref_unique", True)):
            made = http.post("/v1/auth/fields", json={
                "object": "customers", "key": key, "label": key, "type": "text",
                "unique": unique})  # fmt: skip
            if made.status_code != 201:
                raise base.BenchError(f"defining {key}: {made.status_code} {made.text}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = {"name": "probe", "custom_fields": {"ref_plain": "p", "ref_unique": "p"}}
            if http.post("/v1/customers", json=probe).status_code == 201:
                return
            time.sleep(0.5)
    raise base.BenchError("the custom fields never reached the customer ingress")


def _targets(url: str, auth: str) -> tuple[base.Target, base.Target]:
    def body(key: str) -> str:
        return orjson.dumps({"name": "Bench @N@", "custom_fields": {key: "REF-@N@"}}).decode()

    return (
        base.Target("POST /v1/customers, unique field", f"{url}/v1/customers", (auth,),
                    body=body("ref_unique"), keyed=True),
        base.Target("POST /v1/customers, plain field", f"{url}/v1/customers", (auth,),
                    body=body("ref_plain"), keyed=True),
    )  # fmt: skip


def run(plan: Plan) -> None:
    require_executable("wrk", "install it: apt-get install wrk")
    root, settings, stack = base.tuned_stack("nfbu-")
    load_at_start = os.getloadavg()[0]
    runs: list[Run] = []
    try:
        console.rule("starting a private stack")
        stack.up(RichReporter(console))
        url = settings.serve_url
        token = base.admin_token(url)
        _define(url, token)
        unique, plain = _targets(url, f"Authorization: Bearer {token}")
        with base._progress() as progress:
            base.wrk(unique, CONNECTIONS, 3, progress)  # warm-up: replicas, pools, plans
            base.wrk(plain, CONNECTIONS, 3, progress)
            for round_no in range(plan.rounds):
                order = (unique, plain) if round_no % 2 == 0 else (plain, unique)
                for target in order:
                    got = base.wrk(target, CONNECTIONS, plan.duration_s, progress)
                    runs.append(Run(target.label, got.rps, got.p50_ms, got.p99_ms))
                time.sleep(2)  # let the relays and indexers drain between rounds
    finally:
        console.rule("stopping the stack")
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    text = _markdown(runs, _median(runs, unique.label), _median(runs, plain.label), plan,
                     load_at_start)  # fmt: skip
    console.print(text)
    if plan.write_doc:
        base.write_doc_section(DOC_BEGIN, DOC_END, text)
        console.print(f"wrote {base.DOC}")


def _median(runs: Sequence[Run], side: str) -> Run:
    mine = [r for r in runs if r.side == side]
    return Run(
        side,
        statistics.median(r.rps for r in mine),
        statistics.median(r.p50_ms for r in mine),
        max(r.p99_ms for r in mine),
    )


def _markdown(
    runs: Sequence[Run], unique: Run, plain: Run, plan: Plan, load_at_start: float
) -> str:
    lines = [
        DOC_BEGIN,
        "## Unique custom fields: creates with a unique value against a plain one",
        "",
        f"{CONNECTIONS} connections, {plan.rounds} rounds of {plan.duration_s} s per side, "
        "interleaved (alternating which side goes first); every create with its own "
        "`Idempotency-Key` and a value no other create has. Medians of the rounds; p99 "
        "the worst round's.",
        "",
        "| side | creates/s | p50 ms | p99 ms | vs plain |",
        "|---|--:|--:|--:|--:|",
        f"| {unique.side} | {unique.rps:,.0f} | {unique.p50_ms:.1f} | {unique.p99_ms:.1f} | "
        f"{unique.rps / plain.rps:.2f}x |",
        f"| {plain.side} | {plain.rps:,.0f} | {plain.p50_ms:.1f} | {plain.p99_ms:.1f} | |",
        "",
        "Each round, creates/s: " + "; ".join(f"{r.side} {r.rps:,.0f}" for r in runs),
        "",
        f"Machine: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average (1 min) {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
        "at the end (other work shares the cores).",
        "",
        "Rerun: `make bench-unique-fields` (or `.venv/bin/python bench/unique_fields.py`; "
        "`--quick` for a smoke run that leaves this file alone).",
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
