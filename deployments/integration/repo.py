"""All SQL of the integration service: the `jobs` table (catalog database
`integration`) and the bulk customer upsert (sharded database `customer`). Each
function runs inside the one transaction its ShardManager opened."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from deployments._kit.events import emit
from deployments._kit.types import Id
from deployments.integration.csvio import RECORD_COLUMNS
from shards import ReadConn, WriteConn
from shards.ids import shard_sql

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
_JOB = "id, kind, status, done, total, result, error, created_by, created_at, updated_at"


class Progress(BaseModel):
    done: int
    total: int | None


class JobRead(BaseModel):
    id: Id
    kind: str
    status: JobStatus
    progress: Progress
    result: dict[str, Any] | None = None
    error: str | None = None
    created_by: Id
    created_at: datetime
    updated_at: datetime


class JobAccepted(BaseModel):
    job_id: Id
    status_url: str = Field(description="Poll this for progress and the result.")


def _job(row: Any) -> JobRead:
    d = dict(row)
    result = d.pop("result")
    return JobRead(
        **{k: v for k, v in d.items() if k not in ("done", "total")},
        progress=Progress(done=d["done"], total=d["total"]),
        result=None if result is None else json.loads(result),
    )


# -- jobs (database `integration`) ------------------------------------------------------
async def create_job(conn: WriteConn, kind: str, created_by: int) -> JobRead:
    row = await conn.fetchrow(
        f"INSERT INTO jobs (kind, created_by) VALUES ($1, $2) RETURNING {_JOB}", kind, created_by
    )
    return _job(row)


async def get_job(conn: ReadConn, job_id: int) -> JobRead | None:
    row = await conn.fetchrow(f"SELECT {_JOB} FROM jobs WHERE id = $1", job_id)
    return None if row is None else _job(row)


async def start_job(conn: WriteConn, job_id: int, total: int) -> bool:
    """queued -> running with its total; False when it was cancelled meanwhile."""
    status = await conn.fetchval(
        """UPDATE jobs SET status = 'running', total = $2, updated_at = now()
           WHERE id = $1 AND status = 'queued' RETURNING status""",
        job_id, total,
    )  # fmt: skip
    return status is not None


async def set_progress(conn: WriteConn, job_id: int, done: int) -> bool:
    """False when the job is no longer running (cancelled): the worker stops."""
    status = await conn.fetchval(
        """UPDATE jobs SET done = $2, updated_at = now()
           WHERE id = $1 AND status = 'running' RETURNING status""",
        job_id, done,
    )  # fmt: skip
    return status is not None


async def finish_job(
    conn: WriteConn,
    job_id: int,
    status: JobStatus,
    done: int,
    result: dict[str, Any] | None,
    error: str | None,
) -> JobRead | None:
    """The final state, unless the job already has one (a cancel keeps its status but
    still gets the counts of what was written before it took effect)."""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET status = CASE WHEN status = 'cancelled' THEN status ELSE $2 END,
                   done = $3, result = $4::jsonb, error = COALESCE(error, $5),
                   updated_at = now(), finished_at = now()
            WHERE id = $1 AND finished_at IS NULL RETURNING {_JOB}""",
        job_id, status, done, None if result is None else json.dumps(result), error,
    )  # fmt: skip
    return None if row is None else _job(row)


