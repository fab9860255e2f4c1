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

import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)
import sides  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/batch.py: generated, rerun `make bench-batch` to update -->"
DOC_END = "<!-- END bench/batch.py -->"
CONNECTIONS = 8
BATCH = 100


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


def run(plan: sides.Plan) -> None:
    targets: list[base.Target] = []

    def measure(url: str, token: str) -> list[sides.Run]:
        targets.extend(_targets(url, f"Authorization: Bearer {token}"))
        batch, single = targets
        return sides.interleaved([(batch, BATCH), (single, 1)], CONNECTIONS, plan)

    runs, load_at_start = sides.on_a_private_stack("nfbb-", measure)
    batch, single = (sides.median(runs, t.label) for t in targets)
    text = _markdown(runs, batch, single, plan, load_at_start)
    sides.publish(text, plan, DOC_BEGIN, DOC_END)


def _markdown(
    runs: Sequence[sides.Run],
    batch: sides.Run,
    single: sides.Run,
    plan: sides.Plan,
    load_at_start: float,
) -> str:
    ratio = batch.per_s / single.per_s
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
        f"| {batch.side} | {batch.per_s:,.0f} | {batch.p50_ms:.1f} | "
        f"{batch.p99_ms:.1f} | {ratio:.2f}x |",
        f"| {single.side} | {single.per_s:,.0f} | {single.p50_ms:.1f} | {single.p99_ms:.1f} | |",
        "",
        "Each round, customers/s: "
        + "; ".join(f"{r.side.split(' (')[0]} {r.per_s:,.0f}" for r in runs),
        "",
        *sides.footer(load_at_start, "bench-batch", "batch.py"),
        DOC_END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(sides.main(run, __doc__.splitlines()[0], None))
