"""All SQL of the marketing service. Each function runs inside the one transaction
that the ShardManager opened (on a marketing shard, or on the catalog server's
`marketing_config` database for capture forms)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from deployments._kit.custom_fields import CustomSort, TypedFilter, filter_sql
from deployments._kit.events import emit, record_data
from deployments._kit.history import diff, record_change
from deployments._kit.sql import (
    Denied,
    Params,
    Stale,
    by_id,
    denied,
    escape_like,
    keyset_page,
    on_shards,
    owned_by,
)
from deployments._kit.types import Money
from deployments._kit.versioned import (
    Updated,
    Versioned,
    missing_stale_or_denied,
    restore_row,
    soft_delete_row,
    update_row,
)
from deployments.marketing.capture import CaptureData
from deployments.marketing.schemas import (
    CampaignCreate,
    CampaignListQuery,
    CampaignRead,
    ConversionRead,
    FormCreate,
    FormListQuery,
    FormRead,
    LeadCreate,
    LeadListQuery,
    LeadRead,
    MemberCreate,
    MemberListQuery,
    MemberRead,
)
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement

M = TypeVar("M", bound=BaseModel)

_LEAD = (
    "id, first_name, last_name, email, phone, company, title, source, status, owner_id,"
    " campaign_id, score, notes, custom_fields, capture_count, last_captured_at,"
    " converted_customer_id, converted_contact_id, converted_deal_id, converted_at,"
    " version, created_at, updated_at"
)
_LEAD_UPDATABLE = {
    "first_name", "last_name", "phone", "company", "title", "source", "status", "owner_id",
    "campaign_id", "notes", "custom_fields",
}  # fmt: skip
LEAD_AUDITED = (
    "first_name", "last_name", "email", "company", "source", "status", "owner_id",
    "campaign_id", "score", "converted_customer_id", "converted_contact_id",
    "converted_deal_id",
)  # fmt: skip
_LEAD_SORT = {"created_at": "created_at", "score": "coalesce(score, -1)"}

_CAMPAIGN = (
    "id, name, type, status, budget_amount, budget_currency, expected_revenue_amount,"
    " expected_revenue_currency, start_date, end_date, description, owner_id, version,"
    " created_at, updated_at"
)
_CAMPAIGN_UPDATABLE = {
    "name", "type", "status", "budget_amount", "budget_currency", "expected_revenue_amount",
    "expected_revenue_currency", "start_date", "end_date", "description", "owner_id",
}  # fmt: skip
CAMPAIGN_AUDITED = (
    "name", "type", "status", "budget_amount", "budget_currency", "start_date", "end_date",
    "owner_id",
)  # fmt: skip
_CAMPAIGN_SORT = {"created_at": "created_at", "name": "name"}

_MEMBER = "id, campaign_id, contact_id, lead_id, status, version, created_at, updated_at"
_CONVERSION = (
    "id, lead_id, state, options, customer_id, contact_id, deal_id, attempts, last_error,"
    " created_at, updated_at, completed_at"
)
_FORM = (
    "id, name, form_key, fields, required_fields, default_source, campaign_id, owner_id,"
    " active, version, created_at, updated_at"
)
FORM_AUDITED = (
    "name", "fields", "required_fields", "default_source", "campaign_id", "owner_id", "active",
)  # fmt: skip
_FORM_UPDATABLE = {
    "name", "fields", "required_fields", "default_source", "campaign_id", "owner_id", "active",
}  # fmt: skip


@dataclass(frozen=True)
class Duplicate:
    """A create refused because the record already exists (`existing_id`, owned by
    `owner_id` when the record has an owner)."""

    existing_id: int
    deleted: bool = False
    owner_id: int | None = None


@dataclass(frozen=True)
class BadDates:
    """An update that would put a campaign's end before its start."""


# -- leads ---------------------------------------------------------------------------
def _lead(row: Mapping[str, Any]) -> LeadRead:
    return LeadRead.model_validate(dict(row))


