"""BM25 scatter-gather (deployments/ai/search.py) and the report reducers, without Ray:
shard partials merged with global statistics rank like one index over all records."""

from __future__ import annotations

import random
from decimal import Decimal

from deployments.ai import search
from deployments.analytics import reports

CUSTOMERS = [
    ("customer", 1, {"name": "Acme Rocket Works", "industry": "aerospace", "tags": ["rockets"]}),
    ("customer", 2, {"name": "Bakery Blue", "industry": "food", "tags": []}),
    ("customer", 3, {"name": "Rocket Bakery", "industry": "food", "tags": ["cakes"]}),
]
TICKETS = [
    ("ticket", 4, {"subject": "Printer on fire", "description": "smoke from the printer"}),
    ("ticket", 5, {"subject": "Invoice question", "description": "rocket invoice is wrong"}),
]


def test_tokens_fold_case_accents_and_addresses() -> None:
    assert search.tokens("Müller-Lüdenscheidt <Jo.Doe@Example.COM>") == [
        "muller", "ludenscheidt", "jo", "doe", "example", "com",
    ]  # fmt: skip


def test_sharded_merge_ranks_like_a_single_index() -> None:
    records = CUSTOMERS + TICKETS
    rng = random.Random(3)
    for _ in range(20):
        shards: list[list[tuple[str, int, dict[str, object]]]] = [[], [], []]
        for r in records:
            shards[rng.randrange(3)].append(r)
        for query in ("rocket", "printer fire", "bakery rocket", "invoice"):
            one = search.merge([search.shard_candidates(query, records, 10)], 10)
            many = search.merge([search.shard_candidates(query, s, 10) for s in shards], 10)
            assert one == many, query


def test_the_obvious_match_comes_first() -> None:
    found = search.merge([search.shard_candidates("printer on fire", CUSTOMERS + TICKETS, 3)], 3)
    assert found[0]["id"] == "4" and found[0]["type"] == "ticket"
    assert search.merge([search.shard_candidates("zebra", CUSTOMERS, 3)], 3) == []


def test_pipeline_reduce_is_exact() -> None:
    part = [{"pipeline_id": 1, "stage_id": 2, "currency": "EUR", "deals": 1,
             "amount": Decimal("0.1000"), "weighted_x100": Decimal("2.5000")}]  # fmt: skip
    out = reports.reduce_pipeline([part] * 3, {2: {"name": "Proposal", "position": 3}})
    (stage,) = out["stages"]
    assert stage["deals"] == 3 and stage["amount"] == "0.3000"
    assert stage["weighted_amount"] == "0.0750" and stage["stage"] == "Proposal"
