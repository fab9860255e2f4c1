"""Lexical search (BM25) over customers, contacts and tickets, scattered over the
logical shards and gathered. Pure functions: the per-shard part runs in one Ray task
per shard (`shard_candidates`), the merge in one more (`merge`).

Each shard task returns its corpus statistics for the query's terms (documents,
total length, document frequency of each term) and its best candidates with their
term counts. The merge adds the statistics up and scores every candidate again with
the global IDF and average length, so scores from different shards compare. Which
candidates a shard sends is decided with its own statistics, `CANDIDATE_FACTOR`
times the limit of them, so a document can only be missed when the global and
local weights order it very differently."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

K1 = 1.2
B = 0.75
CANDIDATE_FACTOR = 4
_WORD = re.compile(r"[0-9a-z]+")


def tokens(text: str) -> list[str]:
    """Lower-case words without accents; e-mail addresses and URLs split into parts."""
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return _WORD.findall(plain)


def document(kind: str, row: dict[str, Any]) -> tuple[str, str]:
    """(title shown in results, full text indexed) of a record row."""
    if kind == "customer":
        title = str(row["name"])
        parts = [row["name"], row.get("email"), row.get("website"), row.get("industry"),
                 " ".join(row.get("tags") or [])]  # fmt: skip
    elif kind == "contact":
        title = " ".join(p for p in (row["first_name"], row.get("last_name")) if p)
        parts = [title, row.get("email"), row.get("title"), row.get("phone")]
    else:
        title = str(row["subject"])
        # The subject counts twice: it names what the ticket is about.
        parts = [row["subject"], row["subject"], row.get("description")]
    return title, " ".join(str(p) for p in parts if p)


def _bm25(counts: dict[str, int], length: int, idf: dict[str, float], avg_len: float) -> float:
    score = 0.0
    for term, weight in idf.items():
        tf = counts.get(term, 0)
        if tf:
            norm = K1 * (1 - B + B * length / avg_len) if avg_len else K1
            score += weight * tf * (K1 + 1) / (tf + norm)
    return score


def _idf(n_docs: int, df: dict[str, int]) -> dict[str, float]:
    return {t: math.log(1 + (n_docs - d + 0.5) / (d + 0.5)) for t, d in df.items()}


def shard_candidates(
    query: str, records: Iterable[tuple[str, int, dict[str, Any]]], limit: int
) -> dict[str, Any]:
    """Statistics and the best `limit * CANDIDATE_FACTOR` matches of one shard.
    `records`: (kind, id, row)."""
    terms = sorted(set(tokens(query)))
    n_docs = 0
    total_len = 0
    df: Counter[str] = Counter()
    matches = []
    for kind, record_id, row in records:
        title, text = document(kind, row)
        words = tokens(text)
        n_docs += 1
        total_len += len(words)
        counts = Counter(w for w in words if w in terms)
        if counts:
            df.update(counts.keys())
            matches.append((kind, record_id, title, dict(counts), len(words)))
    idf = _idf(n_docs, {t: df[t] for t in terms})
    avg = total_len / n_docs if n_docs else 0.0
    matches.sort(key=lambda m: (-_bm25(m[3], m[4], idf, avg), m[1]))
    return {
        "docs": n_docs,
        "length": total_len,
        "df": {t: df[t] for t in terms},
        "candidates": matches[: limit * CANDIDATE_FACTOR],
    }


def merge(partials: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The global top `limit`: every candidate scored with the summed statistics."""
    n_docs = sum(p["docs"] for p in partials)
    total_len = sum(p["length"] for p in partials)
    df: Counter[str] = Counter()
    for p in partials:
        df.update(p["df"])
    idf = _idf(n_docs, dict(df))
    avg = total_len / n_docs if n_docs else 0.0
    scored = [
        (kind, record_id, title, _bm25(counts, length, idf, avg))
        for p in partials
        for kind, record_id, title, counts, length in p["candidates"]
    ]
    scored.sort(key=lambda c: (-c[3], c[1]))
    return [
        {"type": kind, "id": str(record_id), "title": title, "score": round(score, 6)}
        for kind, record_id, title, score in scored[:limit]
    ]
