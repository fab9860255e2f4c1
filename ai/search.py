"""Search over customers, contacts and tickets: what is indexed of a record, and the
three rankings. Pure functions; the Ray tasks in tasks.py call them.

- **What is indexed** (`entry`): a title, the record's words (`terms`, each as often
  as it occurs), the words of its e-mail address and phone number kept apart (a role
  may hide those fields: they are matched only for callers who may see them), and
  the text a sentence embedding is made of (never the e-mail or phone).
- **Lexical (BM25)**: each shard's task finds the documents holding any query word
  (a GIN index on the stored words), and returns its corpus statistics (documents,
  total length, document frequency of each query word) with its best
  `CANDIDATE_FACTOR * limit` candidates and their term counts (`shard_candidates`);
  `merge` adds the statistics up and scores every candidate again with the global
  IDF and average length, so scores from different shards compare. A document can be
  missed only when the global and local weights order it very differently.
- **Semantic**: cosine similarity of the query's embedding with each stored one; a
  shard's top `limit` (`nearest`) are exact, and so is the merge (`merge_nearest`).
- **Hybrid** (the default when embeddings are on): the two lists fused by reciprocal
  rank (`fuse`): an exact name or e-mail match (lexical) and a match in meaning
  (semantic) both come up, and neither's score scale has to be calibrated.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

K1 = 1.2
B = 0.75
CANDIDATE_FACTOR = 4
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al., 2009)
_WORD = re.compile(r"[0-9a-z]+")
KINDS = ("customer", "contact", "ticket")


def tokens(text: str) -> list[str]:
    """Lower-case words without accents; e-mail addresses and URLs split into parts."""
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return _WORD.findall(plain)


@dataclass(frozen=True)
class Entry:
    """One record as the index keeps it."""

    title: str
    terms: list[str]
    email_terms: list[str]
    phone_terms: list[str]
    text: str

    @property
    def length(self) -> int:
        return len(self.terms) + len(self.email_terms) + len(self.phone_terms)


def _join(*parts: Any) -> str:
    return " ".join(str(p) for p in parts if p)


def entry(kind: str, row: dict[str, Any]) -> Entry:
    """The index entry of a record row (customer, contact or ticket)."""
    if kind == "customer":
        title = str(row["name"])
        visible = _join(row["name"], row.get("website"), row.get("industry"),
                        " ".join(row.get("tags") or []))  # fmt: skip
        text = _join(row["name"], row.get("industry"), " ".join(row.get("tags") or []))
    elif kind == "contact":
        title = _join(row["first_name"], row.get("last_name"))
        visible = _join(title, row.get("title"))
        text = visible
    elif kind == "ticket":
        title = str(row["subject"])
        # The subject counts twice: it names what the ticket is about.
        visible = _join(row["subject"], row["subject"], row.get("description"))
        text = _join(row["subject"], row.get("description"))
    else:
        raise ValueError(f"not a searchable kind: {kind}")
    return Entry(
        title=title,
        terms=tokens(visible),
        email_terms=tokens(row.get("email") or ""),
        phone_terms=tokens(row.get("phone") or ""),
        text=text[:2000],  # the model reads 256 word pieces; more is only cost
    )


# -- lexical: BM25 --------------------------------------------------------------------
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
    terms: Sequence[str],
    docs: int,
    length: int,
    matches: Iterable[tuple[str, int, str, list[str], int]],
    limit: int,
) -> dict[str, Any]:
    """One shard's statistics and best `limit * CANDIDATE_FACTOR` matches. `docs`,
    `length`: the shard's documents (of the searched kinds) and their total length;
    `matches`: (kind, id, title, words the caller may match, length) of every
    document holding a query term."""
    wanted = set(terms)
    df: Counter[str] = Counter()
    found = []
    for kind, record_id, title, words, doc_len in matches:
        counts = Counter(w for w in words if w in wanted)
        if counts:
            df.update(counts.keys())
            found.append((kind, record_id, title, dict(counts), doc_len))
    idf = _idf(docs, {t: df[t] for t in wanted})
    avg = length / docs if docs else 0.0
    found.sort(key=lambda m: (-_bm25(m[3], m[4], idf, avg), m[1]))
    return {
        "docs": docs,
        "length": length,
        "df": {t: df[t] for t in sorted(wanted)},
        "candidates": found[: limit * CANDIDATE_FACTOR],
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
    return [hit(kind, record_id, title, score) for kind, record_id, title, score in scored[:limit]]


def hit(kind: str, record_id: int, title: str, score: float) -> dict[str, Any]:
    return {"type": kind, "id": str(record_id), "title": title, "score": round(score, 6)}


# -- semantic: cosine similarity -------------------------------------------------------
def nearest(
    query: np.ndarray, rows: Sequence[tuple[str, int, str]], vectors: np.ndarray, limit: int
) -> list[dict[str, Any]]:
    """The `limit` rows whose vectors are closest to `query` (all unit length)."""
    if not rows:
        return []
    scores = vectors @ np.asarray(query, dtype=np.float32)
    best = np.argsort(-scores, kind="stable")[:limit]
    return [hit(rows[i][0], rows[i][1], rows[i][2], float(scores[i])) for i in best]


def merge_nearest(partials: Iterable[list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    hits = [h for p in partials for h in p]
    hits.sort(key=lambda h: (-h["score"], int(h["id"])))
    return hits[:limit]


# -- hybrid: reciprocal rank fusion ----------------------------------------------------
def fuse(rankings: Sequence[list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """One list from several rankings of the same records: each record scores
    Σ 1 / (RRF_K + rank) over the lists it is in."""
    fused: dict[str, float] = {}
    first: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit["id"]] = fused.get(hit["id"], 0.0) + 1.0 / (RRF_K + rank)
            first.setdefault(hit["id"], hit)
    order = sorted(fused, key=lambda i: (-fused[i], int(i)))
    return [{**first[i], "score": round(fused[i], 6)} for i in order[:limit]]
