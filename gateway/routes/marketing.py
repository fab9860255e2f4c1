"""Leads (with conversion), campaigns and their members, capture forms. Path: this
file -> deployments/marketing/service.py -> deployments/marketing/repo.py -> shards/.
The public capture endpoint is in capture.py (no token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.marketing.schemas import (
    CampaignCreate,
    CampaignListQuery,
    CampaignRead,
    CampaignUpdate,
    ConversionRead,
    FormCreate,
    FormListQuery,
    FormRead,
    FormUpdate,
    LeadConvert,
    LeadCreate,
    LeadListQuery,
    LeadRead,
    LeadUpdate,
    MemberCreate,
    MemberListQuery,
    MemberRead,
    MemberUpdate,
)
from gateway.context import CurrentPrincipal, IfMatch, ServicesDep, json, no_content, record
from gateway.listing import Page, parse_list_params
from shards.ids import MAX_ID

router = APIRouter(tags=["marketing"])
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


def _history(request: Request) -> HistoryQuery:
    query = parse_list_params(request.query_params.multi_items(), HistoryQuery)
    assert isinstance(query, HistoryQuery)
    return query


# -- leads ---------------------------------------------------------------------------
@router.post("/leads", status_code=201, response_model=LeadRead)
async def create_lead(
    body: LeadCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Create a lead. E-mails are unique among leads (any case): a duplicate is a 409
    whose `errors` name the existing lead, even a deleted one (restore that instead).
    `score` is filled by the AI service and never accepted here."""
    lead = await services.marketing.create_lead.remote(principal, body)
    return record(lead, 201, f"/leads/{lead.id}")


