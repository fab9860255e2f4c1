"""All SQL of the sales service. Each function runs inside the one transaction that
the ShardManager opened: pipelines in the unsharded `sales_config` database on the
catalog server, deals on their customer's shard of the `sales` database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from deployments._kit.custom_fields import CustomSort, TypedFilter, filter_sql
from deployments._kit.events import emit, record_data
from deployments._kit.history import diff, record_change
from deployments._kit.sql import (
    Denied,
    Params,
    Stale,
    by_id,
    denied,
    keyset_page,
    locked_row,
    on_shards,
    owned_by,
)
from deployments._kit.timeline import TimelineItem, Window
from deployments._kit.timeline import fetch as fetch_timeline
from deployments._kit.timeline import source as timeline_source
from deployments._kit.types import Money
from deployments._kit.versioned import (
    Updated,
    Versioned,
    restore_row,
    soft_delete_row,
    update_row,
)
from deployments.sales.rules import Transition, weighted_amount
from deployments.sales.schemas import (
    ComputedMoney,
    DealListQuery,
    DealRead,
    OrderLineRead,
    OrderListQuery,
    OrderRead,
    PipelineCreate,
    PipelineListQuery,
    PipelineRead,
    StageChangeRead,
    StageCreate,
    StageRead,
)
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement
from shards.ids import shard_sql


@dataclass(frozen=True)
class Refused:
    """A write the data's own rules refuse (the service turns it into a 409/422)."""

    field: str
    reason: str


# -- pipelines (sales_config) --------------------------------------------------------
_PIPELINE = "id, name, is_default, version, created_at, updated_at"
_STAGE = "id, pipeline_id, name, position, probability, kind, version, created_at, updated_at"
_PIPELINE_UPDATABLE = {"name", "is_default"}
_STAGE_UPDATABLE = {"name", "probability", "kind"}
# Audited (change history, on the pipeline); a stage's changes go to its pipeline
# as `stage_added` / `stage_updated`, with the stage's id under "stage_id".
PIPELINE_AUDITED = ("name", "is_default")
STAGE_AUDITED = ("name", "position", "probability", "kind")


async def _pipeline_change(
    conn: WriteConn,
    pipeline_id: int,
    action: str,
    changes: dict[str, list[Any]],
    actor_id: int | None,
) -> None:
    await record_change(conn, "pipeline", pipeline_id, action, changes, actor_id, sharded=False)


async def _stage_change(
    conn: WriteConn,
    pipeline_id: int,
    stage_id: int,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    actor_id: int | None,
) -> None:
    changed = diff(before, after, STAGE_AUDITED)
    if changed:
        ref = str(stage_id)
        changes = {"stage_id": [None if before is None else ref, ref], **changed}
        await _pipeline_change(conn, pipeline_id, action, changes, actor_id)


async def _clear_default(conn: WriteConn, actor_id: int | None, keep: int | None = None) -> None:
    """The current default pipeline (other than `keep`) stops being the default."""
    cleared = await conn.fetch(
        "UPDATE pipelines SET is_default = false, version = version + 1, updated_at = now()"
        " WHERE is_default AND deleted_at IS NULL AND id IS DISTINCT FROM $1 RETURNING id",
        keep,
    )
    for row in cleared:
        await _pipeline_change(conn, row["id"], "updated", {"is_default": [True, False]}, actor_id)


async def _stages(conn: ReadConn, pipeline_ids: list[int]) -> dict[int, list[StageRead]]:
    rows = await conn.fetch(
        f"""SELECT {_STAGE} FROM pipeline_stages
            WHERE pipeline_id = ANY($1::bigint[]) AND deleted_at IS NULL
            ORDER BY pipeline_id, position, id""",
        pipeline_ids,
    )
    out: dict[int, list[StageRead]] = {i: [] for i in pipeline_ids}
    for r in rows:
        out[r["pipeline_id"]].append(StageRead.model_validate(dict(r)))
    return out


async def _pipelines(conn: ReadConn, rows: list[asyncpg.Record]) -> list[PipelineRead]:
    stages = await _stages(conn, [r["id"] for r in rows])
    return [PipelineRead.model_validate({**dict(r), "stages": stages[r["id"]]}) for r in rows]


async def get_pipeline(conn: ReadConn, pipeline_id: int) -> PipelineRead | None:
    row = await conn.fetchrow(
        f"SELECT {_PIPELINE} FROM pipelines WHERE id = $1 AND deleted_at IS NULL", pipeline_id
    )
    return None if row is None else (await _pipelines(conn, [row]))[0]


async def get_pipeline_any(conn: ReadConn, pipeline_id: int) -> PipelineRead | None:
    """Also a soft-deleted pipeline: the deals already in it still move within it."""
    row = await conn.fetchrow(f"SELECT {_PIPELINE} FROM pipelines WHERE id = $1", pipeline_id)
    return None if row is None else (await _pipelines(conn, [row]))[0]