async def create_lead(
    conn: WriteConn, shard: int, data: LeadCreate, owner_id: int | None, actor_id: int | None
) -> LeadRead | Duplicate:
    """A new lead, or `Duplicate` naming the lead (deleted or not) with its e-mail."""
    row = await conn.fetchrow(
        f"""INSERT INTO leads (id, first_name, last_name, email, phone, company, title, source,
                               status, owner_id, campaign_id, notes, custom_fields)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT ((lower(email))) WHERE email IS NOT NULL DO NOTHING
            RETURNING {_LEAD}""",
        shard, data.first_name, data.last_name, data.email, data.phone, data.company,
        data.title, data.source, data.status, owner_id, data.campaign_id, data.notes,
        data.custom_fields,
    )  # fmt: skip
    if row is None:
        existing = await conn.fetchrow(
            "SELECT id, deleted_at, owner_id FROM leads WHERE lower(email) = lower($1)",
            data.email,
        )
        return Duplicate(existing["id"], existing["deleted_at"] is not None, existing["owner_id"])
    lead = _lead(row)
    changes = diff(None, lead.model_dump(), LEAD_AUDITED)
    await record_change(conn, "lead", lead.id, "created", changes, actor_id)
    await emit(conn, "lead.created", "lead", lead.id, record_data("lead", lead), actor_id)
    return lead


@single_statement
async def get_lead(
    conn: ReadConn, lead_id: int, owners: frozenset[int] | None = None
) -> LeadRead | None:
    """The live lead, if `owners` (None: anyone) holds its owner."""
    params = Params()
    where = by_id(params, lead_id, "owner_id", owners)
    row = await conn.fetchrow(
        f"SELECT {_LEAD} FROM leads WHERE {' AND '.join(where)}", *params.values
    )
    return None if row is None else _lead(row)