@router.get("/leads", response_model=Page[LeadRead])
async def list_leads(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Leads across all shards, cursor-paged. Filters: `status`, `source`, `owner_id`,
    `campaign_id`, `email`, `created_at[gte]`, `created_at[lt]`, `score[gte]`;
    `sort` = `created_at`, `-created_at` (default), `score`, `-score` (unscored last)."""
    query = parse_list_params(request.query_params.multi_items(), LeadListQuery)
    return json(await services.marketing.list_leads.remote(principal, query))


@router.get("/leads/{lead_id}", response_model=LeadRead)
async def get_lead(
    lead_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.marketing.get_lead.remote(principal, lead_id))


@router.patch("/leads/{lead_id}", response_model=LeadRead)
async def update_lead(
    lead_id: RecordId,
    body: LeadUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Partial update (`If-Match` for 412 on a stale version). The e-mail cannot change
    and `converted` is set only by a conversion."""
    return record(await services.marketing.update_lead.remote(principal, lead_id, body, version))


@router.delete("/leads/{lead_id}", status_code=204)
async def delete_lead(
    lead_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    return no_content(await services.marketing.delete_lead.remote(principal, lead_id, version))


@router.post("/leads/{lead_id}/restore", response_model=LeadRead)
async def restore_lead(
    lead_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.marketing.restore_lead.remote(principal, lead_id))


@router.get("/leads/{lead_id}/history", response_model=Page[ChangeRead])
async def lead_history(
    lead_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Changes of the lead's audited fields, newest first."""
    query = _history(request)
    return json(await services.marketing.lead_history.remote(principal, lead_id, query))


@router.post("/leads/{lead_id}/convert", response_model=ConversionRead)
async def convert_lead(
    lead_id: RecordId, body: LeadConvert, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Convert the lead into a customer (or attach it to `customer_id`), a contact and,
    with `create_deal`, a deal. Resumable and idempotent: after a failure, call again
    (with corrected options) and it goes on from the recorded state; after completion
    it returns the same conversion. The lead shows as converted only once every step
    is done."""
    return json(await services.marketing.convert_lead.remote(principal, lead_id, body))


@router.get("/leads/{lead_id}/conversion", response_model=ConversionRead)
async def get_conversion(
    lead_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """The lead's conversion and how far it got (404 if never converted)."""
    return json(await services.marketing.get_conversion.remote(principal, lead_id))


# -- campaigns -----------------------------------------------------------------------
@router.post("/campaigns", status_code=201, response_model=CampaignRead)
async def create_campaign(
    body: CampaignCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    campaign = await services.marketing.create_campaign.remote(principal, body)
    return record(campaign, 201, f"/campaigns/{campaign.id}")


@router.get("/campaigns", response_model=Page[CampaignRead])
async def list_campaigns(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Filters: `status`, `type`, `owner_id`, `name[prefix]`, `created_at[gte]`,
    `created_at[lt]`; `sort` = `created_at`, `name` (prefix - for descending)."""
    query = parse_list_params(request.query_params.multi_items(), CampaignListQuery)
    return json(await services.marketing.list_campaigns.remote(principal, query))


@router.get("/campaigns/{campaign_id}", response_model=CampaignRead)
async def get_campaign(
    campaign_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.marketing.get_campaign.remote(principal, campaign_id))


@router.patch("/campaigns/{campaign_id}", response_model=CampaignRead)
async def update_campaign(
    campaign_id: RecordId,
    body: CampaignUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Partial update; the end date may not fall before the start date (422)."""
    return record(
        await services.marketing.update_campaign.remote(principal, campaign_id, body, version)
    )


@router.delete("/campaigns/{campaign_id}", status_code=204)
async def delete_campaign(
    campaign_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    return no_content(
        await services.marketing.delete_campaign.remote(principal, campaign_id, version)
    )


@router.post("/campaigns/{campaign_id}/restore", response_model=CampaignRead)
async def restore_campaign(
    campaign_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.marketing.restore_campaign.remote(principal, campaign_id))


@router.get("/campaigns/{campaign_id}/history", response_model=Page[ChangeRead])
async def campaign_history(
    campaign_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    query = _history(request)
    return json(await services.marketing.campaign_history.remote(principal, campaign_id, query))


@router.post("/campaigns/{campaign_id}/members", status_code=201, response_model=MemberRead)
async def add_member(
    campaign_id: RecordId, body: MemberCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Add a contact (`contact_id`) or a lead (`lead_id`), once per campaign (409)."""
    member = await services.marketing.add_member.remote(principal, campaign_id, body)
    return record(member, 201, f"/campaigns/{campaign_id}/members/{member.id}")


@router.get("/campaigns/{campaign_id}/members", response_model=Page[MemberRead])
async def list_members(
    campaign_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Filter `status`; `sort` = `created_at` or `-created_at`."""
    query = parse_list_params(request.query_params.multi_items(), MemberListQuery)
    return json(await services.marketing.list_members.remote(principal, campaign_id, query))


@router.patch("/campaigns/{campaign_id}/members/{member_id}", response_model=MemberRead)
async def update_member(
    campaign_id: RecordId,
    member_id: RecordId,
    body: MemberUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    return record(
        await services.marketing.update_member.remote(
            principal, campaign_id, member_id, body, version
        )
    )


@router.delete("/campaigns/{campaign_id}/members/{member_id}", status_code=204)
async def remove_member(
    campaign_id: RecordId,
    member_id: RecordId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    """Remove a member (adding it again brings it back)."""
    return no_content(
        await services.marketing.remove_member.remote(principal, campaign_id, member_id, version)
    )


# -- capture forms -------------------------------------------------------------------
@router.post("/forms", status_code=201, response_model=FormRead)
async def create_form(
    body: FormCreate, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """A capture form; its random `form_key` is the public address
    `POST /capture/{form_key}`."""
    form = await services.marketing.create_form.remote(principal, body)
    return record(form, 201, f"/forms/{form.id}")


@router.get("/forms", response_model=Page[FormRead])
async def list_forms(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    query = parse_list_params(request.query_params.multi_items(), FormListQuery)
    return json(await services.marketing.list_forms.remote(principal, query))


@router.get("/forms/{form_id}", response_model=FormRead)
async def get_form(
    form_id: RecordId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return record(await services.marketing.get_form.remote(principal, form_id))


@router.patch("/forms/{form_id}", response_model=FormRead)
async def update_form(
    form_id: RecordId,
    body: FormUpdate,
    principal: CurrentPrincipal,
    services: ServicesDep,
    version: IfMatch,
) -> Response:
    return record(await services.marketing.update_form.remote(principal, form_id, body, version))


@router.get("/forms/{form_id}/history", response_model=Page[ChangeRead])
async def form_history(
    form_id: RecordId, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Changes of name, fields, required fields, default source, campaign, owner and
    active, with creation and deletion; newest first (`sort=created_at` for oldest)."""
    query = _history(request)
    return json(await services.marketing.form_history.remote(principal, form_id, query))


@router.delete("/forms/{form_id}", status_code=204)
async def delete_form(
    form_id: RecordId, principal: CurrentPrincipal, services: ServicesDep, version: IfMatch
) -> Response:
    return no_content(await services.marketing.delete_form.remote(principal, form_id, version))
