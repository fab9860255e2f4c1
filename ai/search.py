"""Search over customers, contacts and tickets: what is indexed of a record, and the
three rankings. Pure functions; the Ray tasks in tasks.py call them.

- **What is indexed** (`entry`): a title, the record's words (`terms`, each as often
  as it occurs), the words of its e-mail address and phone number kept apart (a role
  may hide those fields: they are matched only for callers who may see them), and
  the text a sentence embedding is made of (never the e-mail or phone).
- **Words** (`tokens`): case-folded, accents off, and the letters Unicode does not
  decompose folded too (`Đ` → `d`, `Ø` → `o`, `ß` → `ss`, `Æ` → `ae`), so "duc" finds
  "Đức" and "orsted" finds "Ørsted"; letters of every script are kept, and Chinese,
  Japanese and Korean text (no spaces between words) becomes its characters and
  their pairs (`東京` → `東`, `京`, `東京`), as search engines index it.
- **Lexical (BM25)**: each shard's task finds the documents holding any query word
  (a GIN index on the stored words) or a word near one (a trigram index: a prefix,
  one typo), and returns its corpus statistics (documents, total length, document
  frequency of each query word) with its best `CANDIDATE_FACTOR * limit` candidates
  and their term counts (`shard_candidates`: a prefix match counts `PREFIX`, a
  one-edit match `TYPO`, an exact one 1); `merge` adds the statistics up and scores
  every candidate again with the global IDF and average length, so scores from
  different shards compare. A document can be missed only when the global and local
  weights order it very differently.
- **Exact first**: a record whose name, e-mail address or phone number is the whole
  query (as words: "nguyen van duc", "ann@example.com", a phone's last 9 digits) is
  ranked above every other, in lexical and in hybrid search.
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
PREFIX = 0.7  # what a word the query word begins counts, against 1 for the word itself
TYPO = 0.5  # and a word one edit away (a letter more, less, changed or two swapped)
TYPO_MIN = 4  # shorter query words are not matched with a typo (too many neighbours)
_WORD = re.compile(r"[^\W_]+")
# Letters NFKD does not decompose, as their readers spell them without the mark.
_FOLD = str.maketrans({
    "đ": "d", "ð": "d", "ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "þ": "th", "ı": "i",
    "ħ": "h", "ŧ": "t", "ŋ": "ng", "ƒ": "f", "ĸ": "k", "ſ": "s",
})  # fmt: skip
# Scripts written without spaces between words: indexed by characters and pairs.
_CJK = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]+"
)
KINDS = ("customer", "contact", "ticket")


def tokens(text: str) -> list[str]:
    """The words of `text` as they are indexed and searched: case-folded, without
    accents or marks (see the module), e-mail addresses and URLs split into parts,
    CJK runs as their characters and each pair of neighbours."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c)).translate(_FOLD)
    out: list[str] = []
    for word in _WORD.findall(plain):
        at = 0
        for run in _CJK.finditer(word):
            if run.start() > at:
                out.append(word[at : run.start()])
            chars = run.group()
            out.extend(chars)
            out.extend(chars[i : i + 2] for i in range(len(chars) - 1))
            at = run.end()
        if at < len(word):
            out.append(word[at:])
    return out


def phone_keys(words: Sequence[str]) -> list[str]:
    """A phone number's digits as one word, and its last 9 digits (a national and an
    international spelling of one number share them: "0912 345 678", "+84 912 345
    678"); none when the words are not all digits or make fewer than 7."""
    digits = "".join(words)
    if len(digits) < 7 or not digits.isdigit():
        return []
    return [digits, digits[-9:]] if len(digits) > 9 else [digits]


def query_terms(words: Sequence[str]) -> list[str]:
    """What a query's words look for: themselves, and a phone number's keys."""
    return sorted({*words, *phone_keys(words)})


def fuzzy_terms(terms: Iterable[str]) -> list[str]:
    """The query words looked up by their neighbours too (prefixes, typos): those of
    three or more ASCII letters or digits (shorter ones begin too many words; the
    trigram index reads ASCII only: the databases' locale is C)."""
    return [t for t in terms if len(t) >= 3 and t.isascii() and t.isalnum()]


