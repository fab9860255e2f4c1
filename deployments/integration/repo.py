"""All SQL of the integration service: the `jobs` table (catalog database
`integration`) and the bulk customer upsert (sharded database `customer`). Each
function runs inside the one transaction its ShardManager opened."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson
from pydantic import BaseModel, Field

from deployments._kit.events import emit
from deployments._kit.types import Id
from deployments.integration.csvio import AUDITED, COPY_COLUMNS, ShardBatch
from shards import ReadConn, WriteConn, single_statement
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
        # Rows written before results were stored as objects hold them as JSON text.
        result=json.loads(result) if isinstance(result, str) else result,
    )


# -- jobs (database `integration`) ------------------------------------------------------
async def create_job(conn: WriteConn, kind: str, created_by: int) -> JobRead:
    row = await conn.fetchrow(
        f"INSERT INTO jobs (kind, created_by) VALUES ($1, $2) RETURNING {_JOB}", kind, created_by
    )
    return _job(row)


async def create_job_capped(
    conn: WriteConn, kind: str, created_by: int, max_running: int
) -> JobRead | None:
    """A new queued job; None when `created_by` already has `max_running` jobs of this
    kind queued or running (counted under a lock per user and kind, so two requests at
    once cannot both pass)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('jobs:' || $1::text), hashtext($2::bigint::text))",
        kind, created_by,
    )  # fmt: skip
    running = await conn.fetchval(
        """SELECT count(*) FROM jobs
           WHERE kind = $1 AND created_by = $2 AND status IN ('queued', 'running')""",
        kind, created_by,
    )  # fmt: skip
    if running >= max_running:
        return None
    return await create_job(conn, kind, created_by)


@single_statement
async def get_job(conn: ReadConn, job_id: int) -> JobRead | None:
    row = await conn.fetchrow(f"SELECT {_JOB} FROM jobs WHERE id = $1", job_id)
    return None if row is None else _job(row)


async def start_job(conn: WriteConn, job_id: int, total: int | None) -> bool:
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
        job_id, status, done, result, error,
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


@single_statement
async def exports_to_remove(conn: ReadConn, kind: str, older_than_s: float) -> list[int]:
    """Succeeded jobs of `kind` that ended longer ago than that and still have a file."""
    rows = await conn.fetch(
        """SELECT id FROM jobs
           WHERE kind = $1 AND status = 'succeeded' AND result ? 'file_url'
             AND finished_at < now() - make_interval(secs => $2)
           ORDER BY id LIMIT 1000""",
        kind, older_than_s,
    )  # fmt: skip
    return [r["id"] for r in rows]


async def forget_file(conn: WriteConn, job_id: int) -> None:
    """The job's file was removed: its result no longer points at it."""
    await conn.execute(
        """UPDATE jobs SET result = result - 'file_url' || '{"file_removed": true}'::jsonb
           WHERE id = $1""",
        job_id,
    )


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
# History in the form `_kit.history.diff` gives other writes: for a new customer
# {field: [null, value]} of each audited field with a value; for an updated one
# {field: [old, new]} of each audited field that differs.
_CREATED_CHANGES = (
    "jsonb_strip_nulls(jsonb_build_object("
    + ", ".join(
        f"'{c}', CASE WHEN up.{c} IS NULL THEN NULL ELSE jsonb_build_array(NULL, up.{c}) END"
        for c in AUDITED
    )
    + "))"
)
_UPDATED_CHANGES = (
    "(SELECT COALESCE(jsonb_object_agg(f.k, jsonb_build_array(f.o, f.n)), '{}') FROM (VALUES "
    + ", ".join(f"('{c}', to_jsonb(o.{c}), to_jsonb(up.{c}))" for c in AUDITED)
    + ") AS f(k, o, n) WHERE f.o IS DISTINCT FROM f.n)"
)
_VALUES = ", ".join(AUDITED)


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in AUDITED)


_RETURNING = f"RETURNING c.id, {_cols('c')}, (xmax = 0) AS created"
# An updated row's own custom field values (not the defaults its insert would add).
_GIVEN = (
    "(SELECT r.custom_fields FROM import_customer_rows r"
    " WHERE r.external_id = EXCLUDED.external_id LIMIT 1)"
)


async def upsert_customers(
    conn: WriteConn,
    batch: ShardBatch,
    actor_id: int,
    job_id: int,
    owners: list[int] | None = None,
) -> tuple[int, int, int]:
    """Write the rows of `batch` (all of one logical shard):
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
    shard = batch.shard
    everything = range(len(batch.rows))
    created = await _copy_new(conn, batch, everything, actor_id)
    updated: list[int] = []
    refused = 0
    if created is None:  # some key exists already
        known = await _known_keys(conn, batch.keys)
        reach = None if owners is None else set(owners)
        keys = batch.keys
        kept = [i for i in everything if keys[i] not in known or reach is None
                or known[keys[i]] in reach]  # fmt: skip
        refused = len(batch.rows) - len(kept)
        new = [i for i in kept if keys[i] not in known]
        copied = await _copy_new(conn, batch, new, actor_id) if new else []
        # None: a concurrent writer made one of the new keys meanwhile.
        rest = kept if copied is None else [i for i in kept if keys[i] in known]
        created, updated = await _upsert(conn, batch, rest, actor_id, owners) if rest else ([], [])
        created += copied or []
    if created or updated:
        data = {
            "job_id": str(job_id),
            "created": [str(i) for i in created],
            "updated": [str(i) for i in updated],
        }
        await emit(conn, "customer.imported", "import_job", job_id, data, actor_id, shard=shard)
    return len(created), len(updated), refused


async def _known_keys(conn: WriteConn, keys: list[str]) -> dict[str, int | None]:
    """Those of `keys` (`ImportRow.key`) that a customer (live or deleted) already
    has, with that customer's owner."""
    external_ids = [k[4:] for k in keys if k.startswith("ext:")]
    source_keys = [k for k in keys if not k.startswith("ext:")]
    rows = await conn.fetch(
        """SELECT external_id, source_key, owner_id FROM customers
           WHERE external_id = ANY($1::text[]) OR source_key = ANY($2::text[])""",
        external_ids,
        source_keys,
    )
    known: dict[str, int | None] = {}
    for r in rows:
        key = f"ext:{r['external_id']}" if r["external_id"] is not None else r["source_key"]
        known[key] = r["owner_id"]
    return known


