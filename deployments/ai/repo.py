"""All SQL of the AI service: leads on their marketing shards (read for training and
scoring, scores written back), models in the catalog database `ai`, and the AI jobs'
own rows in the shared `jobs` table (database `integration`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from deployments._kit.sql import Params
from deployments._kit.types import Id
from shards import ReadConn, WriteConn
from shards.ids import shard_sql

LEAD_COLUMNS = "id, email, phone, company, title, source, status, campaign_id, capture_count, notes"
OPEN_STATUSES = ["new", "contacted", "qualified"]


# -- leads (database `marketing`, one logical shard per call) ---------------------------
async def training_rows(conn: ReadConn, shard: int) -> list[dict[str, Any]]:
    """Leads whose outcome is known: converted (1) or unqualified (0)."""
    rows = await conn.fetch(
        f"""SELECT {LEAD_COLUMNS},
                   CASE WHEN status = 'converted' OR converted_customer_id IS NOT NULL
                        THEN 1 ELSE 0 END AS label
            FROM leads
            WHERE deleted_at IS NULL AND {shard_sql("id")} = $1
              AND (status IN ('converted', 'unqualified') OR converted_customer_id IS NOT NULL)""",
        shard,
    )
    return [dict(r) for r in rows]


async def open_lead_ids(conn: ReadConn, shard: int) -> list[int]:
    """Ids of the open leads of a shard (to be scored), in id order."""
    rows = await conn.fetch(
        f"""SELECT id FROM leads
            WHERE deleted_at IS NULL AND {shard_sql("id")} = $1 AND status = ANY($2::text[])
            ORDER BY id""",
        shard, OPEN_STATUSES,
    )  # fmt: skip
    return [int(r["id"]) for r in rows]


async def leads_by_id(
    conn: ReadConn, shard: int, lead_ids: list[int], owners: list[int] | None = None
) -> list[dict[str, Any]]:
    """The live leads among `lead_ids` whose owner is in `owners` (None: anyone's)."""
    rows = await conn.fetch(
        f"""SELECT {LEAD_COLUMNS} FROM leads
            WHERE id = ANY($2::bigint[]) AND {shard_sql("id")} = $1 AND deleted_at IS NULL
              AND ($3::bigint[] IS NULL OR owner_id = ANY($3::bigint[]))""",
        shard, lead_ids, owners,
    )  # fmt: skip
    return [dict(r) for r in rows]


async def write_scores(
    conn: WriteConn, shard: int, scores: list[tuple[int, float]], model_version: int
) -> int:
    """Store each lead's score and the model that made it (not a user edit: no version
    bump, no history). Leads no longer open keep what they had."""
    result = await conn.execute(
        f"""UPDATE leads l SET score = s.score, score_model_version = $3, scored_at = now()
            FROM unnest($2::bigint[], $4::float8[]) AS s (id, score)
            WHERE l.id = s.id AND {shard_sql("l.id")} = $1 AND l.deleted_at IS NULL
              AND l.status = ANY($5::text[])""",
        shard, [i for i, _ in scores], model_version, [v for _, v in scores], OPEN_STATUSES,
    )  # fmt: skip
    return int(result.split()[-1])


# -- models (catalog database `ai`) ----------------------------------------------------
class ModelRead(BaseModel):
    version: int
    job_id: Id | None
    algorithm: str
    auc: float | None
    n_train: int
    n_test: int
    positives: int
    created_at: datetime


_MODEL = "version, job_id, algorithm, auc, n_train, n_test, positives, created_at"


async def store_model(
    conn: WriteConn,
    job_id: int | None,
    algorithm: str,
    auc: float | None,
    counts: tuple[int, int, int],
    features: list[str],
    model: bytes,
    created_by: int,
) -> ModelRead:
    row = await conn.fetchrow(
        f"""INSERT INTO lead_models (job_id, algorithm, auc, n_train, n_test, positives,
                                     features, model, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9) RETURNING {_MODEL}""",
        job_id, algorithm, auc, *counts, json.dumps(features), model, created_by,
    )  # fmt: skip
    return ModelRead(**dict(row))


async def latest_model(conn: ReadConn) -> tuple[ModelRead, bytes] | None:
    row = await conn.fetchrow(
        f"SELECT {_MODEL}, model FROM lead_models ORDER BY version DESC LIMIT 1"
    )
    if row is None:
        return None
    d = dict(row)
    model = bytes(d.pop("model"))
    return ModelRead(**d), model


async def list_models(conn: ReadConn, limit: int) -> list[ModelRead]:
    rows = await conn.fetch(
        f"SELECT {_MODEL} FROM lead_models ORDER BY version DESC LIMIT $1", limit
    )
    return [ModelRead(**dict(r)) for r in rows]


# -- the AI service's jobs (database `integration`, table `jobs`) ------------------------
async def claim_abandoned(
    conn: WriteConn, kinds: list[str], older_than_s: float
) -> list[dict[str, Any]]:
    """AI jobs left queued or running by a replica that stopped reporting: taken over
    (their `updated_at` renewed) by the caller, at most once each. Returns (id, kind,
    created_by) of the jobs taken."""
    rows = await conn.fetch(
        """UPDATE jobs SET status = 'running', updated_at = now()
           WHERE id IN (SELECT id FROM jobs
                        WHERE kind = ANY($1::text[]) AND status IN ('queued', 'running')
                          AND updated_at < now() - make_interval(secs => $2)
                        FOR UPDATE SKIP LOCKED)
           RETURNING id, kind, created_by""",
        kinds, older_than_s,
    )  # fmt: skip
    return [dict(r) for r in rows]


async def job_status(conn: ReadConn, job_id: int) -> str | None:
    status = await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job_id)
    return None if status is None else str(status)


