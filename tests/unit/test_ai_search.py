"""Search rankings (ai/search.py) and the report reducers, without Ray:
BM25 shard partials merged with global statistics rank like one index over all
records; semantic partials merge exactly; fusion; what an index entry holds."""

from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
import pytest

from ai import search
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


def shard(query: str, records: list[tuple[str, int, dict[str, object]]], limit: int) -> dict:
    """What a shard's task computes from its stored documents: the statistics of all of
    them, and the documents holding a query word (the GIN lookup)."""
    entries = [(kind, i, search.entry(kind, row)) for kind, i, row in records]
    # Every document is a candidate (the indexes give a superset of the matches).
    matches = [
        (kind, i, e.title, e.title_words, e.terms, e.email_terms, e.phone_terms, e.length)
        for kind, i, e in entries
    ]
    return search.shard_candidates(
        search.tokens(query), len(entries), sum(e.length for _, _, e in entries), matches, limit
    )


def test_sharded_merge_ranks_like_a_single_index() -> None:
    records = CUSTOMERS + TICKETS
    rng = random.Random(3)
    for _ in range(20):
        shards: list[list[tuple[str, int, dict[str, object]]]] = [[], [], []]
        for r in records:
            shards[rng.randrange(3)].append(r)
        for query in ("rocket", "printer fire", "bakery rocket", "invoice"):
            one = search.merge([shard(query, records, 10)], 10)
            many = search.merge([shard(query, s, 10) for s in shards], 10)
            assert one == many, query


def test_the_obvious_match_comes_first() -> None:
    found = search.merge([shard("printer on fire", CUSTOMERS + TICKETS, 3)], 3)
    assert found[0]["id"] == "4" and found[0]["type"] == "ticket"
    assert search.merge([shard("zebra", CUSTOMERS, 3)], 3) == []


def test_an_entry_keeps_email_and_phone_apart_and_out_of_the_embedded_text() -> None:
    row = {"first_name": "Ada", "last_name": "Byron", "title": "Head Baker",
           "email": "ada@analytical.example", "phone": "+44 20 7946 0000"}  # fmt: skip
    e = search.entry("contact", row)
    assert e.title == "Ada Byron"
    assert e.terms == ["ada", "byron", "head", "baker"]
    assert e.email_terms == ["ada", "analytical", "example"]
    # its words, all its digits, and its last 9 (a national spelling of it shares them)
    assert e.phone_terms == ["44", "20", "7946", "0000", "442079460000", "079460000"]
    assert "analytical" not in e.text and "7946" not in e.text
    assert e.length == 4 + 3 + 6


def test_semantic_shards_merge_exactly_like_one_matrix() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [("ticket", 1000 + i, f"t{i}") for i in range(60)]
    query = vectors[7] + 0.1 * vectors[3]
    whole = search.nearest(query, rows, vectors, 5)
    parts = [search.nearest(query, rows[i::4], vectors[i::4], 5) for i in range(4)]
    merged = search.merge_nearest(parts, 5)
    assert [h["id"] for h in merged] == [h["id"] for h in whole]
    # float32 sums may differ in the last digit with the matrix's shape
    assert [h["score"] for h in merged] == pytest.approx([h["score"] for h in whole], abs=1e-5)
    assert whole[0]["id"] == "1007"


def test_fusion_rewards_what_both_rankings_agree_on() -> None:
    def ranked(*ids: int, exact: int = 0) -> list[dict[str, object]]:
        return [{"type": "customer", "id": str(i), "title": str(i), "score": 1.0,
                 "exact": i == exact} for i in ids]  # fmt: skip

    fused = search.fuse([ranked(1, 2, 3), ranked(3, 4, 1)], 3)
    assert [h["id"] for h in fused] == ["1", "3", "2"]  # 1: ranks 1+3; 3: 3+1 (tie by id)
    assert fused[0]["score"] == round(1 / 61 + 1 / 63, 6)
    assert [h["id"] for h in search.fuse([ranked(9), []], 3)] == ["9"]
    # An exact match comes first however the meaning ranking placed it.
    fused = search.fuse([ranked(1, 2, 5, exact=5), ranked(1, 2, 3)], 3)
    assert [h["id"] for h in fused] == ["5", "1", "2"] and fused[0]["exact"]


def test_pipeline_reduce_is_exact() -> None:
    part = [{"pipeline_id": 1, "stage_id": 2, "currency": "EUR", "deals": 1,
             "amount": Decimal("0.1000"), "weighted_x100": Decimal("2.5000")}]  # fmt: skip
    out = reports.reduce_pipeline([part] * 3, {2: {"name": "Proposal", "position": 3}})
    (stage,) = out["stages"]
    assert stage["deals"] == 3 and stage["amount"] == "0.3000"
    assert stage["weighted_amount"] == "0.0750" and stage["stage"] == "Proposal"