async def cancel_job(conn: WriteConn, job_id: int) -> JobRead | None:
    """Cancelled if still queued or running; the job as it is either way."""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET status = 'cancelled', updated_at = now()
            WHERE id = $1 AND status IN ('queued', 'running') RETURNING {_JOB}""",
        job_id,
    )
    return _job(row) if row is not None else await get_job(conn, job_id)


async def fail_abandoned(conn: WriteConn, older_than_s: float) -> int:
    """Jobs whose worker stopped reporting (its replica died): failed, not forever
    running. Workers update `updated_at` with every batch."""
    result = await conn.execute(
        """UPDATE jobs SET status = 'failed', error = 'the worker running this job stopped',
                  updated_at = now(), finished_at = now()
           WHERE status IN ('queued', 'running')
             AND updated_at < now() - make_interval(secs => $1)""",
        older_than_s,
    )
    return int(result.split()[-1])


# -- the bulk upsert (database `customer`) ---------------------------------------------
_AUDITED = ("name", "email", "phone", "website", "industry", "tags", "owner_id")
# History in the form `_kit.history.diff` gives other writes: for a new customer
# {field: [null, value]} of each audited field with a value; for an updated one
# {field: [old, new]} of each audited field that differs.
_CREATED_CHANGES = (
    "jsonb_strip_nulls(jsonb_build_object("
    + ", ".join(
        f"'{c}', CASE WHEN up.{c} IS NULL THEN NULL ELSE jsonb_build_array(NULL, up.{c}) END"
        for c in _AUDITED
    )
    + "))"
)
_UPDATED_CHANGES = (
    "(SELECT COALESCE(jsonb_object_agg(f.k, jsonb_build_array(f.o, f.n)), '{}') FROM (VALUES "
    + ", ".join(f"('{c}', to_jsonb(o.{c}), to_jsonb(up.{c}))" for c in _AUDITED)
    + ") AS f(k, o, n) WHERE f.o IS DISTINCT FROM f.n)"
)
_VALUES = ", ".join(_AUDITED)


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in _AUDITED)


_RETURNING = f"RETURNING c.id, {_cols('c')}, (xmax = 0) AS created"


async def upsert_customers(
    conn: WriteConn,
    records: list[tuple[Any, ...]],
    actor_id: int,
    job_id: int,
    owners: list[int] | None = None,
) -> tuple[int, int, int]:
    """Write `records` (RECORD_COLUMNS, all of one logical shard):
    - a row with an external id: insert it, or update the customer with that external
      id where a value differs (an identical row is not touched: no version bump, no
      `updated_at`); a deleted customer named again is restored;
    - a row without one: its `source_key` is a hash of its values, so the same row
      imported again finds the customer it made (restoring it if deleted) instead of
      making a second one;
    - for every customer created, updated or restored: a history row with its changed
      fields, as any other write of a customer makes;
    - one `customer.imported` event naming the ids created and updated (not an event
      per row: a million-row import would otherwise be a million webhook calls, and
      cost the import three times its time; docs/events.md).

    New customers (all of them, in a first import) are COPYed straight into
    `customers` and `record_changes` with ids made by `nextflow_id()`: PostgreSQL
    writes COPY rows a page at a time, where `INSERT ... ON CONFLICT` pays for each row
    (measured: half the database time of an import). The batch is first COPYed whole,
    with no look-up: a key some customer already has fails that COPY (unique index;
    its savepoint is rolled back), and then the keys are looked up, the new rows COPYed
    and the others upserted.

    `owners` (None: anyone) are the users whose customers the importer's write scope
    reaches (`Principal.owners`): a row naming a customer someone else owns is
    refused, never written. Returns (created, updated, refused)."""
    shard = records[0][0]
    created = await _copy_new(conn, shard, records, actor_id)
    updated: list[int] = []
    refused = 0
    if created is None:  # some key exists already
        known = await _known_keys(conn, records)
        if owners is not None:
            reach = set(owners)
            kept = [r for r in records if _key(r) not in known or known[_key(r)] in reach]
            refused, records = len(records) - len(kept), kept
        new = [r for r in records if _key(r) not in known]
        copied = await _copy_new(conn, shard, new, actor_id) if new else []
        # None: a concurrent writer made one of the new keys meanwhile.
        rest = records if copied is None else [r for r in records if _key(r) in known]
        created, updated = await _upsert(conn, rest, actor_id, owners) if rest else ([], [])
        created += copied or []
    if created or updated:
        data = {
            "job_id": str(job_id),
            "created": [str(i) for i in created],
            "updated": [str(i) for i in updated],
        }
        await emit(conn, "customer.imported", "import_job", job_id, data, actor_id, shard=shard)
    return len(created), len(updated), refused


def _key(record: tuple[Any, ...]) -> str:
    """The row's identity across imports (`csvio.ImportRow.key`)."""
    external_id, source_key = record[-2:]
    return f"ext:{external_id}" if external_id is not None else str(source_key)


async def _known_keys(conn: WriteConn, records: list[tuple[Any, ...]]) -> dict[str, int | None]:
    """The keys of `records` that a customer (live or deleted) already has, with
    that customer's owner."""
    rows = await conn.fetch(
        """SELECT external_id, source_key, owner_id FROM customers
           WHERE external_id = ANY($1::text[]) OR source_key = ANY($2::text[])""",
        [r[-2] for r in records if r[-2] is not None],
        [r[-1] for r in records if r[-1] is not None],
    )
    return {_key((r["external_id"], r["source_key"])): r["owner_id"] for r in rows}