async def heartbeat(conn: WriteConn, job_id: int, done: int, total: int | None) -> bool:
    """Progress and liveness of a running job; False once it is no longer running."""
    status = await conn.fetchval(
        """UPDATE jobs SET done = $2, total = coalesce($3, total), updated_at = now()
           WHERE id = $1 AND status = 'running' RETURNING status""",
        job_id, done, total,
    )  # fmt: skip
    return status is not None


# -- the search index (databases `customer` and `support`) ------------------------------
# kind -> (database, table, columns indexed). A document is read only together with
# its record (`_VISIBLE`): a deleted record, or one outside the caller's read scope
# (`owners`: the users whose records it reaches; None: every record), is never found,
# whatever the index still holds.
SOURCES: Mapping[str, tuple[str, str, str]] = {
    "customer": ("customer", "customers", "id, name, email, phone, website, industry, tags"),
    "contact": ("customer", "contacts", "id, first_name, last_name, email, phone, title"),
    "ticket": ("support", "tickets", "id, subject, description"),
}
_VISIBLE: Mapping[str, tuple[str, str]] = {  # kind -> (join, owner column)
    "customer": ("JOIN customers r ON r.id = d.id AND r.deleted_at IS NULL", "r.owner_id"),
    "contact": (
        """JOIN contacts r ON r.id = d.id AND r.deleted_at IS NULL
           JOIN customers p ON p.id = r.customer_id""",
        "p.owner_id",
    ),
    "ticket": ("JOIN tickets r ON r.id = d.id AND r.deleted_at IS NULL", "r.assignee_id"),
}