async def update_lead(
    conn: WriteConn,
    lead_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> LeadRead | Stale | Denied | None:
    """The lead as updated; Denied when its owner is outside `owners` (None: anyone)."""
    if refused := await _denied(conn, "leads", lead_id, owners):
        return refused
    return await _update_audited(
        conn, "leads", _LEAD, _LEAD_UPDATABLE, lead_id, changes, if_version, _lead,
        "lead", LEAD_AUDITED, actor_id,
    )  # fmt: skip


async def delete_lead(
    conn: WriteConn,
    lead_id: int,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> LeadRead | Stale | Denied | None:
    """The lead as deleted; Denied when its owner is outside `owners` (None: anyone)."""
    if refused := await _denied(conn, "leads", lead_id, owners):
        return refused
    return await _soft_delete(conn, "leads", _LEAD, lead_id, if_version, _lead, "lead", actor_id)


async def restore_lead(
    conn: WriteConn, lead_id: int, actor_id: int | None, owners: frozenset[int] | None = None
) -> LeadRead | None:
    """The restored lead (or the live one); None when absent or its owner is outside
    `owners`."""
    return await _restore(conn, "leads", _LEAD, lead_id, _lead, "lead", actor_id, owners)


def _lead_filters(
    query: LeadListQuery,
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
    for name in ("status", "source", "owner_id", "campaign_id"):
        value = getattr(query, name)
        if value is not None:
            where.append(f"{name} = {params(value)}")
    if query.email is not None:
        where.append(f"lower(email) = lower({params(query.email)})")
    if query.created_from is not None:
        where.append(f"created_at >= {params(query.created_from)}")
    if query.created_before is not None:
        where.append(f"created_at < {params(query.created_before)}")
    if query.score_min is not None:
        where.append(f"score >= {params(query.score_min)}")
    return where


@single_statement
async def list_leads(
    conn: ReadConn,
    shards: list[int],
    query: LeadListQuery,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
    sort: CustomSort | None = None,
) -> list[LeadRead]:
    """Up to `limit + 1` leads on this server after `position` (the caller merges), of
    the owners in `owners` (None: anyone's), matching the `cf.` filters."""
    params = Params()
    column = sort.sql() if sort else _LEAD_SORT[order.field]
    where = _lead_filters(query, shards, owners, params, custom)
    sql = keyset_page("leads", _LEAD, where, column, order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [_lead(r) for r in rows]


@single_statement
async def count_leads(
    conn: ReadConn,
    shards: list[int],
    query: LeadListQuery,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
) -> int:
    params = Params()
    where = _lead_filters(query, shards, owners, params, custom)
    sql = f"SELECT count(*) FROM leads WHERE {' AND '.join(where)}"
    return int(await conn.fetchval(sql, *params.values))


async def capture_lead(
    conn: WriteConn,
    shard: int,
    data: CaptureData,
    source: str,
    owner_id: int | None,
    campaign_id: int | None,
) -> int:
    """The lead a public capture lands in: a new one, or the lead that has this e-mail
    (deleted or not), touched. A capture never overwrites what a lead already has (the
    public must not be able to rewrite a lead): it fills empty fields, appends a message
    to the notes and counts the capture. Returns the lead's id."""
    existing = None
    if data.email is not None:
        existing = await conn.fetchrow(
            f"SELECT {_LEAD}, deleted_at FROM leads WHERE lower(email) = lower($1) FOR UPDATE",
            data.email,
        )
    if existing is None:
        row = await conn.fetchrow(
            f"""INSERT INTO leads (id, first_name, last_name, email, phone, company, title,
                                   source, status, owner_id, campaign_id, notes,
                                   capture_count, last_captured_at)
                VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, 'new', $9, $10, $11,
                        1, now())
                ON CONFLICT ((lower(email))) WHERE email IS NOT NULL DO NOTHING
                RETURNING {_LEAD}""",
            shard, data.first_name, data.last_name, data.email, data.phone, data.company,
            data.title, source, owner_id, campaign_id, data.message,
        )  # fmt: skip
        if row is None:  # a concurrent capture of the same e-mail won: touch that one
            return await capture_lead(conn, shard, data, source, owner_id, campaign_id)
        lead = _lead(row)
        await record_change(
            conn, "lead", lead.id, "captured", diff(None, lead.model_dump(), LEAD_AUDITED), None
        )
        payload = record_data("lead", lead, captured=True)
        await emit(conn, "lead.created", "lead", lead.id, payload, None)
        return lead.id
    before = dict(existing)
    row = await conn.fetchrow(
        f"""UPDATE leads SET
                first_name = coalesce(first_name, $2), last_name = coalesce(last_name, $3),
                phone = coalesce(phone, $4), company = coalesce(company, $5),
                title = coalesce(title, $6), campaign_id = coalesce(campaign_id, $7),
                notes = CASE WHEN $8::text IS NULL THEN notes
                             ELSE left(coalesce(notes || E'\\n\\n', '') || $8::text, 10000) END,
                capture_count = capture_count + 1, last_captured_at = now(),
                version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {_LEAD}""",
        before["id"], data.first_name, data.last_name, data.phone, data.company, data.title,
        campaign_id, data.message,
    )  # fmt: skip
    changes = diff(before, dict(row), LEAD_AUDITED)
    await record_change(conn, "lead", before["id"], "captured", changes, None)
    return int(before["id"])


# -- campaigns -----------------------------------------------------------------------
def _campaign(row: Mapping[str, Any]) -> CampaignRead:
    data = dict(row)
    for name in ("budget", "expected_revenue"):
        amount, currency = data.pop(f"{name}_amount"), data.pop(f"{name}_currency")
        data[name] = None if amount is None else Money(amount=amount, currency=currency)
    return CampaignRead.model_validate(data)


def campaign_columns(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Model fields -> columns (money in two columns)."""
    out = dict(changes)
    for name in ("budget", "expected_revenue"):
        if name in out:
            money = out.pop(name)
            out[f"{name}_amount"] = None if money is None else money["amount"]
            out[f"{name}_currency"] = None if money is None else money["currency"]
    return out


async def create_campaign(
    conn: WriteConn, shard: int, data: CampaignCreate, owner_id: int | None, actor_id: int | None
) -> CampaignRead:
    columns = campaign_columns(data.model_dump())
    row = await conn.fetchrow(
        f"""INSERT INTO campaigns (id, name, type, status, budget_amount, budget_currency,
                expected_revenue_amount, expected_revenue_currency, start_date, end_date,
                description, owner_id)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            RETURNING {_CAMPAIGN}""",
        shard, data.name, data.type, data.status, columns["budget_amount"],
        columns["budget_currency"], columns["expected_revenue_amount"],
        columns["expected_revenue_currency"], data.start_date, data.end_date,
        data.description, owner_id,
    )  # fmt: skip
    await record_change(
        conn, "campaign", row["id"], "created", diff(None, dict(row), CAMPAIGN_AUDITED), actor_id
    )
    return _campaign(row)


async def get_campaign(
    conn: ReadConn, campaign_id: int, owners: frozenset[int] | None = None
) -> CampaignRead | None:
    """The live campaign, if `owners` (None: anyone) holds its owner."""
    params = Params()
    where = by_id(params, campaign_id, "owner_id", owners)
    row = await conn.fetchrow(
        f"SELECT {_CAMPAIGN} FROM campaigns WHERE {' AND '.join(where)}", *params.values
    )
    return None if row is None else _campaign(row)


async def update_campaign(
    conn: WriteConn,
    campaign_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> CampaignRead | Stale | BadDates | Denied | None:
    """The campaign as updated; Denied when its owner is outside `owners` (None:
    anyone), before its dates are looked at."""
    current = await conn.fetchrow(
        "SELECT start_date, end_date, owner_id FROM campaigns"
        " WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        campaign_id,
    )
    if current is not None:
        if refused := denied(owners, current["owner_id"]):
            return refused
        start = changes.get("start_date", current["start_date"])
        end = changes.get("end_date", current["end_date"])
        if start is not None and end is not None and end < start:
            return BadDates()
    return await _update_audited(
        conn, "campaigns", _CAMPAIGN, _CAMPAIGN_UPDATABLE, campaign_id,
        campaign_columns(changes), if_version, _campaign, "campaign", CAMPAIGN_AUDITED,
        actor_id,
    )  # fmt: skip


async def delete_campaign(
    conn: WriteConn,
    campaign_id: int,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> CampaignRead | Stale | Denied | None:
    """The campaign as deleted; Denied when its owner is outside `owners` (None:
    anyone)."""
    if refused := await _denied(conn, "campaigns", campaign_id, owners):
        return refused
    return await _soft_delete(
        conn, "campaigns", _CAMPAIGN, campaign_id, if_version, _campaign, "campaign", actor_id
    )


async def restore_campaign(
    conn: WriteConn, campaign_id: int, actor_id: int | None, owners: frozenset[int] | None = None
) -> CampaignRead | None:
    """The restored campaign (or the live one); None when absent or its owner is
    outside `owners`."""
    return await _restore(
        conn, "campaigns", _CAMPAIGN, campaign_id, _campaign, "campaign", actor_id, owners
    )


def _campaign_filters(
    query: CampaignListQuery, shards: list[int], owners: frozenset[int] | None, params: Params
) -> list[str]:
    where = ["deleted_at IS NULL", on_shards(params, shards)]
    if scope := owned_by("owner_id", owners, params):
        where.append(scope)
    for column, value in (
        ("status", query.status),
        ("type", query.campaign_type),
        ("owner_id", query.owner_id),
    ):
        if value is not None:
            where.append(f"{column} = {params(value)}")
    if query.name_prefix:
        where.append(f"name LIKE {params(escape_like(query.name_prefix) + '%')}")
    if query.created_from is not None:
        where.append(f"created_at >= {params(query.created_from)}")
    if query.created_before is not None:
        where.append(f"created_at < {params(query.created_before)}")
    return where


async def list_campaigns(
    conn: ReadConn,
    shards: list[int],
    query: CampaignListQuery,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
) -> list[CampaignRead]:
    """Up to `limit + 1` campaigns on this server after `position` (the caller
    merges), of the owners in `owners` (None: anyone's)."""
    params = Params()
    column = _CAMPAIGN_SORT[order.field]
    where = _campaign_filters(query, shards, owners, params)
    sql = keyset_page("campaigns", _CAMPAIGN, where, column, order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [_campaign(r) for r in rows]


async def count_campaigns(
    conn: ReadConn,
    shards: list[int],
    query: CampaignListQuery,
    owners: frozenset[int] | None = None,
) -> int:
    params = Params()
    where = _campaign_filters(query, shards, owners, params)
    sql = f"SELECT count(*) FROM campaigns WHERE {' AND '.join(where)}"
    return int(await conn.fetchval(sql, *params.values))


# -- members -------------------------------------------------------------------------
def _member(row: Mapping[str, Any]) -> MemberRead:
    return MemberRead.model_validate(dict(row))


async def add_member(
    conn: WriteConn,
    shard: int,
    campaign_id: int,
    data: MemberCreate,
    owners: frozenset[int] | None = None,
) -> MemberRead | Duplicate | Denied | None:
    """A new member; a removed one comes back (with the new status); `Duplicate` for a
    current one; None when the campaign is absent; Denied when its owner is outside
    `owners` (None: anyone)."""
    campaign = await conn.fetchrow(
        "SELECT owner_id FROM campaigns WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE",
        campaign_id,
    )
    if campaign is None:
        return None
    if refused := denied(owners, campaign["owner_id"]):
        return refused
    column = "contact_id" if data.contact_id is not None else "lead_id"
    target = data.contact_id if data.contact_id is not None else data.lead_id
    row = await conn.fetchrow(
        f"""INSERT INTO campaign_members (id, campaign_id, {column}, status)
            VALUES (nextflow_id($1), $2, $3, $4)
            ON CONFLICT (campaign_id, {column}) WHERE {column} IS NOT NULL DO NOTHING
            RETURNING {_MEMBER}""",
        shard, campaign_id, target, data.status,
    )  # fmt: skip
    if row is not None:
        return _member(row)
    revived = await conn.fetchrow(
        f"""UPDATE campaign_members SET deleted_at = NULL, status = $3,
                   version = version + 1, updated_at = now()
            WHERE campaign_id = $1 AND {column} = $2 AND deleted_at IS NOT NULL
            RETURNING {_MEMBER}""",
        campaign_id, target, data.status,
    )  # fmt: skip
    if revived is not None:
        return _member(revived)
    existing = await conn.fetchval(
        f"SELECT id FROM campaign_members WHERE campaign_id = $1 AND {column} = $2",
        campaign_id,
        target,
    )
    return Duplicate(existing)


async def get_member(conn: ReadConn, campaign_id: int, member_id: int) -> MemberRead | None:
    row = await conn.fetchrow(
        f"""SELECT {_MEMBER} FROM campaign_members
            WHERE id = $1 AND campaign_id = $2 AND deleted_at IS NULL""",
        member_id,
        campaign_id,
    )
    return None if row is None else _member(row)


async def update_member(
    conn: WriteConn,
    campaign_id: int,
    member_id: int,
    status: str,
    if_version: int | None,
    owners: frozenset[int] | None = None,
) -> MemberRead | Stale | Denied | None:
    """The member as updated; Denied when the campaign's owner is outside `owners`
    (None: anyone)."""
    if refused := await _denied(
        conn, "campaigns", campaign_id, owners, live=False, lock="FOR SHARE"
    ):
        return refused
    params = Params()
    where = [
        f"id = {params(member_id)}",
        f"campaign_id = {params(campaign_id)}",
        "deleted_at IS NULL",
    ]
    if if_version is not None:
        where.append(f"version = {params(if_version)}")
    row = await conn.fetchrow(
        f"UPDATE campaign_members SET status = {params(status)}, version = version + 1,"
        f" updated_at = now() WHERE {' AND '.join(where)} RETURNING {_MEMBER}",
        *params.values,
    )
    if row is not None:
        return _member(row)
    return await _missing_or_stale(conn, "campaign_members", member_id)


async def delete_member(
    conn: WriteConn,
    campaign_id: int,
    member_id: int,
    if_version: int | None,
    owners: frozenset[int] | None = None,
) -> MemberRead | Stale | Denied | None:
    """The member as removed; Denied when the campaign's owner is outside `owners`
    (None: anyone)."""
    if refused := await _denied(
        conn, "campaigns", campaign_id, owners, live=False, lock="FOR SHARE"
    ):
        return refused
    params = Params()
    where = [
        f"id = {params(member_id)}",
        f"campaign_id = {params(campaign_id)}",
        "deleted_at IS NULL",
    ]
    if if_version is not None:
        where.append(f"version = {params(if_version)}")
    row = await conn.fetchrow(
        f"UPDATE campaign_members SET deleted_at = now(), version = version + 1,"
        f" updated_at = now() WHERE {' AND '.join(where)} RETURNING {_MEMBER}",
        *params.values,
    )
    if row is not None:
        return _member(row)
    return await _missing_or_stale(conn, "campaign_members", member_id)


async def list_members(
    conn: ReadConn,
    campaign_id: int,
    query: MemberListQuery,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
) -> list[MemberRead] | None:
    """None when the campaign is absent (or its owner outside `owners`); else up to
    `limit + 1` members."""
    params = Params()
    campaign = by_id(params, campaign_id, "owner_id", owners)
    alive = await conn.fetchval(
        f"SELECT 1 FROM campaigns WHERE {' AND '.join(campaign)}", *params.values
    )
    if not alive:
        return None
    params = Params()
    where = [f"campaign_id = {params(campaign_id)}", "deleted_at IS NULL"]
    if query.status is not None:
        where.append(f"status = {params(query.status)}")
    sql = keyset_page(
        "campaign_members", _MEMBER, where, "created_at", order, position, query.limit, params
    )
    rows = await conn.fetch(sql, *params.values)
    return [_member(r) for r in rows]


# -- lead conversions ----------------------------------------------------------------
def _conversion(row: Mapping[str, Any]) -> ConversionRead:
    return ConversionRead.model_validate(dict(row))


async def begin_conversion(
    conn: WriteConn,
    shard: int,
    lead_id: int,
    options: dict[str, Any],
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> tuple[ConversionRead, LeadRead] | Denied | None:
    """The lead's conversion, started now or resumed (one more attempt, with these
    options; the ids already made stay). A completed one is returned untouched. None
    when the lead is absent; Denied when its owner is outside `owners` (None: anyone)."""
    lead_row = await conn.fetchrow(
        f"SELECT {_LEAD} FROM leads WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", lead_id
    )
    if lead_row is None:
        return None
    if refused := denied(owners, lead_row["owner_id"]):
        return refused
    row = await conn.fetchrow(
        f"""INSERT INTO lead_conversions (id, lead_id, state, options, actor_id)
            VALUES (nextflow_id($1), $2, 'started', $3, $4)
            ON CONFLICT (lead_id) DO UPDATE
               SET attempts = lead_conversions.attempts + 1,
                   options = EXCLUDED.options, updated_at = now()
               WHERE lead_conversions.state <> 'completed'
            RETURNING {_CONVERSION}""",
        shard, lead_id, options, actor_id,
    )  # fmt: skip
    if row is None:  # completed already: the same result as before
        row = await conn.fetchrow(
            f"SELECT {_CONVERSION} FROM lead_conversions WHERE lead_id = $1", lead_id
        )
    return _conversion(row), _lead(lead_row)


async def get_conversion(
    conn: ReadConn, lead_id: int, owners: frozenset[int] | None = None
) -> ConversionRead | None:
    """The lead's conversion, if `owners` (None: anyone) holds the lead's owner."""
    params = Params()
    where = [f"lead_id = {params(lead_id)}"]
    if scope := owned_by("l.owner_id", owners, params):
        where.append(f"EXISTS (SELECT 1 FROM leads l WHERE l.id = c.lead_id AND {scope})")
    row = await conn.fetchrow(
        f"SELECT {_CONVERSION} FROM lead_conversions c WHERE {' AND '.join(where)}",
        *params.values,
    )
    return None if row is None else _conversion(row)


async def advance_conversion(
    conn: WriteConn, conversion_id: int, before: str, after: str, made: dict[str, int | None]
) -> ConversionRead:
    """Compare-and-set `before -> after`, recording the ids the step made. When another
    run moved it first, nothing changes: the current row is returned either way."""
    params = Params()
    sets = [f"state = {params(after)}", "updated_at = now()", "last_error = NULL"]
    sets += [f"{name} = {params(value)}" for name, value in made.items() if name in _MADE]
    row = await conn.fetchrow(
        f"UPDATE lead_conversions SET {', '.join(sets)}"
        f" WHERE id = {params(conversion_id)} AND state = {params(before)}"
        f" RETURNING {_CONVERSION}",
        *params.values,
    )
    if row is None:
        row = await conn.fetchrow(
            f"SELECT {_CONVERSION} FROM lead_conversions WHERE id = $1", conversion_id
        )
    return _conversion(row)


_MADE = {"customer_id", "contact_id", "deal_id"}


async def note_conversion_error(conn: WriteConn, conversion_id: int, message: str) -> None:
    await conn.execute(
        "UPDATE lead_conversions SET last_error = left($2, 1000), updated_at = now() WHERE id = $1",
        conversion_id,
        message,
    )


async def complete_conversion(
    conn: WriteConn, conversion_id: int, actor_id: int | None
) -> ConversionRead:
    """The last step: the lead becomes converted (with the ids) in the transaction that
    marks the conversion completed. Only from `deal_done`; otherwise a no-op."""
    row = await conn.fetchrow(
        f"SELECT {_CONVERSION} FROM lead_conversions WHERE id = $1 FOR UPDATE", conversion_id
    )
    if row["state"] != "deal_done":
        return _conversion(row)
    before = await conn.fetchrow(f"SELECT {_LEAD} FROM leads WHERE id = $1", row["lead_id"])
    after = await conn.fetchrow(
        f"""UPDATE leads SET status = 'converted', converted_customer_id = $2,
                   converted_contact_id = $3, converted_deal_id = $4, converted_at = now(),
                   version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {_LEAD}""",
        row["lead_id"], row["customer_id"], row["contact_id"], row["deal_id"],
    )  # fmt: skip
    changes = diff(dict(before), dict(after), LEAD_AUDITED)
    await record_change(conn, "lead", row["lead_id"], "converted", changes, actor_id)
    lead = _lead(after)
    await emit(
        conn, "lead.converted", "lead", lead.id, record_data("lead", lead, changes), actor_id
    )
    done = await conn.fetchrow(
        f"""UPDATE lead_conversions SET state = 'completed', completed_at = now(),
                   updated_at = now(), last_error = NULL
            WHERE id = $1 RETURNING {_CONVERSION}""",
        conversion_id,
    )
    return _conversion(done)


async def open_conversions(
    conn: ReadConn,
    shards: list[int],
    stale_before: datetime,
    limit: int,
    owners: frozenset[int] | None = None,
) -> list[ConversionRead]:
    """Conversions still in progress that nobody has touched since `stale_before`, of
    leads whose owner `owners` (None: anyone) holds."""
    params = Params()
    where = [
        "state <> 'completed'",
        f"updated_at < {params(stale_before)}",
        on_shards(params, shards),
    ]
    if scope := owned_by("l.owner_id", owners, params):
        where.append(f"EXISTS (SELECT 1 FROM leads l WHERE l.id = c.lead_id AND {scope})")
    rows = await conn.fetch(
        f"SELECT {_CONVERSION} FROM lead_conversions c WHERE {' AND '.join(where)}"
        f" ORDER BY updated_at, id LIMIT {params(limit)}",
        *params.values,
    )
    return [_conversion(r) for r in rows]


# -- capture forms (marketing_config, unsharded) --------------------------------------
def _form(row: Mapping[str, Any]) -> FormRead:
    return FormRead.model_validate(dict(row))


def _form_audited(row: Mapping[str, Any]) -> dict[str, Any]:
    """The audited fields of a form; ids as strings, as the API shows them."""
    out = {name: row[name] for name in FORM_AUDITED}
    for name in ("campaign_id", "owner_id"):
        out[name] = None if out[name] is None else str(out[name])
    return out


async def _form_change(
    conn: WriteConn, form_id: int, action: str, changes: dict[str, Any], actor_id: int | None
) -> None:
    await record_change(conn, "form", form_id, action, changes, actor_id, sharded=False)


async def create_form(
    conn: WriteConn, data: FormCreate, form_key: str, owner_id: int | None, actor_id: int | None
) -> FormRead:
    row = await conn.fetchrow(
        f"""INSERT INTO capture_forms (name, form_key, fields, required_fields, default_source,
                                       campaign_id, owner_id, active)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_FORM}""",
        data.name, form_key, list(data.fields), list(data.required_fields),
        data.default_source, data.campaign_id, owner_id, data.active,
    )  # fmt: skip
    changes = diff(None, _form_audited(row), FORM_AUDITED)
    await _form_change(conn, row["id"], "created", changes, actor_id)
    return _form(row)


async def get_form(conn: ReadConn, form_id: int) -> FormRead | None:
    row = await conn.fetchrow(
        f"SELECT {_FORM} FROM capture_forms WHERE id = $1 AND deleted_at IS NULL", form_id
    )
    return None if row is None else _form(row)


async def get_active_form(conn: ReadConn, form_key: str) -> FormRead | None:
    row = await conn.fetchrow(
        f"SELECT {_FORM} FROM capture_forms WHERE form_key = $1 AND active AND deleted_at IS NULL",
        form_key,
    )
    return None if row is None else _form(row)


async def update_form(
    conn: WriteConn,
    form_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
) -> FormRead | Stale | BadDates | None:
    """`BadDates` here: the change leaves required fields outside the fields."""
    current = await conn.fetchrow(
        f"SELECT {_FORM} FROM capture_forms WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        form_id,
    )
    if current is not None:
        fields = changes.get("fields", current["fields"])
        required = changes.get("required_fields", current["required_fields"])
        if not set(required) <= set(fields):
            return BadDates()
    # History here rather than in `_update_audited`: form ids are shown as strings.
    updated = await _update_audited(
        conn, "capture_forms", _FORM, _FORM_UPDATABLE, form_id, changes, if_version, _form,
        "form", (), None, sharded=False,
    )  # fmt: skip
    if isinstance(updated, FormRead) and current is not None:
        changed = diff(_form_audited(current), _form_audited(updated.model_dump()), FORM_AUDITED)
        await _form_change(conn, form_id, "updated", changed, actor_id)
    return updated


async def delete_form(
    conn: WriteConn, form_id: int, if_version: int | None, actor_id: int | None
) -> FormRead | Stale | None:
    return await _soft_delete(
        conn, "capture_forms", _FORM, form_id, if_version, _form, "form", actor_id, sharded=False
    )


async def list_forms(
    conn: ReadConn, query: FormListQuery, order: Order, position: Position | None
) -> list[FormRead]:
    params = Params()
    where = ["deleted_at IS NULL"]
    if query.active is not None:
        where.append(f"active = {params(query.active)}")
    sql = keyset_page(
        "capture_forms", _FORM, where, "created_at", order, position, query.limit, params
    )
    rows = await conn.fetch(sql, *params.values)
    return [_form(r) for r in rows]


# -- shared --------------------------------------------------------------------------
async def _update_audited(
    conn: WriteConn,
    table: str,
    columns: str,
    updatable: set[str],
    record_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    build: Callable[[Mapping[str, Any]], M],
    record_type: str,
    audited: tuple[str, ...],
    actor_id: int | None,
    *,
    sharded: bool = True,
) -> M | Stale | None:
    """The record as updated (scope checked before, by `_denied`), Stale, or None when
    absent; an "updated" history row for the `audited` fields that changed."""
    versioned = Versioned(table, columns, frozenset(updatable), owner=None)
    found = await update_row(conn, versioned, record_id, changes, if_version)
    if not isinstance(found, Updated):
        return None if found is None else _stale(found)
    if audited:
        changed = diff(found.before, dict(found.after), audited)
        await record_change(
            conn, record_type, record_id, "updated", changed, actor_id, sharded=sharded
        )
    return build(found.after)


async def _soft_delete(
    conn: WriteConn,
    table: str,
    columns: str,
    record_id: int,
    if_version: int | None,
    build: Callable[[Mapping[str, Any]], M],
    record_type: str | None,
    actor_id: int | None,
    *,
    sharded: bool = True,
) -> M | Stale | None:
    row = await soft_delete_row(
        conn, Versioned(table, columns, frozenset(), owner=None), record_id, if_version
    )
    if row is None or isinstance(row, Stale | Denied):
        return None if row is None else _stale(row)
    if record_type is not None:
        await record_change(conn, record_type, record_id, "deleted", {}, actor_id, sharded=sharded)
    return build(row)


async def _restore(
    conn: WriteConn,
    table: str,
    columns: str,
    record_id: int,
    build: Callable[[Mapping[str, Any]], M],
    record_type: str,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> M | None:
    """The restored record, or the live one; None when absent or its owner is outside
    `owners` (None: anyone)."""
    row = await restore_row(conn, Versioned(table, columns, frozenset()), record_id, owners)
    if row is None:
        params = Params()
        where = by_id(params, record_id, "owner_id", owners)
        live = await conn.fetchrow(
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)}", *params.values
        )
        return None if live is None else build(live)
    await record_change(conn, record_type, record_id, "restored", {}, actor_id)
    return build(row)


def _stale(found: Stale | Denied) -> Stale:
    assert isinstance(found, Stale), found  # (tables without owners are never Denied)
    return found


async def _denied(
    conn: WriteConn,
    table: str,
    record_id: int,
    owners: frozenset[int] | None,
    *,
    live: bool = True,
    lock: str = "FOR UPDATE",
) -> Denied | None:
    """Denied when `owners` (None: anyone) does not hold the owner of this row (a live
    one, or any with `live=False`), which stays locked (`lock`) for the change that
    follows; None when it is reached or absent (the change then finds nothing)."""
    if owners is None:
        return None
    alive = " AND deleted_at IS NULL" if live else ""
    row = await conn.fetchrow(
        f"SELECT owner_id FROM {table} WHERE id = $1{alive} {lock}", record_id
    )
    return None if row is None else denied(owners, row["owner_id"])


async def _missing_or_stale(conn: WriteConn, table: str, record_id: int) -> Stale | None:
    found = await missing_stale_or_denied(conn, Versioned(table, "", frozenset(), None), record_id)
    return None if found is None else _stale(found)