async def _copy_new(
    conn: WriteConn, batch: ShardBatch, rows: Sequence[int], actor_id: int
) -> list[int] | None:
    """COPY the rows of `batch` at indexes `rows`, new customers, with their "created"
    history rows; their ids, or None when a key turned out to be taken (nothing
    written).

    A new customer's "created" history row takes the customer's own id: ids are made
    once, by one generator per database (`nextflow_ids`), so no other history row can
    ever have it, and a second id per row was about a tenth of the database's time for
    a batch (measured: 1.4-2.4 us an id on this machine's PostgreSQL 15)."""
    ids = await conn.fetchval("SELECT nextflow_ids($1, $2)", batch.shard, len(rows))
    customers = "".join(f"{ids[j]},{batch.rows[i]}\n" for j, i in enumerate(rows))
    history = "".join(
        f"{ids[j]},customer,{ids[j]},created,{batch.created[i]},{actor_id}\n"
        for j, i in enumerate(rows)
    )
    try:
        async with conn.transaction():  # a savepoint
            await _copy(conn, "customers", ("id", *COPY_COLUMNS), customers)
            await _copy(conn, "record_changes", _HISTORY_COLUMNS, history)
    except asyncpg.UniqueViolationError:
        return None
    if batch.defaults != "{}":  # the custom fields' defaults, under the rows' own values
        await conn.execute(
            "UPDATE customers SET custom_fields = $1::jsonb || custom_fields"
            " WHERE id = ANY($2::bigint[])",
            orjson.loads(batch.defaults), list(ids),
        )  # fmt: skip
    return list(ids)


_HISTORY_COLUMNS = ("id", "record_type", "record_id", "action", "changes", "actor_id")


async def _copy(conn: WriteConn, table: str, columns: Sequence[str], csv_text: str) -> None:
    await conn.copy_to_table(
        table, source=io.BytesIO(csv_text.encode()), columns=list(columns), format="csv"
    )


async def _upsert(
    conn: WriteConn,
    batch: ShardBatch,
    rows: Sequence[int],
    actor_id: int,
    owners: list[int] | None,
) -> tuple[list[int], list[int]]:
    """The rows of `batch` at indexes `rows`, which some customer may already have:
    COPY into a temp table, then one statement upserts them and writes their history;
    a customer whose owner is not in `owners` (None: anyone) is never changed (one made
    by a concurrent writer since the look-up). (created ids, updated ids)."""
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS import_customer_rows (
               shard integer, name text, email text, phone text, website text,
               industry text, tags text[], owner_id bigint, custom_fields jsonb,
               external_id text, source_key text
           ) ON COMMIT DELETE ROWS"""
    )
    records = "".join(f"{batch.shard},{batch.rows[i]}\n" for i in rows)
    await _copy(conn, "import_customer_rows", ("shard", *COPY_COLUMNS), records)
    row = await conn.fetchrow(
        f"""WITH by_external_id AS (
               INSERT INTO customers AS c (id, {_VALUES}, custom_fields, external_id)
               SELECT nextflow_id(shard), {_VALUES}, $3::jsonb || custom_fields, external_id
               FROM import_customer_rows WHERE external_id IS NOT NULL
               ON CONFLICT (external_id) DO UPDATE SET
                   name = EXCLUDED.name, email = EXCLUDED.email, phone = EXCLUDED.phone,
                   website = EXCLUDED.website, industry = EXCLUDED.industry,
                   tags = EXCLUDED.tags, owner_id = EXCLUDED.owner_id,
                   custom_fields = c.custom_fields || {_GIVEN},
                   deleted_at = NULL, version = c.version + 1, updated_at = now()
               WHERE (({_cols("c")})
                      IS DISTINCT FROM
                      ({_cols("EXCLUDED")})
                      OR NOT c.custom_fields @> {_GIVEN}
                      OR c.deleted_at IS NOT NULL)
                 AND ($2::bigint[] IS NULL OR c.owner_id = ANY($2::bigint[]))
               {_RETURNING}
           ), by_content AS (
               INSERT INTO customers AS c (id, {_VALUES}, custom_fields, source_key)
               SELECT nextflow_id(shard), {_VALUES}, $3::jsonb || custom_fields, source_key
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
        orjson.loads(batch.defaults),  # a dict: the pools encode jsonb values as JSON
    )  # fmt: skip
    return list(row["created"]), list(row["updated"])