async def index_sources(
    conn: ReadConn, kind: str, shards: list[int], ids: list[int] | None, after: int, limit: int
) -> list[dict[str, Any]]:
    """Records to index: the live ones of `ids` (on these logical shards), or the next
    `limit` live records of the one shard in `shards` after id `after`, in id order.
    (A deleted record's document stays: the search reads documents only with their
    live records, and a restored record is found again at once.)"""
    _, table, columns = SOURCES[kind]
    select = f"SELECT {columns}, updated_at FROM {table}"
    if ids is not None:
        rows = await conn.fetch(
            f"""{select} WHERE deleted_at IS NULL AND id = ANY($1::bigint[])
                AND {shard_sql("id")} = ANY($2::int[])""",
            ids, shards,
        )  # fmt: skip
    else:
        (shard,) = shards
        rows = await conn.fetch(
            f"""{select} WHERE deleted_at IS NULL AND {shard_sql("id")} = $1 AND id > $2
                ORDER BY id LIMIT $3""",
            shard, after, limit,
        )  # fmt: skip
    return [dict(r) for r in rows]


async def count_sources(conn: ReadConn, kind: str, shard: int) -> int:
    _, table, _ = SOURCES[kind]
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE deleted_at IS NULL AND {shard_sql('id')} = $1",
            shard,
        )
    )


async def unembedded_ids(conn: ReadConn, kind: str, shard: int, limit: int) -> list[int]:
    """Up to `limit` documents of live records of `kind` on `shard` that have no
    embedding yet."""
    return await _waiting(conn, kind, shard, limit, "d.embedding IS NULL")


async def unfolded_ids(conn: ReadConn, kind: str, shard: int, limit: int) -> list[int]:
    """Up to `limit` documents of live records of `kind` on `shard` made by an older
    tokenizer (no `words`), to index again."""
    return await _waiting(conn, kind, shard, limit, "d.words IS NULL")


async def _waiting(conn: ReadConn, kind: str, shard: int, limit: int, condition: str) -> list[int]:
    table = SOURCES[kind][1]
    rows = await conn.fetch(
        f"""SELECT d.id FROM search_documents d
            JOIN {table} r ON r.id = d.id AND r.deleted_at IS NULL
            WHERE {condition} AND d.record_type = $1 AND {shard_sql("d.id")} = $2
            ORDER BY d.id LIMIT $3""",
        kind, shard, limit,
    )  # fmt: skip
    return [int(r["id"]) for r in rows]


class Document(BaseModel):
    """One record's row of `search_documents` (words joined by spaces)."""

    id: int
    title: str
    title_words: int
    terms: str
    email_terms: str
    phone_terms: str
    length: int
    embedding: bytes | None
    model: str | None
    updated_at: datetime


async def store_documents(conn: WriteConn, kind: str, docs: list[Document]) -> int:
    """Upsert `docs`; a document indexed from a newer state of its record is kept.
    Returns how many rows were written."""
    if not docs:
        return 0
    status = await conn.execute(
        """INSERT INTO search_documents AS d (id, record_type, title, terms, email_terms,
               phone_terms, words, title_words, length, embedding, model, source_updated_at)
           SELECT u.id, $1, u.title, string_to_array(u.terms, ' '),
                  string_to_array(u.email, ' '), string_to_array(u.phone, ' '),
                  concat_ws(' ', nullif(u.terms, ''), nullif(u.email, ''),
                            nullif(u.phone, '')),
                  u.title_words, u.length, u.embedding, u.model, u.updated
           FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::int[], $8::bytea[], $9::text[], $10::timestamptz[], $11::int[])
                AS u(id, title, terms, email, phone, length, embedding, model, updated,
                     title_words)
           ON CONFLICT (id) DO UPDATE SET
               title = EXCLUDED.title, terms = EXCLUDED.terms,
               email_terms = EXCLUDED.email_terms, phone_terms = EXCLUDED.phone_terms,
               words = EXCLUDED.words, title_words = EXCLUDED.title_words,
               length = EXCLUDED.length, embedding = EXCLUDED.embedding,
               model = EXCLUDED.model, source_updated_at = EXCLUDED.source_updated_at,
               indexed_at = now()
           WHERE d.source_updated_at <= EXCLUDED.source_updated_at""",
        kind,
        [d.id for d in docs], [d.title for d in docs], [d.terms for d in docs],
        [d.email_terms for d in docs], [d.phone_terms for d in docs],
        [d.length for d in docs], [d.embedding for d in docs], [d.model for d in docs],
        [d.updated_at for d in docs], [d.title_words for d in docs],
    )  # fmt: skip
    return int(status.split()[-1])