async def _copy_new(
    conn: WriteConn, shard: int, records: list[tuple[Any, ...]], actor_id: int
) -> list[int] | None:
    """COPY rows that are new customers, with their "created" history rows; their
    ids, or None when a key turned out to be taken (nothing written)."""
    ids = await conn.fetchval(
        "SELECT array_agg(nextflow_id($1)) FROM generate_series(1, $2)", shard, 2 * len(records)
    )
    n = len(records)
    customers = [(ids[i], *r[1:]) for i, r in enumerate(records)]
    history = [
        (ids[n + i], "customer", ids[i], "created", _created(r), actor_id)
        for i, r in enumerate(records)
    ]
    try:
        async with conn.transaction():  # a savepoint
            await conn.copy_records_to_table(
                "customers", records=customers, columns=("id", *RECORD_COLUMNS[1:])
            )
            await conn.copy_records_to_table(
                "record_changes", records=history, columns=_HISTORY_COLUMNS
            )
    except asyncpg.UniqueViolationError:
        return None
    return list(ids[:n])


_HISTORY_COLUMNS = ("id", "record_type", "record_id", "action", "changes", "actor_id")


def _created(record: tuple[Any, ...]) -> dict[str, list[Any]]:
    """A new customer's history: {field: [None, value]} of each audited field with a
    value (what `_kit.history.diff(None, ...)` gives other creates)."""
    return {c: [None, v] for c, v in zip(_AUDITED, record[1:8], strict=True) if v is not None}


async def _upsert(
    conn: WriteConn, records: list[tuple[Any, ...]], actor_id: int, owners: list[int] | None
) -> tuple[list[int], list[int]]:
    """The rows some customer may already have: COPY into a temp table, then one
    statement upserts them and writes their history; a customer whose owner is not
    in `owners` (None: anyone) is never changed (one made by a concurrent writer since
    the look-up). (created ids, updated ids)."""
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS import_customer_rows (
               shard integer, name text, email text, phone text, website text,
               industry text, tags text[], owner_id bigint, external_id text,
               source_key text
           ) ON COMMIT DELETE ROWS"""
    )
    await conn.copy_records_to_table(
        "import_customer_rows", records=records, columns=RECORD_COLUMNS
    )
    row = await conn.fetchrow(
        f"""WITH by_external_id AS (
               INSERT INTO customers AS c (id, {_VALUES}, external_id)
               SELECT nextflow_id(shard), {_VALUES}, external_id
               FROM import_customer_rows WHERE external_id IS NOT NULL
               ON CONFLICT (external_id) DO UPDATE SET
                   name = EXCLUDED.name, email = EXCLUDED.email, phone = EXCLUDED.phone,
                   website = EXCLUDED.website, industry = EXCLUDED.industry,
                   tags = EXCLUDED.tags, owner_id = EXCLUDED.owner_id, deleted_at = NULL,
                   version = c.version + 1, updated_at = now()
               WHERE (({_cols("c")})
                      IS DISTINCT FROM
                      ({_cols("EXCLUDED")})
                      OR c.deleted_at IS NOT NULL)
                 AND ($2::bigint[] IS NULL OR c.owner_id = ANY($2::bigint[]))
               {_RETURNING}
           ), by_content AS (
               INSERT INTO customers AS c (id, {_VALUES}, source_key)
               SELECT nextflow_id(shard), {_VALUES}, source_key
               FROM import_customer_rows WHERE external_id IS NULL
               ON CONFLICT (source_key) WHERE source_key IS NOT NULL DO UPDATE SET
                   deleted_at = NULL, version = c.version + 1, updated_at = now()
               WHERE c.deleted_at IS NOT NULL
                 AND ($2::bigint[] IS NULL OR c.owner_id = ANY($2::bigint[]))
               {_RETURNING}
           ), up AS (
               SELECT * FROM by_external_id UNION ALL SELECT * FROM by_content
           ), history AS (
               -- `customers` read here is the table before this statement: `o` is an
               -- updated customer's row as it was.
               INSERT INTO record_changes (id, record_type, record_id, action, changes, actor_id)
               SELECT nextflow_id({shard_sql("up.id")}::integer), 'customer', up.id,
                      'created', {_CREATED_CHANGES}, $1::bigint
               FROM up WHERE up.created
               UNION ALL
               SELECT nextflow_id({shard_sql("up.id")}::integer), 'customer', up.id,
                      CASE WHEN o.deleted_at IS NOT NULL THEN 'restored' ELSE 'updated' END,
                      {_UPDATED_CHANGES}, $1::bigint
               FROM up JOIN customers o ON o.id = up.id WHERE NOT up.created
           )
           SELECT COALESCE(array_agg(id) FILTER (WHERE created), '{{}}') AS created,
                  COALESCE(array_agg(id) FILTER (WHERE NOT created), '{{}}') AS updated
           FROM up""",
        actor_id,
        owners,
    )  # fmt: skip
    return list(row["created"]), list(row["updated"])