def one_edit(a: str, b: str) -> bool:
    """`a` and `b` differ by exactly one letter added, removed or changed, or two
    neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1 :] == b[i + 1 :] or (a[i : i + 2] == b[i : i + 2][::-1]
                                             and a[i + 2 :] == b[i + 2 :])  # fmt: skip
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer[i + 1 :] == shorter[i:]


def match_weight(query_word: str, word: str) -> float:
    """How much `word` of a document counts for `query_word`: 1 the same word,
    `PREFIX` a word it begins, `TYPO` a word one edit away (a word with a letter: a
    number one digit off is another number), else 0."""
    if word == query_word:
        return 1.0
    if len(query_word) >= 2 and word.startswith(query_word):
        return PREFIX
    if len(query_word) >= TYPO_MIN and not query_word.isdigit() and one_edit(query_word, word):
        return TYPO
    return 0.0


def is_exact(
    query: Sequence[str],
    title: str,
    emails: Sequence[str],
    phones: Sequence[str],
    words: Sequence[str] = (),
    title_words: int | None = None,
) -> bool:
    """The whole query is the record's name, e-mail address or phone number (its last
    9 digits when both have that many: a national and an international spelling).
    `title_words`: how many of the document's first `words` are its title's (None: not
    known, the title is read again)."""
    if not query:
        return False
    n = len(query)
    if title_words is not None:
        if title_words == n and list(words[:n]) == list(query):
            return True
    elif tokens(title) == list(query):
        return True
    if emails and list(emails) == list(query):
        return True
    return bool(phones) and not set(phone_keys(query)).isdisjoint(phones)


@dataclass(frozen=True)
class Entry:
    """One record as the index keeps it."""

    title: str
    terms: list[str]  # the title's words first
    email_terms: list[str]
    phone_terms: list[str]
    text: str
    title_words: int = 0  # how many of `terms` are the title's

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
        title_words=len(tokens(title)),
        terms=tokens(visible),
        email_terms=tokens(row.get("email") or ""),
        phone_terms=_phone_terms(row.get("phone") or ""),
        text=text[:2000],  # the model reads 256 word pieces; more is only cost
    )


def _phone_terms(phone: str) -> list[str]:
    words = tokens(phone)
    return words + [k for k in phone_keys(words) if k not in words]


# -- lexical: BM25 --------------------------------------------------------------------
def _bm25(counts: dict[str, float], length: int, idf: dict[str, float], avg_len: float) -> float:
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
    query: Sequence[str],
    docs: int,
    length: int,
    matches: Iterable[tuple[str, int, str, int | None, list[str], list[str], list[str], int]],
    limit: int,
    near: bool = True,
) -> dict[str, Any]:
    """One shard's statistics and best `limit * CANDIDATE_FACTOR` matches. `query`:
    the query's words in order; `docs`, `length`: the shard's documents (of the
    searched kinds) and their total length; `matches`: (kind, id, title, how many of
    its words are the title's, words, e-mail words, phone words, length) of every
    candidate document (the e-mail and phone words only where the caller may match
    them, else empty). `near`: prefixes and typos count too (else whole words only)."""
    wanted = query_terms(query)
    known: dict[str, list[tuple[str, float]]] = {}  # a word -> what it counts, per query word
    # What a word must be to match a query word at all, tested in C before any
    # `match_weight`: a word it begins (itself included), or a length one edit allows.
    begun = tuple(wanted) if near else ()
    typo_lengths = {
        len(q) + d
        for q in wanted
        if near and len(q) >= TYPO_MIN and not q.isdigit()
        for d in (-1, 0, 1)
    }
    whole = set(wanted)

    def weights(word: str) -> list[tuple[str, float]]:
        found = known.get(word)
        if found is None:  # once per distinct word: documents share most of theirs
            if not near:
                found = [(word, 1.0)] if word in whole else []
            elif word.startswith(begun) or len(word) in typo_lengths:
                found = [(q, x) for q in wanted if (x := match_weight(q, word))]
            else:
                found = []
            known[word] = found
        return found

    df: Counter[str] = Counter()
    found = []
    for kind, record_id, title, title_words, words, emails, phones, doc_len in matches:
        counts: dict[str, float] = {}
        for word in (*words, *emails, *phones):
            for q, weight in weights(word):
                counts[q] = counts.get(q, 0.0) + weight
        if counts:
            df.update(counts.keys())
            exact = is_exact(query, title, emails, phones, words, title_words)
            found.append((kind, record_id, title, counts, doc_len, exact))
    idf = _idf(docs, {t: df[t] for t in wanted})
    avg = length / docs if docs else 0.0
    found.sort(key=lambda m: (not m[5], -_bm25(m[3], m[4], idf, avg), m[1]))
    return {
        "docs": docs,
        "length": length,
        "df": {t: df[t] for t in wanted},
        "candidates": found[: limit * CANDIDATE_FACTOR],
    }


def merge(partials: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The global top `limit`: the exact matches first, then every candidate scored
    with the summed statistics."""
    n_docs = sum(p["docs"] for p in partials)
    total_len = sum(p["length"] for p in partials)
    df: Counter[str] = Counter()
    for p in partials:
        df.update(p["df"])
    idf = _idf(n_docs, dict(df))
    avg = total_len / n_docs if n_docs else 0.0
    scored = [
        (kind, record_id, title, _bm25(counts, length, idf, avg), exact)
        for p in partials
        for kind, record_id, title, counts, length, exact in p["candidates"]
    ]
    scored.sort(key=lambda c: (not c[4], -c[3], c[1]))
    return [
        hit(kind, record_id, title, score, exact)
        for kind, record_id, title, score, exact in scored[:limit]
    ]


def hit(kind: str, record_id: int, title: str, score: float, exact: bool = False) -> dict[str, Any]:
    return {"type": kind, "id": str(record_id), "title": title, "score": round(score, 6),
            "exact": exact}  # fmt: skip


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
    """One list from several rankings of the same records: the exact matches first
    (a record whose name is the query is what the caller looks for, whatever the
    meaning ranking says), then each record by Σ 1 / (RRF_K + rank) over the lists it
    is in."""
    fused: dict[str, float] = {}
    first: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit["id"]] = fused.get(hit["id"], 0.0) + 1.0 / (RRF_K + rank)
            first.setdefault(hit["id"], hit)
    exact = {h["id"] for ranking in rankings for h in ranking if h.get("exact")}
    order = sorted(fused, key=lambda i: (i not in exact, -fused[i], int(i)))
    return [{**first[i], "score": round(fused[i], 6), "exact": i in exact} for i in order[:limit]]
