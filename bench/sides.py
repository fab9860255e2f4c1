"""Two sides of one question measured in the same run (bench/batch.py,
bench/unique_fields.py): wrk on each, round by round, alternating which goes first,
so both see the same machine; medians of the rounds, p99 the worst round's."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import get_customer as base

from cluster.cli import RichReporter
from cluster.procs import StackError, require_executable


@dataclass(frozen=True)
class Plan:
    duration_s: int
    rounds: int
    write_doc: bool


@dataclass(frozen=True)
class Run:
    side: str
    per_s: float  # what the side counts per second (calls x items per call)
    p50_ms: float
    p99_ms: float


def interleaved(
    sides: Sequence[tuple[base.Target, int]], connections: int, plan: Plan
) -> list[Run]:
    """Each (target, items per call) warmed up, then measured `plan.rounds` times."""
    runs: list[Run] = []
    with base._progress() as progress:
        for target, _ in sides:
            base.wrk(target, connections, 3, progress)  # warm-up: replicas, pools, plans
        for round_no in range(plan.rounds):
            order = sides if round_no % 2 == 0 else list(reversed(sides))
            for target, per_call in order:
                got = base.wrk(target, connections, plan.duration_s, progress)
                runs.append(Run(target.label, got.rps * per_call, got.p50_ms, got.p99_ms))
            time.sleep(2)  # let the relays and indexers drain between rounds
    return runs


def on_a_private_stack(
    prefix: str,
    measure: Callable[[str, str], list[Run]],
) -> tuple[list[Run], float]:
    """`measure(url, token)` on a throwaway tuned stack (bench/get_customer.py's),
    started and stopped here; its runs and the load average when it started."""
    require_executable("wrk", "install it: apt-get install wrk")
    root, settings, stack = base.tuned_stack(prefix)
    load_at_start = os.getloadavg()[0]
    try:
        base.console.rule("starting a private stack")
        stack.up(RichReporter(base.console))
        url = settings.serve_url
        return measure(url, base.admin_token(url)), load_at_start
    finally:
        base.console.rule("stopping the stack")
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


def publish(text: str, plan: Plan, begin: str, end: str) -> None:
    """Print a bench's section, and write it into docs/benchmarks.md on a full run."""
    base.console.print(text)
    if plan.write_doc:
        base.write_doc_section(begin, end, text)
        base.console.print(f"wrote {base.DOC}")


def footer(load_at_start: float, make_target: str, script: str) -> list[str]:
    """The machine and load lines and how to rerun, as every two-sided section ends."""
    return [
        f"Machine: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average (1 min) {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
        "at the end (other work shares the cores).",
        "",
        f"Rerun: `make {make_target}` (or `.venv/bin/python bench/{script}`; `--quick` for a "
        "smoke run that leaves this file alone).",
    ]


def median(runs: Sequence[Run], side: str) -> Run:
    mine = [r for r in runs if r.side == side]
    return Run(
        side,
        statistics.median(r.per_s for r in mine),
        statistics.median(r.p50_ms for r in mine),
        max(r.p99_ms for r in mine),
    )


def parse_args(description: str, argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short, docs untouched")
    args = parser.parse_args(argv)
    if args.quick:
        return Plan(duration_s=3, rounds=1, write_doc=False)
    return Plan(duration_s=args.duration, rounds=args.rounds, write_doc=True)


def main(run: Callable[[Plan], None], description: str, argv: Sequence[str] | None) -> int:
    try:
        run(parse_args(description, argv))
    except (StackError, base.BenchError) as exc:
        base.console.print(f"[red]error:[/] {exc}")
        return 1
    return 0
