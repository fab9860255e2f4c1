"""Benchmark: what looking for likely duplicates costs a create, in one run (issue 26).

`POST /v1/customers` looks up the new customer's match keys (normalised e-mail, phone,
name) on every server unless told not to (deployments/customer/duplicates/): with
`?duplicates=warn` (the default) the lookup runs beside the write, with `reject` before
it, with `ignore` not at all. On a throwaway stack (as bench/get_customer.py starts
one), wrk sends creates with a name and e-mail no other request has (`@N@` in
the body, each request's own `Idempotency-Key`), the three sides interleaved round by
round (alternating which goes first).

    .venv/bin/python bench/duplicates.py          # full run, rewrites its docs section
    .venv/bin/python bench/duplicates.py --quick  # smoke run, docs untouched
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)
import sides  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/duplicates.py: generated, rerun `make bench-duplicates` to update -->"
DOC_END = "<!-- END bench/duplicates.py -->"
CONNECTIONS = 8
MODES = ("ignore", "warn", "reject")


def _targets(url: str, auth: str) -> list[base.Target]:
    body = orjson.dumps({"name": "Bench @N@ Ltd", "email": "buyer.@N@@example.com"}).decode()
    return [
        base.Target(f"POST /v1/customers?duplicates={mode}",
                    f"{url}/v1/customers?duplicates={mode}", (auth,), body=body, keyed=True)
        for mode in MODES
    ]  # fmt: skip


def run(plan: sides.Plan) -> None:
    targets: list[base.Target] = []

    def measure(url: str, token: str) -> list[sides.Run]:
        targets.extend(_targets(url, f"Authorization: Bearer {token}"))
        return sides.interleaved([(t, 1) for t in targets], CONNECTIONS, plan)

    runs, load_at_start = sides.on_a_private_stack("nfbd-", measure)
    medians = [sides.median(runs, t.label) for t in targets]
    sides.publish(_markdown(runs, medians, plan, load_at_start), plan, DOC_BEGIN, DOC_END)


def _markdown(
    runs: Sequence[sides.Run], medians: Sequence[sides.Run], plan: sides.Plan, load: float
) -> str:
    ignore = medians[0]
    lines = [
        DOC_BEGIN,
        "## Likely duplicates: what the lookup costs a create",
        "",
        f"{CONNECTIONS} connections, {plan.rounds} rounds of {plan.duration_s} s per side, "
        "interleaved (alternating which side goes first); every create with its own "
        "`Idempotency-Key` and a name and e-mail no other create has (so the "
        "lookup finds nothing to check). Medians of the rounds; p99 the worst round's.",
        "",
        "| side | creates/s | p50 ms | p99 ms | vs ignore |",
        "|---|--:|--:|--:|--:|",
        *(
            f"| {m.side} | {m.per_s:,.0f} | {m.p50_ms:.1f} | {m.p99_ms:.1f} | "
            f"{m.per_s / ignore.per_s:.2f}x |"
            for m in medians
        ),
        "",
        "Each round, creates/s: " + "; ".join(f"{r.side} {r.per_s:,.0f}" for r in runs),
        "",
        *sides.footer(load, "bench-duplicates", "duplicates.py"),
        DOC_END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(sides.main(run, __doc__.splitlines()[0], None))