def test_embeddings_follow_the_extra_and_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from ai import embed
    from cluster.settings import get_settings

    for name, value in (("PG_PASSWORD", "x"), ("JWT_SECRET", "j" * 32),
                        ("SECRETS_KEY", "k" * 32)):  # fmt: skip
        monkeypatch.setenv(f"NEXTFLOW_{name}", value)
    assert embed.installed()  # `make setup` installs the `ai` extra
    try:
        monkeypatch.setenv("NEXTFLOW_AI_EMBEDDINGS", "off")
        get_settings.cache_clear()
        assert not embed.available()
        monkeypatch.setenv("NEXTFLOW_AI_EMBEDDINGS", "auto")
        get_settings.cache_clear()
        assert embed.available()
    finally:
        get_settings.cache_clear()


def test_stored_vectors_round_trip_as_float32_bytes() -> None:
    from ai import embed

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3, embed.DIMENSIONS)).astype(np.float32)
    blobs = [embed.to_bytes(v) for v in vectors]
    assert all(len(b) == 4 * embed.DIMENSIONS for b in blobs)
    assert np.array_equal(embed.from_bytes(blobs), vectors)
    assert embed.from_bytes([]).shape == (0, embed.DIMENSIONS)


PEOPLE = [
    (
        "contact",
        11,
        {
            "first_name": "Nguyễn Văn",
            "last_name": "Đức",
            "email": "duc@ví-dụ.vn",
            "phone": "+84 912 345 678",
        },
    ),
    ("contact", 12, {"first_name": "Đào", "last_name": "Thị Hoa", "title": "Đức's manager"}),
    ("customer", 13, {"name": "Ørsted Vind", "industry": "energy"}),
    ("customer", 14, {"name": "Bäckerei Müller & Söhne", "industry": "food"}),
    ("customer", 15, {"name": "東京 株式会社", "industry": "trading"}),
    ("customer", 16, {"name": "Duc Duc Duc Trading", "industry": "duc"}),
    ("contact", 17, {"first_name": "Åsa", "last_name": "Strøm", "email": "asa@strom.no"}),
]


def test_tokens_fold_every_script_users_write_names_in() -> None:
    assert search.tokens("Nguyễn Văn Đức, Đào") == ["nguyen", "van", "duc", "dao"]
    assert search.tokens("Ørsted Æble Straße Łódź Þór") == [
        "orsted", "aeble", "strasse", "lodz", "thor"]  # fmt: skip
    assert search.tokens("東京 株式会社") == [
        "東", "京", "東京", "株", "式", "会", "社", "株式", "式会", "会社"]  # fmt: skip
    assert search.tokens("Москва ΑΘΗΝΑ") == ["москва", "αθηνα"]  # other scripts kept


def _found(query: str, limit: int = 3) -> list[str]:
    return [h["id"] for h in search.merge([shard(query, PEOPLE, limit)], limit)]


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("duc", "11"),
        ("Đức", "11"),
        ("nguyen van", "11"),
        ("Nguyễn Văn Đức", "11"),
        ("nguyne van duc", "11"),  # two letters swapped
        ("nguyn", "11"),  # a letter missing (and a prefix)
        ("orsted", "13"),
        ("Ørsted", "13"),
        ("muller", "14"),
        ("backerei", "14"),
        ("strom", "17"),
        ("asa@strom.no", "17"),
        ("東京", "15"),
        ("株式会社", "15"),
        ("東", "15"),
        ("nguy", "11"),  # as the user types
        ("0912 345 678", "11"),  # a national spelling of an international number
    ],
)
def test_names_are_found_as_their_users_type_them(query: str, wanted: str) -> None:
    assert wanted in _found(query), (query, _found(query))


def test_the_exact_name_email_or_phone_ranks_first() -> None:
    # "Duc Duc Duc Trading" holds "duc" four times; the contact whose name is the query
    # still comes first, and is marked so.
    first = search.merge([shard("Nguyễn Văn Đức", PEOPLE, 3)], 3)[0]
    assert first["id"] == "11" and first["exact"]
    assert _found("duc trading")[0] == "16"
    assert _found("duc@ví-dụ.vn")[0] == "11"
    assert search.merge([shard("+84912345678", PEOPLE, 3)], 3)[0]["id"] == "11"


def test_typos_and_prefixes_count_less_than_the_word() -> None:
    assert search.match_weight("duc", "duc") == 1.0
    assert search.match_weight("duc", "ducati") == search.PREFIX
    assert search.match_weight("nguyne", "nguyen") == search.TYPO
    assert search.match_weight("duc", "dux") == 0.0  # short words take no typo
    assert search.match_weight("john", "joan") == search.TYPO
    assert search.match_weight("john", "jane") == 0.0
    assert search.match_weight("1234", "1235") == 0.0  # another number
    assert search.fuzzy_terms(["duc", "d", "東京", "x1", "x12"]) == ["duc", "x12"]


def test_whole_words_only_when_near_words_are_off() -> None:
    def found(query: str) -> list[str]:
        hits = search.merge([search.shard_candidates(
            search.tokens(query), len(PEOPLE), 30,
            [(k, i, e.title, e.title_words, e.terms, e.email_terms, e.phone_terms, e.length)
             for k, i, e in ((k, i, search.entry(k, row)) for k, i, row in PEOPLE)],
            3, near=False)], 3)  # fmt: skip
        return [h["id"] for h in hits]

    assert found("nguy") == [] and found("nguyne") == []
    assert found("nguyen van duc")[0] == "11"
