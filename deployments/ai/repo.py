"""All SQL of the AI service: leads on their marketing shards (read for training and
scoring, scores written back), models in the catalog database `ai`, and the AI jobs'
own rows in the shared `jobs` table (database `integration`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

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


# -- search texts (databases `customer` and `support`, one logical shard per call) -----
# `owners`: per kind, the users whose records the caller's read scope reaches (a kind
# not named: every record; `Principal.owners`).
async def customer_texts(
    conn: ReadConn, shard: int, kinds: list[str], owners: Mapping[str, list[int]] | None = None
) -> list[tuple[str, int, dict[str, Any]]]:
    owners = owners or {}
    out: list[tuple[str, int, dict[str, Any]]] = []
    if "customer" in kinds:
        scope = "owner_id = ANY($2::bigint[])" if "customer" in owners else "$2::bigint[] IS NULL"
        rows = await conn.fetch(
            f"""SELECT id, name, email, website, industry, tags FROM customers
                WHERE deleted_at IS NULL AND {shard_sql("id")} = $1 AND {scope}""",
            shard,
            owners.get("customer"),
        )
        out += [("customer", int(r["id"]), dict(r)) for r in rows]
    if "contact" in kinds:
        scope = (
            """EXISTS (SELECT 1 FROM customers p WHERE p.id = c.customer_id
                       AND p.owner_id = ANY($2::bigint[]))"""
            if "contact" in owners
            else "$2::bigint[] IS NULL"
        )
        rows = await conn.fetch(
            f"""SELECT id, first_name, last_name, email, title, phone FROM contacts c
                WHERE deleted_at IS NULL AND {shard_sql("id")} = $1 AND {scope}""",
            shard,
            owners.get("contact"),
        )
        out += [("contact", int(r["id"]), dict(r)) for r in rows]
    return out


async def ticket_texts(
    conn: ReadConn, shard: int, owners: Mapping[str, list[int]] | None = None
) -> list[tuple[str, int, dict[str, Any]]]:
    mine = (owners or {}).get("ticket")
    scope = "assignee_id = ANY($2::bigint[])" if mine is not None else "$2::bigint[] IS NULL"
    rows = await conn.fetch(
        f"""SELECT id, subject, description FROM tickets
            WHERE deleted_at IS NULL AND {shard_sql("id")} = $1 AND {scope}""",
        shard,
        mine,
    )
    return [("ticket", int(r["id"]), dict(r)) for r in rows]