async def get_default_pipeline(conn: ReadConn) -> PipelineRead | None:
    row = await conn.fetchrow(
        f"SELECT {_PIPELINE} FROM pipelines WHERE is_default AND deleted_at IS NULL"
    )
    return None if row is None else (await _pipelines(conn, [row]))[0]


async def list_pipelines(
    conn: ReadConn, query: PipelineListQuery, order: Order, position: Position | None
) -> list[PipelineRead]:
    params = Params()
    where = ["deleted_at IS NULL"]
    sql = keyset_page(
        "pipelines", _PIPELINE, where, "created_at", order, position, query.limit, params
    )
    rows = await conn.fetch(sql, *params.values)
    return await _pipelines(conn, list(rows))


async def create_pipeline(
    conn: WriteConn, data: PipelineCreate, actor_id: int | None
) -> PipelineRead:
    if data.is_default:
        await _clear_default(conn, actor_id)
    pipeline_id = await conn.fetchval(
        "INSERT INTO pipelines (name, is_default) VALUES ($1, $2) RETURNING id",
        data.name,
        data.is_default,
    )
    await conn.executemany(
        """INSERT INTO pipeline_stages (pipeline_id, name, position, probability, kind)
           VALUES ($1, $2, $3, $4, $5)""",
        [
            (pipeline_id, s.name, i, s.probability, s.kind)
            for i, s in enumerate(data.stages, start=1)
        ],
    )
    created = await get_pipeline(conn, pipeline_id)
    assert created is not None
    changes = diff(None, created.model_dump(), PIPELINE_AUDITED)
    await _pipeline_change(conn, pipeline_id, "created", changes, actor_id)
    return created


async def _lock_pipeline(conn: WriteConn, pipeline_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, name, version, is_default FROM pipelines"
        " WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        pipeline_id,
    )
    return row


async def _touch(conn: WriteConn, pipeline_id: int) -> None:
    await conn.execute(
        "UPDATE pipelines SET version = version + 1, updated_at = now() WHERE id = $1",
        pipeline_id,
    )


async def update_pipeline(
    conn: WriteConn,
    pipeline_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
) -> PipelineRead | Stale | None:
    locked = await _lock_pipeline(conn, pipeline_id)
    if locked is None:
        return None
    if if_version is not None and locked["version"] != if_version:
        return Stale(locked["version"])
    if changes.get("is_default"):
        await _clear_default(conn, actor_id, keep=pipeline_id)
    params = Params()
    sets = [f"{k} = {params(v)}" for k, v in changes.items() if k in _PIPELINE_UPDATABLE]
    sets += ["version = version + 1", "updated_at = now()"]
    await conn.execute(
        f"UPDATE pipelines SET {', '.join(sets)} WHERE id = {params(pipeline_id)}", *params.values
    )
    updated = await get_pipeline(conn, pipeline_id)
    assert updated is not None
    changed = diff(dict(locked), updated.model_dump(), PIPELINE_AUDITED)
    await _pipeline_change(conn, pipeline_id, "updated", changed, actor_id)
    return updated


async def delete_pipeline(
    conn: WriteConn, pipeline_id: int, if_version: int | None, actor_id: int | None
) -> PipelineRead | Stale | Refused | None:
    """Soft delete; the default pipeline is refused (make another one default first)."""
    locked = await _lock_pipeline(conn, pipeline_id)
    if locked is None:
        return None
    if if_version is not None and locked["version"] != if_version:
        return Stale(locked["version"])
    if locked["is_default"]:
        return Refused("id", "the default pipeline cannot be deleted; make another default first")
    before = await get_pipeline(conn, pipeline_id)
    row = await conn.fetchrow(
        f"""UPDATE pipelines SET deleted_at = now(), version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {_PIPELINE}""",
        pipeline_id,
    )
    assert before is not None
    await _pipeline_change(conn, pipeline_id, "deleted", {}, actor_id)
    return PipelineRead.model_validate({**dict(row), "stages": before.stages})


async def restore_pipeline(
    conn: WriteConn, pipeline_id: int, actor_id: int | None
) -> PipelineRead | None:
    restored = await conn.fetchval(
        """UPDATE pipelines SET deleted_at = NULL, version = version + 1, updated_at = now()
           WHERE id = $1 AND deleted_at IS NOT NULL RETURNING id""",
        pipeline_id,
    )
    if restored is not None:
        await _pipeline_change(conn, pipeline_id, "restored", {}, actor_id)
    return await get_pipeline(conn, pipeline_id)


async def _renumber(conn: WriteConn, pipeline_id: int, ordered: list[int]) -> None:
    await conn.execute(
        """UPDATE pipeline_stages s SET position = o.position
           FROM unnest($1::bigint[]) WITH ORDINALITY AS o (id, position)
           WHERE s.id = o.id AND s.pipeline_id = $2 AND s.position <> o.position""",
        ordered,
        pipeline_id,
    )


