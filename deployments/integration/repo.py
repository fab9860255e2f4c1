"""All SQL of the integration service: the `jobs` table (catalog database
`integration`) and the bulk customer upsert (sharded database `customer`). Each
function runs inside the one transaction its ShardManager opened."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

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
async def upsert_customers(
    conn: WriteConn, records: list[tuple[Any, ...]], actor_id: int
) -> tuple[int, int]:
    """COPY `records` (RECORD_COLUMNS, all of one logical shard) into a temp table, then
    insert them, or update the customer with the same external id where a value
    differs (an identical row is not touched: no version bump, no `updated_at`).
    A deleted customer named again is restored. One history row per created or
    updated customer. Returns (created, updated)."""
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS import_rows (
               shard integer, name text, email text, phone text, website text,
               industry text, tags text[], owner_id bigint, external_id text
           ) ON COMMIT DELETE ROWS"""
    )
    await conn.copy_records_to_table("import_rows", records=records, columns=RECORD_COLUMNS)
    row = await conn.fetchrow(
        f"""WITH up AS (
               INSERT INTO customers AS c
                   (id, name, email, phone, website, industry, tags, owner_id, external_id)
               SELECT nextflow_id(shard), name, email, phone, website, industry, tags,
                      owner_id, external_id
               FROM import_rows
               ON CONFLICT (external_id) DO UPDATE SET
                   name = EXCLUDED.name, email = EXCLUDED.email, phone = EXCLUDED.phone,
                   website = EXCLUDED.website, industry = EXCLUDED.industry,
                   tags = EXCLUDED.tags, owner_id = EXCLUDED.owner_id, deleted_at = NULL,
                   version = c.version + 1, updated_at = now()
               WHERE (c.name, c.email, c.phone, c.website, c.industry, c.tags, c.owner_id)
                     IS DISTINCT FROM
                     (EXCLUDED.name, EXCLUDED.email, EXCLUDED.phone, EXCLUDED.website,
                      EXCLUDED.industry, EXCLUDED.tags, EXCLUDED.owner_id)
                  OR c.deleted_at IS NOT NULL
               RETURNING c.id, (xmax = 0) AS created
           ), history AS (
               INSERT INTO record_changes (id, record_type, record_id, action, changes, actor_id)
               SELECT nextflow_id({shard_sql("id")}::integer), 'customer', id,
                      CASE WHEN created THEN 'created' ELSE 'updated' END,
                      '{{"source": "import"}}'::jsonb, $1
               FROM up
           )
           SELECT count(*) FILTER (WHERE created) AS created,
                  count(*) FILTER (WHERE NOT created) AS updated
           FROM up""",
        actor_id,
    )
    return int(row["created"]), int(row["updated"])