NEAR_MAX = 8  # query words looked up by their neighbours (each one more index scan)
# Low enough for one typo in a four-letter word ("jonh": 2 of "john"'s 5 trigrams).
NEAR_SIMILARITY = 0.4


def _scope(kind: str, owners: list[int] | None, param: int) -> tuple[str, str]:
    join, owner = _VISIBLE[kind]
    return join, ("" if owners is None else f"AND {owner} = ANY(${param}::bigint[])")


async def lexical_matches(
    conn: ReadConn,
    kind: str,
    shards: list[int],
    terms: list[str],
    owners: list[int] | None,
    email: bool,
    phone: bool,
    near: list[str] | None = None,
    typo_min: int = 4,
) -> tuple[int, int, list[tuple[str, int, str, int | None, list[str], list[str], list[str], int]]]:
    """(documents of `kind` on these logical shards, their total length, every visible
    document holding a query term or, with `near` (query words of ASCII letters and
    digits, ai/search.py `fuzzy_terms`), a word near one of them (a word it begins, or
    from `typo_min` letters on a word within two edits: ai/search.py keeps the one-edit
    ones)), each as (kind, id, title, how many of its words are the title's, words,
    e-mail words, phone words, length). `email`, `phone`: the caller may see (and so
    match) those fields; the words of one it may not are left out, empty."""
    shard_of = shard_sql("d.id")
    stats = await conn.fetchrow(
        f"""SELECT count(*) AS docs, coalesce(sum(length), 0) AS length
            FROM search_documents d WHERE {shard_of} = ANY($1::int[]) AND d.record_type = $2""",
        shards, kind,
    )  # fmt: skip
    params = Params()
    args = [params(shards), params(kind), params(terms)]
    join, scope = _scope(kind, owners, 4)
    if owners is not None:
        params(owners)
    # One condition per index, so the plan is a bitmap OR of index scans.
    matched = [f"d.terms && {args[2]}::text[]"]
    columns = ["d.terms"]
    for shown, column in ((email, "d.email_terms"), (phone, "d.phone_terms")):
        if shown:
            matched.append(f"{column} && {args[2]}::text[]")
            columns.append(column)
    near = (near or [])[:NEAR_MAX]
    if near:
        # The trigram index gives the documents with a stretch of words like a query
        # word (word similarity, `pg_trgm.word_similarity_threshold`); of those, only
        # the ones with a word the query word begins or a word within two edits of it
        # leave the server (most trigram neighbours are neither: "billed" for
        # "billing"), and ai/search.py `match_weight` keeps the one-edit ones.
        alike = " OR ".join(f"{params(word)} <% d.words" for word in near)
        wanted = params(near)
        matched.append(
            f"""(({alike}) AND EXISTS (
                SELECT 1 FROM unnest({" || ".join(columns)}) w, unnest({wanted}::text[]) q
                WHERE starts_with(w, q) OR (length(q) >= {int(typo_min)} AND q !~ '^[0-9]+$'
                      AND levenshtein_less_equal(w, q, 2) <= 2)))"""
        )
        await conn.execute(
            "SELECT set_config('pg_trgm.word_similarity_threshold', $1, true)", str(NEAR_SIMILARITY)
        )
    email_words = "d.email_terms" if email else "'{}'::text[]"
    phone_words = "d.phone_terms" if phone else "'{}'::text[]"
    rows = await conn.fetch(
        f"""SELECT d.id, d.title, d.title_words, d.terms, {email_words} AS emails,
                   {phone_words} AS phones, d.length
            FROM search_documents d {join}
            WHERE {shard_of} = ANY({args[0]}::int[]) AND d.record_type = {args[1]}
              AND ({" OR ".join(matched)}) {scope}""",
        *params.values,
    )
    found = [
        (kind, int(r["id"]), str(r["title"]), r["title_words"], list(r["terms"]),
         list(r["emails"]), list(r["phones"]), int(r["length"]))
        for r in rows
    ]  # fmt: skip
    return int(stats["docs"]), int(stats["length"]), found


