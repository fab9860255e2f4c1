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

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)
import sides  # noqa: E402

DOC_BEGIN = (
    "<!-- BEGIN bench/unique_fields.py: generated, rerun `make bench-unique-fields` to update -->"
)
DOC_END = "<!-- END bench/unique_fields.py -->"
CONNECTIONS = 8


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


def run(plan: sides.Plan) -> None:
    targets: list[base.Target] = []

    def measure(url: str, token: str) -> list[sides.Run]:
        _define(url, token)
        targets.extend(_targets(url, f"Authorization: Bearer {token}"))
        return sides.interleaved([(t, 1) for t in targets], CONNECTIONS, plan)

    runs, load_at_start = sides.on_a_private_stack("nfbu-", measure)
    unique, plain = (sides.median(runs, t.label) for t in targets)
    text = _markdown(runs, unique, plain, plan, load_at_start)
    sides.publish(text, plan, DOC_BEGIN, DOC_END)


def _markdown(
    runs: Sequence[sides.Run],
    unique: sides.Run,
    plain: sides.Run,
    plan: sides.Plan,
    load_at_start: float,
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
        f"| {unique.side} | {unique.per_s:,.0f} | {unique.p50_ms:.1f} | {unique.p99_ms:.1f} | "
        f"{unique.per_s / plain.per_s:.2f}x |",
        f"| {plain.side} | {plain.per_s:,.0f} | {plain.p50_ms:.1f} | {plain.p99_ms:.1f} | |",
        "",
        "Each round, creates/s: " + "; ".join(f"{r.side} {r.per_s:,.0f}" for r in runs),
        "",
        *sides.footer(load_at_start, "bench-unique-fields", "unique_fields.py"),
        DOC_END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(sides.main(run, __doc__.splitlines()[0], None))