async def _stage_order(conn: WriteConn, pipeline_id: int) -> list[int]:
    rows = await conn.fetch(
        """SELECT id FROM pipeline_stages WHERE pipeline_id = $1 AND deleted_at IS NULL
           ORDER BY position, id""",
        pipeline_id,
    )
    return [r["id"] for r in rows]


async def add_stage(
    conn: WriteConn, pipeline_id: int, data: StageCreate, actor_id: int | None
) -> PipelineRead | None:
    """Insert a stage at `position` (default: last), renumbering the others."""
    if await _lock_pipeline(conn, pipeline_id) is None:
        return None
    ordered = await _stage_order(conn, pipeline_id)
    stage_id = await conn.fetchval(
        """INSERT INTO pipeline_stages (pipeline_id, name, position, probability, kind)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        pipeline_id,
        data.name,
        len(ordered) + 1,
        data.probability,
        data.kind,
    )
    at = min(data.position or len(ordered) + 1, len(ordered) + 1)
    ordered.insert(at - 1, stage_id)
    await _renumber(conn, pipeline_id, ordered)
    await _touch(conn, pipeline_id)
    pipeline = await get_pipeline(conn, pipeline_id)
    assert pipeline is not None
    added = pipeline.stage(stage_id)
    assert added is not None
    await _stage_change(
        conn, pipeline_id, stage_id, "stage_added", None, added.model_dump(), actor_id
    )
    return pipeline


async def update_stage(
    conn: WriteConn,
    pipeline_id: int,
    stage_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
) -> PipelineRead | Stale | Refused | None:
    """Rename, re-weight, re-kind or move (`position`) one stage; `if_version` is the
    stage's version. A pipeline keeps at least one open stage."""
    if await _lock_pipeline(conn, pipeline_id) is None:
        return None
    stage = await conn.fetchrow(
        f"""SELECT {_STAGE} FROM pipeline_stages
           WHERE id = $1 AND pipeline_id = $2 AND deleted_at IS NULL""",
        stage_id,
        pipeline_id,
    )
    if stage is None:
        return None
    if if_version is not None and stage["version"] != if_version:
        return Stale(stage["version"])
    if changes.get("kind", "open") != "open" and stage["kind"] == "open":
        others = await conn.fetchval(
            """SELECT count(*) FROM pipeline_stages WHERE pipeline_id = $1 AND id <> $2
               AND kind = 'open' AND deleted_at IS NULL""",
            pipeline_id,
            stage_id,
        )
        if not others:
            return Refused("kind", "a pipeline needs at least one open stage")
    params = Params()
    sets = [f"{k} = {params(v)}" for k, v in changes.items() if k in _STAGE_UPDATABLE]
    sets += ["version = version + 1", "updated_at = now()"]
    await conn.execute(
        f"UPDATE pipeline_stages SET {', '.join(sets)} WHERE id = {params(stage_id)}",
        *params.values,
    )
    if changes.get("position") is not None:
        ordered = [i for i in await _stage_order(conn, pipeline_id) if i != stage_id]
        ordered.insert(min(changes["position"], len(ordered) + 1) - 1, stage_id)
        await _renumber(conn, pipeline_id, ordered)
    await _touch(conn, pipeline_id)
    pipeline = await get_pipeline(conn, pipeline_id)
    assert pipeline is not None
    after = pipeline.stage(stage_id)
    assert after is not None
    await _stage_change(
        conn, pipeline_id, stage_id, "stage_updated", dict(stage), after.model_dump(), actor_id
    )
    return pipeline


# -- deals (sales, on the customer's shard) ----------------------------------------
_DEAL = (
    "id, customer_id, contact_id, name, amount, currency, pipeline_id, stage_id, probability,"
    " status, close_reason, closed_at, owner_id, expected_close_date, source_key,"
    " stage_entered_at, custom_fields, version, created_at, updated_at"
)
_STAGE_CHANGE = (
    "id, deal_id, from_pipeline_id, from_stage_id, to_pipeline_id, to_stage_id, probability,"
    " status, changed_by, changed_at, seconds_in_previous_stage"
)
# Audited (change history) under their API names.
DEAL_AUDITED = (
    "name",
    "amount",
    "currency",
    "stage_id",
    "pipeline_id",
    "owner_id",
    "probability",
    "status",
    "expected_close_date",
)
_ID_FIELDS = ("stage_id", "pipeline_id", "owner_id")
DEAL_UPDATABLE = {
    "contact_id",
    "name",
    "amount",
    "currency",
    "probability",
    "owner_id",
    "expected_close_date",
    "custom_fields",
}
_NO_CLOSE_DATE = date.max  # NULL close dates sort last (ascending)
_DEAL_SORT = {
    "created_at": "created_at",
    "amount": "amount",
    "expected_close_date": "COALESCE(expected_close_date, DATE '9999-12-31')",
}
# Deals as the shared versioned-row helper sees them (deployments/_kit/versioned.py).
_DEALS = Versioned("deals", _DEAL, frozenset(DEAL_UPDATABLE))


def _deal(row: asyncpg.Record) -> DealRead:
    data = dict(row)
    amount, currency = data.pop("amount"), data.pop("currency").strip()
    data["amount"] = Money(amount=amount, currency=currency)
    data["weighted_amount"] = ComputedMoney(
        amount=weighted_amount(amount, data["probability"]), currency=currency
    )
    return DealRead.model_validate(data)


def _audited(row: asyncpg.Record) -> dict[str, Any]:
    """The audited fields of a row, ids as strings (JSON-safe)."""
    out = {name: row[name] for name in DEAL_AUDITED}
    out["currency"] = out["currency"].strip()
    for name in _ID_FIELDS:
        out[name] = None if out[name] is None else str(out[name])
    return out


async def create_deal(
    conn: WriteConn,
    shard: int,
    values: dict[str, Any],
    actor_id: int | None,
) -> DealRead:
    """Insert a deal on `shard` with its first stage-history row. With a `source_key`
    already used, nothing is written and that earlier deal is returned."""
    columns = list(values)
    params = Params()
    placeholders = ", ".join(params(values[c]) for c in columns)
    row = await conn.fetchrow(
        f"""INSERT INTO deals (id, {", ".join(columns)})
            VALUES (nextflow_id({params(shard)}), {placeholders})
            ON CONFLICT (source_key) WHERE source_key IS NOT NULL DO NOTHING
            RETURNING {_DEAL}""",
        *params.values,
    )
    if row is None:
        row = await conn.fetchrow(
            f"SELECT {_DEAL} FROM deals WHERE source_key = $1", values["source_key"]
        )
        return _deal(row)
    await _record_stage_change(conn, row, None, actor_id)
    await record_change(
        conn, "deal", row["id"], "created", diff(None, _audited(row), DEAL_AUDITED), actor_id
    )
    deal = _deal(row)
    await _emit_deal(conn, "deal.created", deal, actor_id)
    return deal


async def _emit_deal(
    conn: WriteConn,
    type: str,
    deal: DealRead,
    actor_id: int | None,
    changes: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    data = record_data("deal", deal, changes, **extra)
    await emit(conn, type, "deal", deal.id, data, actor_id)


async def _record_stage_change(
    conn: WriteConn, row: asyncpg.Record, before: asyncpg.Record | None, actor_id: int | None
) -> None:
    await conn.execute(
        f"""INSERT INTO deal_stage_changes
               (id, deal_id, from_pipeline_id, from_stage_id, to_pipeline_id, to_stage_id,
                probability, status, changed_by, seconds_in_previous_stage)
            VALUES (nextflow_id({shard_sql("$1::bigint")}::int), $1, $2, $3, $4, $5, $6, $7,
                    $8, EXTRACT(EPOCH FROM now() - $9::timestamptz)::float8)""",
        row["id"],
        None if before is None else before["pipeline_id"],
        None if before is None else before["stage_id"],
        row["pipeline_id"],
        row["stage_id"],
        row["probability"],
        row["status"],
        actor_id,
        None if before is None else before["stage_entered_at"],
    )


@single_statement
async def get_deal(
    conn: ReadConn, deal_id: int, owners: frozenset[int] | None = None
) -> DealRead | None:
    """The live deal, if `owners` (None: anyone) holds its owner."""
    params = Params()
    where = by_id(params, deal_id, "owner_id", owners)
    row = await conn.fetchrow(
        f"SELECT {_DEAL} FROM deals WHERE {' AND '.join(where)}", *params.values
    )
    return None if row is None else _deal(row)


@single_statement
async def get_deal_by_source_key(conn: ReadConn, source_key: str) -> DealRead | None:
    """The deal made with `source_key`, whoever owns it (idempotent creates)."""
    row = await conn.fetchrow(f"SELECT {_DEAL} FROM deals WHERE source_key = $1", source_key)
    return None if row is None else _deal(row)


async def previous_stage(conn: ReadConn, deal_id: int) -> int | None:
    """The stage a closed deal was in before it closed (for reopening)."""
    value = await conn.fetchval(
        """SELECT from_stage_id FROM deal_stage_changes
           WHERE deal_id = $1 AND status <> 'open' ORDER BY changed_at DESC, id DESC LIMIT 1""",
        deal_id,
    )
    return None if value is None else int(value)


async def update_deal(
    conn: WriteConn,
    deal_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> DealRead | Stale | Denied | None:
    """The deal as updated, Stale for a stale `if_version`, Denied when its owner is
    outside `owners` (None: anyone), None when absent."""
    found = await update_row(conn, _DEALS, deal_id, changes, if_version, owners)
    if not isinstance(found, Updated):
        return found
    before, row = found.before, found.after
    changed = diff(_audited(before), _audited(row), DEAL_AUDITED)
    await record_change(conn, "deal", deal_id, "updated", changed, actor_id)
    deal = _deal(row)
    await _emit_deal(conn, "deal.updated", deal, actor_id, changed)
    return deal


async def transition_deal(
    conn: WriteConn,
    deal_id: int,
    to: Transition,
    action: str,
    expected_version: int,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> DealRead | Stale | Denied | None:
    """Apply a planned stage/status change, if the deal is still at `expected_version`
    (the version the plan was made from) and its owner in `owners` (None: anyone;
    else Denied); records stage history and change history."""
    before = await locked_row(conn, "deals", _DEAL, deal_id, expected_version, "owner_id", owners)
    if before is None or isinstance(before, Stale | Denied):
        return before
    row = await conn.fetchrow(
        f"""UPDATE deals SET
               pipeline_id = $2, stage_id = $3, probability = $4, status = $5,
               close_reason = $6,
               closed_at = CASE WHEN $5 = 'open' THEN NULL ELSE now() END,
               stage_entered_at = CASE WHEN stage_id = $3 AND pipeline_id = $2
                                       THEN stage_entered_at ELSE now() END,
               version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {_DEAL}""",
        deal_id,
        to.pipeline_id,
        to.stage_id,
        to.probability,
        to.status,
        to.close_reason,
    )
    if (row["stage_id"], row["status"]) != (before["stage_id"], before["status"]):
        await _record_stage_change(conn, row, before, actor_id)
    changed = diff(_audited(before), _audited(row), DEAL_AUDITED)
    await record_change(conn, "deal", deal_id, action, changed, actor_id)
    deal = _deal(row)
    type = {"won": "deal.won", "lost": "deal.lost"}.get(row["status"], "deal.stage_changed")
    if row["status"] == before["status"] and type != "deal.stage_changed":
        type = "deal.stage_changed"  # a won/lost deal moved between closed stages
    await _emit_deal(
        conn, type, deal, actor_id, changed, action=action,
        from_stage_id=str(before["stage_id"]), to_stage_id=str(row["stage_id"]),
    )  # fmt: skip
    return deal


async def delete_deal(
    conn: WriteConn,
    deal_id: int,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> DealRead | Stale | Denied | None:
    """The deal as deleted, Stale for a stale `if_version`, Denied when its owner is
    outside `owners` (None: anyone), None when absent."""
    row = await soft_delete_row(conn, _DEALS, deal_id, if_version, owners)
    if row is None or isinstance(row, Stale | Denied):
        return row
    await record_change(conn, "deal", deal_id, "deleted", {}, actor_id)
    return _deal(row)


async def restore_deal(
    conn: WriteConn, deal_id: int, actor_id: int | None, owners: frozenset[int] | None = None
) -> DealRead | None:
    """The restored deal (or the live one); None when absent or its owner is outside
    `owners`."""
    row = await restore_row(conn, _DEALS, deal_id, owners)
    if row is None:
        return await get_deal(conn, deal_id, owners)
    await record_change(conn, "deal", deal_id, "restored", {}, actor_id)
    return _deal(row)


def _deal_filters(
    query: DealListQuery,
    shards: list[int],
    owners: frozenset[int] | None,
    params: Params,
    custom: Sequence[TypedFilter] = (),
) -> list[str]:
    where = [
        "deleted_at IS NULL", on_shards(params, shards),
        *filter_sql(params, "custom_fields", custom),
    ]  # fmt: skip
    if scope := owned_by("owner_id", owners, params):
        where.append(scope)
    for name in ("status", "pipeline_id", "stage_id", "owner_id", "customer_id"):
        value = getattr(query, name)
        if value is not None:
            where.append(f"{name} = {params(value)}")
    bounds = (
        ("amount", ">=", query.amount_gte),
        ("amount", "<=", query.amount_lte),
        ("expected_close_date", ">=", query.close_from),
        ("expected_close_date", "<", query.close_before),
        ("created_at", ">=", query.created_from),
        ("created_at", "<", query.created_before),
    )
    for column, op, bound in bounds:
        if bound is not None:
            where.append(f"{column} {op} {params(bound)}")
    return where


@single_statement
async def list_deals(
    conn: ReadConn,
    shards: list[int],
    query: DealListQuery,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
    sort: CustomSort | None = None,
) -> list[DealRead]:
    """Up to `limit + 1` deals of these shards after `position` (the caller merges),
    of the owners in `owners` (None: anyone's), matching the `cf.` filters."""
    params = Params()
    column = sort.sql() if sort else _DEAL_SORT[order.field]
    where = _deal_filters(query, shards, owners, params, custom)
    sql = keyset_page("deals", _DEAL, where, column, order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [_deal(r) for r in rows]


@single_statement
async def count_deals(
    conn: ReadConn,
    shards: list[int],
    query: DealListQuery,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
) -> int:
    params = Params()
    where = _deal_filters(query, shards, owners, params, custom)
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM deals WHERE {' AND '.join(where)}", *params.values
        )
    )


def deal_sort_key(field: str) -> Any:
    """The merge key of a sort field, matching `_DEAL_SORT`'s SQL expressions."""
    if field == "amount":
        return lambda d: (d.amount.amount, d.id)
    if field == "expected_close_date":
        return lambda d: (d.expected_close_date or _NO_CLOSE_DATE, d.id)
    return lambda d: (d.created_at, d.id)


async def list_stage_changes(
    conn: ReadConn,
    deal_id: int,
    limit: int,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
) -> list[StageChangeRead] | None:
    """None when the deal is absent (or its owner outside `owners`); else up to
    `limit + 1` transitions after `position`."""
    params = Params()
    alive = [f"id = {params(deal_id)}", "deleted_at IS NULL"]
    if scope := owned_by("owner_id", owners, params):
        alive.append(scope)
    if not await conn.fetchval(f"SELECT 1 FROM deals WHERE {' AND '.join(alive)}", *params.values):
        return None
    params = Params()
    where = [f"deal_id = {params(deal_id)}"]
    sql = keyset_page(
        "deal_stage_changes", _STAGE_CHANGE, where, "changed_at", order, position, limit, params
    )
    rows = await conn.fetch(sql, *params.values)
    return [StageChangeRead.model_validate(dict(r)) for r in rows]


# -- orders (sales, on the customer's shard) ---------------------------------------
_ORDER = (
    "id, customer_id, deal_id, price_book_id, currency, status, notes, owner_id, subtotal,"
    " discount_total, tax_total, total, confirmed_at, cancelled_at, version, created_at,"
    " updated_at"
)
_ORDERS = Versioned("orders", _ORDER, frozenset())
_LINE_COLUMNS = (
    "position",
    "product_id",
    "sku",
    "name",
    "unit_price",
    "quantity",
    "discount_percent",
    "tax_percent",
    "subtotal",
    "discount",
    "tax",
    "total",
)
_LINE = "id, order_id, " + ", ".join(_LINE_COLUMNS)
_TOTALS = ("subtotal", "discount_total", "tax_total", "total")
ORDER_AUDITED = ("status", "price_book_id", "currency", *_TOTALS, "notes")
_ORDER_SORT = {"created_at": "created_at", "total": "total"}


async def _orders(conn: ReadConn, rows: list[asyncpg.Record]) -> list[OrderRead]:
    lines = await conn.fetch(
        f"SELECT {_LINE} FROM order_lines WHERE order_id = ANY($1::bigint[])"
        " ORDER BY order_id, position",
        [r["id"] for r in rows],
    )
    by_order: dict[int, list[OrderLineRead]] = {r["id"]: [] for r in rows}
    for line in lines:
        by_order[line["order_id"]].append(OrderLineRead.model_validate(dict(line)))
    out = []
    for r in rows:
        data = dict(r)
        currency = data["currency"] = data["currency"].strip()
        for name in _TOTALS:
            data[name] = ComputedMoney(amount=data[name], currency=currency)
        out.append(OrderRead.model_validate({**data, "lines": by_order[r["id"]]}))
    return out


async def _order(conn: ReadConn, row: asyncpg.Record) -> OrderRead:
    return (await _orders(conn, [row]))[0]


def _order_audited(row: asyncpg.Record) -> dict[str, Any]:
    out = {name: row[name] for name in ORDER_AUDITED}
    out["currency"] = out["currency"].strip()
    out["price_book_id"] = str(out["price_book_id"])
    return out


async def _insert_lines(conn: WriteConn, order_id: int, lines: list[dict[str, Any]]) -> None:
    await conn.executemany(
        f"""INSERT INTO order_lines (id, order_id, {", ".join(_LINE_COLUMNS)})
            VALUES (nextflow_id({shard_sql("$1::bigint")}::int), $1,
                    {", ".join(f"${i}" for i in range(2, len(_LINE_COLUMNS) + 2))})""",
        [(order_id, *(line[c] for c in _LINE_COLUMNS)) for line in lines],
    )


async def create_order(
    conn: WriteConn,
    shard: int,
    header: dict[str, Any],
    lines: list[dict[str, Any]],
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> OrderRead | Refused | Denied:
    """An order and its priced lines; from a deal only while that deal is won (and
    its owner in `owners`, None: anyone's; else Denied)."""
    if header["deal_id"] is not None:
        deal = await conn.fetchrow(
            "SELECT status, owner_id FROM deals WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
            header["deal_id"],
        )
        if deal is not None and (refused := denied(owners, deal["owner_id"])):
            return refused
        if deal is None or deal["status"] != "won":
            return Refused("deal_id", "only a won deal can be ordered")
    row = await conn.fetchrow(
        f"""INSERT INTO orders (id, customer_id, deal_id, price_book_id, currency, notes,
                                owner_id, subtotal, discount_total, tax_total, total)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            RETURNING {_ORDER}""",
        shard,
        header["customer_id"],
        header["deal_id"],
        header["price_book_id"],
        header["currency"],
        header["notes"],
        header["owner_id"],
        *(header[t] for t in _TOTALS),
    )
    await _insert_lines(conn, row["id"], lines)
    await record_change(
        conn,
        "order",
        row["id"],
        "created",
        diff(None, _order_audited(row), ORDER_AUDITED),
        actor_id,
    )
    order = await _order(conn, row)
    await emit(conn, "order.created", "order", order.id, record_data("order", order), actor_id)
    return order


async def get_order(
    conn: ReadConn, order_id: int, owners: frozenset[int] | None = None
) -> OrderRead | None:
    """The live order, if `owners` (None: anyone) holds its owner."""
    params = Params()
    where = by_id(params, order_id, "owner_id", owners)
    row = await conn.fetchrow(
        f"SELECT {_ORDER} FROM orders WHERE {' AND '.join(where)}", *params.values
    )
    return None if row is None else await _order(conn, row)


async def update_order(
    conn: WriteConn,
    order_id: int,
    header: dict[str, Any],
    lines: list[dict[str, Any]] | None,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> OrderRead | Stale | Refused | Denied | None:
    """A draft's notes, or its price book and lines (replaced, totals with them);
    Denied when its owner is outside `owners` (None: anyone)."""
    before = await locked_row(conn, "orders", _ORDER, order_id, if_version, "owner_id", owners)
    if before is None or isinstance(before, Stale | Denied):
        return before
    if before["status"] != "draft":
        return Refused("status", f"a {before['status']} order cannot be changed")
    params = Params()
    allowed = {"notes", "price_book_id", "currency", *_TOTALS}
    sets = [f"{k} = {params(v)}" for k, v in header.items() if k in allowed]
    sets += ["version = version + 1", "updated_at = now()"]
    row = await conn.fetchrow(
        f"UPDATE orders SET {', '.join(sets)} WHERE id = {params(order_id)} RETURNING {_ORDER}",
        *params.values,
    )
    if lines is not None:
        await conn.execute("DELETE FROM order_lines WHERE order_id = $1", order_id)
        await _insert_lines(conn, order_id, lines)
    changed = diff(_order_audited(before), _order_audited(row), ORDER_AUDITED)
    await record_change(conn, "order", order_id, "updated", changed, actor_id)
    return await _order(conn, row)


_STATUS_MOVES = {"confirmed": ("draft",), "cancelled": ("draft", "confirmed")}


async def set_order_status(
    conn: WriteConn,
    order_id: int,
    status: str,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> OrderRead | Stale | Refused | Denied | None:
    """draft -> confirmed; draft or confirmed -> cancelled. Denied when the order's
    owner is outside `owners` (None: anyone)."""
    before = await locked_row(conn, "orders", _ORDER, order_id, if_version, "owner_id", owners)
    if before is None or isinstance(before, Stale | Denied):
        return before
    if before["status"] not in _STATUS_MOVES[status]:
        return Refused("status", f"a {before['status']} order cannot become {status}")
    stamp = "confirmed_at" if status == "confirmed" else "cancelled_at"
    row = await conn.fetchrow(
        f"""UPDATE orders SET status = $2, {stamp} = now(), version = version + 1,
                              updated_at = now()
            WHERE id = $1 RETURNING {_ORDER}""",
        order_id,
        status,
    )
    action = "confirmed" if status == "confirmed" else "cancelled"
    changed = diff(_order_audited(before), _order_audited(row), ORDER_AUDITED)
    await record_change(conn, "order", order_id, action, changed, actor_id)
    order = await _order(conn, row)
    data = record_data("order", order, changed)
    await emit(conn, f"order.{status}", "order", order_id, data, actor_id)
    return order


async def delete_order(
    conn: WriteConn,
    order_id: int,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> OrderRead | Stale | Refused | Denied | None:
    """Soft delete of a draft or cancelled order (a confirmed one is cancelled first);
    Denied when its owner is outside `owners` (None: anyone)."""
    before = await locked_row(conn, "orders", _ORDER, order_id, if_version, "owner_id", owners)
    if before is None or isinstance(before, Stale | Denied):
        return before
    if before["status"] == "confirmed":
        return Refused("status", "a confirmed order is cancelled, not deleted")
    row = await soft_delete_row(conn, _ORDERS, order_id, if_version, owners)
    if row is None or isinstance(row, Stale | Denied):  # (the row is locked: it cannot be)
        return row
    await record_change(conn, "order", order_id, "deleted", {}, actor_id)
    return await _order(conn, row)


async def restore_order(
    conn: WriteConn, order_id: int, actor_id: int | None, owners: frozenset[int] | None = None
) -> OrderRead | None:
    """The restored order (or the live one); None when absent or its owner is outside
    `owners`."""
    row = await restore_row(conn, _ORDERS, order_id, owners)
    if row is None:
        return await get_order(conn, order_id, owners)
    await record_change(conn, "order", order_id, "restored", {}, actor_id)
    return await _order(conn, row)


def _order_filters(
    query: OrderListQuery, shards: list[int], owners: frozenset[int] | None, params: Params
) -> list[str]:
    where = ["deleted_at IS NULL", on_shards(params, shards)]
    if scope := owned_by("owner_id", owners, params):
        where.append(scope)
    for name in ("status", "customer_id", "deal_id", "price_book_id", "owner_id"):
        value = getattr(query, name)
        if value is not None:
            where.append(f"{name} = {params(value)}")
    bounds = (
        ("total", ">=", query.total_gte),
        ("total", "<=", query.total_lte),
        ("created_at", ">=", query.created_from),
        ("created_at", "<", query.created_before),
    )
    for column, op, bound in bounds:
        if bound is not None:
            where.append(f"{column} {op} {params(bound)}")
    return where


async def list_orders(
    conn: ReadConn,
    shards: list[int],
    query: OrderListQuery,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
) -> list[OrderRead]:
    """Up to `limit + 1` orders of these shards after `position` (the caller merges),
    of the owners in `owners` (None: anyone's)."""
    params = Params()
    column = _ORDER_SORT[order.field]
    where = _order_filters(query, shards, owners, params)
    sql = keyset_page("orders", _ORDER, where, column, order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return await _orders(conn, list(rows)) if rows else []


async def count_orders(
    conn: ReadConn,
    shards: list[int],
    query: OrderListQuery,
    owners: frozenset[int] | None = None,
) -> int:
    params = Params()
    where = _order_filters(query, shards, owners, params)
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM orders WHERE {' AND '.join(where)}", *params.values
        )
    )


def order_sort_key(field: str) -> Any:
    if field == "total":
        return lambda o: (o.total.amount, o.id)
    return lambda o: (o.created_at, o.id)


# -- a customer's timeline (deployments/_kit/timeline.py) ------------------------------
@single_statement
async def timeline(
    conn: ReadConn,
    customer_id: int,
    window: Window,
    deal_owners: frozenset[int] | None,
    order_owners: frozenset[int] | None,
    deals: bool,
    orders: bool,
) -> list[TimelineItem]:
    """The customer's deals made (`deal`) and moved (`deal_stage`, creation left out)
    and its orders (`order`), each only when the caller may read it (`deals`,
    `orders`, the owners their scopes reach)."""
    params = Params()
    customer = params(customer_id)
    parts = []
    deals = deals and window.wants("deal", "deal_stage")
    deal_scope = [f"d.customer_id = {customer}", "d.deleted_at IS NULL"]
    if deals and (scope := owned_by("d.owner_id", deal_owners, params)):
        deal_scope.append(scope)  # (a parameter only when a query uses it)
    if deals and window.wants("deal"):
        parts.append(timeline_source(
            params, window, kind="'deal'", table="deals d", where=deal_scope,
            at="d.created_at", row_id="d.id", record_type="'deal'", record_id="d.id",
            title="'Deal created: ' || d.name", actor="d.owner_id",
            data="""jsonb_build_object('name', d.name, 'amount', d.amount::text,
                        'currency', d.currency, 'status', d.status, 'stage_id', d.stage_id::text,
                        'pipeline_id', d.pipeline_id::text)""",
        ))  # fmt: skip
    if deals and window.wants("deal_stage"):
        parts.append(timeline_source(
            params, window, kind="'deal_stage'",
            table="deal_stage_changes s JOIN deals d ON d.id = s.deal_id",
            where=[*deal_scope, "s.from_stage_id IS NOT NULL"], at="s.changed_at",
            row_id="s.id", record_type="'deal'", record_id="s.deal_id",
            title="""CASE s.status WHEN 'won' THEN 'Deal won: ' WHEN 'lost' THEN 'Deal lost: '
                     ELSE 'Deal moved: ' END || d.name""",
            actor="s.changed_by",
            data="""jsonb_build_object('from_stage_id', s.from_stage_id::text,
                        'to_stage_id', s.to_stage_id::text,
                        'from_pipeline_id', s.from_pipeline_id::text,
                        'to_pipeline_id', s.to_pipeline_id::text,
                        'probability', s.probability, 'status', s.status)""",
        ))  # fmt: skip
    if orders and window.wants("order"):
        where = [f"o.customer_id = {customer}", "o.deleted_at IS NULL"]
        if scope := owned_by("o.owner_id", order_owners, params):
            where.append(scope)
        parts.append(timeline_source(
            params, window, kind="'order'", table="orders o", where=where, at="o.created_at",
            row_id="o.id", record_type="'order'", record_id="o.id",
            title="'Order ' || o.status || ': ' || o.total::text || ' ' || o.currency",
            actor="o.owner_id",
            data="""jsonb_build_object('status', o.status, 'total', o.total::text,
                        'currency', o.currency, 'deal_id', o.deal_id::text)""",
        ))  # fmt: skip
    return await fetch_timeline(conn, params, window, parts)