# Read by each shard server's in-memory vector index (ai/vectors.py).
async def database_now(conn: ReadConn) -> datetime:
    """The server's clock (where a vector block's first read starts from)."""
    return await conn.fetchval("SELECT now()")  # type: ignore[no-any-return]


async def embeddings_page(
    conn: ReadConn, kind: str, shard: int, after: int, limit: int
) -> list[tuple[int, bytes | None, str | None]]:
    """(id, embedding, model) of the next `limit` documents of `kind` on `shard` after
    id `after`, in id order (with or without an embedding)."""
    rows = await conn.fetch(
        f"""SELECT id, embedding, model FROM search_documents
            WHERE record_type = $1 AND {shard_sql("id")} = $2 AND id > $3
            ORDER BY id LIMIT $4""",
        kind, shard, after, limit,
    )  # fmt: skip
    return [(int(r["id"]), r["embedding"], r["model"]) for r in rows]


async def embeddings_since(
    conn: ReadConn, kind: str, shards: list[int], since: list[datetime]
) -> list[tuple[int, bytes | None, str | None, datetime]]:
    """(id, embedding, model, indexed_at) of the documents of `kind` indexed after
    `since[i]` on logical shard `shards[i]`."""
    rows = await conn.fetch(
        f"""SELECT d.id, d.embedding, d.model, d.indexed_at FROM search_documents d
            JOIN unnest($2::int[], $3::timestamptz[]) AS w(shard, since)
              ON {shard_sql("d.id")} = w.shard AND d.indexed_at > w.since
            WHERE d.record_type = $1 AND d.indexed_at > $4""",
        kind, shards, since, min(since),
    )  # fmt: skip
    return [(int(r["id"]), r["embedding"], r["model"], r["indexed_at"]) for r in rows]


async def visible_embedded(
    conn: ReadConn, kind: str, ids: list[int], model: str, owners: list[int] | None
) -> list[tuple[int, str]]:
    """(id, title) of those of `ids` whose record is live and in scope (`owners`; None:
    anyone's) and whose document holds an embedding by `model`."""
    join, scope = _scope(kind, owners, 4)
    args: list[Any] = [ids, kind, model] + ([owners] if owners is not None else [])
    rows = await conn.fetch(
        f"""SELECT d.id, d.title FROM search_documents d {join}
            WHERE d.id = ANY($1::bigint[]) AND d.record_type = $2 AND d.model = $3
              AND d.embedding IS NOT NULL {scope}""",
        *args,
    )
    return [(int(r["id"]), str(r["title"])) for r in rows]


async def embedded_documents(
    conn: ReadConn, kind: str, shards: list[int], model: str, owners: list[int] | None
) -> list[tuple[int, str, bytes]]:
    """(id, title, embedding) of the visible documents of `kind` on these logical
    shards embedded by `model`."""
    join, scope = _scope(kind, owners, 4)
    args: list[Any] = [shards, kind, model] + ([owners] if owners is not None else [])
    rows = await conn.fetch(
        f"""SELECT d.id, d.title, d.embedding FROM search_documents d {join}
            WHERE {shard_sql("d.id")} = ANY($1::int[]) AND d.record_type = $2 AND d.model = $3
              AND d.embedding IS NOT NULL {scope}""",
        *args,
    )
    return [(int(r["id"]), str(r["title"]), bytes(r["embedding"])) for r in rows]
