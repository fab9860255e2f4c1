"""Marketing, under `/v1/marketing` (the marketing application's prefix): leads (with
conversion), campaigns and their members, capture forms, and the public capture
endpoint. Path: this file -> deployments/marketing/service.py ->
deployments/marketing/repo.py -> shards/.

Public lead capture: a web page posts a form to `POST /v1/marketing/capture/{form_key}`
with no user token. Anyone on the internet can call it, so: the body is capped, the
call is rate-limited per form and per client address before anything is read, the
payload is validated strictly against the form, and the answer (202
`{"status": "received"}`) is the same whether the e-mail was already a lead or not."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from deployments._kit.custom_fields import ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.marketing.capture import MAX_BODY_BYTES, MAX_LENGTH
from deployments.marketing.schemas import (
    CampaignCreate,
    CampaignListQuery,
    CampaignRead,
    CampaignUpdate,
    CaptureAccepted,
    ConversionRead,
    FormCreate,
    FormListQuery,
    FormRead,
    FormUpdate,
    LeadBatch,
    LeadBatchResult,
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
from deployments.marketing.service import MarketingService
from gateway import idempotency
from gateway.context import (
    CurrentPrincipal,
    IfMatch,
    RecordId,
    enforce,
    json,
    list_params,
    no_content,
    record,
    service,
    state,
)
from gateway.errors import BadRequest, Validation
from gateway.listing import Page, query_parameters
from gateway.openapi import PUBLIC, request_body
from gateway.principal import Principal
from gateway.problems import problem
from gateway.trust import client_address

router = APIRouter()  # the application's routes: the two below
_marketing = APIRouter(tags=["marketing"])
_capture = APIRouter(tags=["capture"])
Service = Annotated[MarketingService, Depends(service)]
FormKey = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

# Who a capture runs as: the system, with only what a capture needs.
CAPTURE_PRINCIPAL = Principal(
    user_id=0,
    role="system",
    kind="system",
    permissions=frozenset({"form:read", "lead:write", "campaign:write"}),
)


# -- leads ---------------------------------------------------------------------------
@_marketing.post("/leads", status_code=201, response_model=LeadRead)
@idempotency.in_effect
async def create_lead(
    body: LeadCreate, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Create a lead. E-mails are unique among leads (any case): a duplicate is a 409
    whose `errors` name the existing lead, even a deleted one (restore that instead).
    `score` is filled by the AI service and never accepted here. An `Idempotency-Key`
    is kept in the lead's own transaction (one lead per key)."""
    once = idempotency.effect_key(request)
    lead = await svc.create_lead(principal, body, once)
    return idempotency.answered(record(lead, 201, f"/v1/marketing/leads/{lead.id}"), once)


@_marketing.post("/leads/batch", response_model=LeadBatchResult)
@idempotency.in_effect
async def batch_leads(
    body: LeadBatch, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Up to 100 lead items, as `POST /v1/customers/batch`: each create placed by its
    e-mail (a duplicate e-mail is that item's 409), updates with `if_match`, deletes;
    one transaction per logical shard; each item once under one `Idempotency-Key`."""
    once = idempotency.effect_key(request)
    return idempotency.answered(json(await svc.batch_leads(principal, body, once)), once)


@_marketing.get(
    "/leads", response_model=Page[LeadRead], openapi_extra=query_parameters(LeadListQuery)
)
async def list_leads(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Leads across all shards, cursor-paged. Filters: `status`, `source`, `owner_id`,
    `campaign_id`, `email`, `created_at[gte]`, `created_at[lt]`, `score[gte]`;
    `sort` = `created_at`, `-created_at` (default), `score`, `-score` (unscored last)."""
    query = await list_params(request, LeadListQuery)
    return json(await svc.list_leads(principal, query))


@_marketing.get("/leads/schema", response_model=ObjectSchema)
async def lead_schema(principal: CurrentPrincipal, svc: Service) -> Response:
    """The lead create body as JSON Schema with `custom_fields` spelled out from the
    live custom field definitions of leads (`/v1/auth/fields`)."""
    return json(await svc.lead_schema(principal))


@_marketing.get("/leads/{lead_id}", response_model=LeadRead)
async def get_lead(lead_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_lead(principal, lead_id))


@_marketing.patch("/leads/{lead_id}", response_model=LeadRead)
async def update_lead(
    lead_id: RecordId,
    body: LeadUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Partial update (`If-Match` for 412 on a stale version). The e-mail cannot change
    and `converted` is set only by a conversion."""
    return record(await svc.update_lead(principal, lead_id, body, version))


@_marketing.delete("/leads/{lead_id}", status_code=204)
async def delete_lead(
    lead_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    return no_content(await svc.delete_lead(principal, lead_id, version))


@_marketing.post("/leads/{lead_id}/restore", response_model=LeadRead)
async def restore_lead(lead_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.restore_lead(principal, lead_id))


@_marketing.get(
    "/leads/{lead_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def lead_history(
    lead_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of the lead's audited fields, newest first."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.lead_history(principal, lead_id, query))


@_marketing.post("/leads/{lead_id}/convert", response_model=ConversionRead)
async def convert_lead(
    lead_id: RecordId, body: LeadConvert, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Convert the lead into a customer (or attach it to `customer_id`), a contact and,
    with `create_deal`, a deal. Resumable and idempotent: after a failure, call again
    (with corrected options) and it goes on from the recorded state; after completion
    it returns the same conversion. The lead shows as converted only once every step
    is done."""
    return json(await svc.convert_lead(principal, lead_id, body))


@_marketing.get("/leads/{lead_id}/conversion", response_model=ConversionRead)
async def get_conversion(lead_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    """The lead's conversion and how far it got (404 if never converted)."""
    return json(await svc.get_conversion(principal, lead_id))


# -- campaigns -----------------------------------------------------------------------
@_marketing.post("/campaigns", status_code=201, response_model=CampaignRead)
async def create_campaign(
    body: CampaignCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    campaign = await svc.create_campaign(principal, body)
    return record(campaign, 201, f"/v1/marketing/campaigns/{campaign.id}")


@_marketing.get(
    "/campaigns",
    response_model=Page[CampaignRead],
    openapi_extra=query_parameters(CampaignListQuery),
)
async def list_campaigns(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Filters: `status`, `type`, `owner_id`, `name[prefix]`, `created_at[gte]`,
    `created_at[lt]`; `sort` = `created_at`, `name` (prefix - for descending)."""
    query = await list_params(request, CampaignListQuery)
    return json(await svc.list_campaigns(principal, query))


@_marketing.get("/campaigns/{campaign_id}", response_model=CampaignRead)
async def get_campaign(
    campaign_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.get_campaign(principal, campaign_id))


@_marketing.patch("/campaigns/{campaign_id}", response_model=CampaignRead)
async def update_campaign(
    campaign_id: RecordId,
    body: CampaignUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Partial update; the end date may not fall before the start date (422)."""
    return record(await svc.update_campaign(principal, campaign_id, body, version))


@_marketing.delete("/campaigns/{campaign_id}", status_code=204)
async def delete_campaign(
    campaign_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    return no_content(await svc.delete_campaign(principal, campaign_id, version))


@_marketing.post("/campaigns/{campaign_id}/restore", response_model=CampaignRead)
async def restore_campaign(
    campaign_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.restore_campaign(principal, campaign_id))


@_marketing.get(
    "/campaigns/{campaign_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def campaign_history(
    campaign_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    query = await list_params(request, HistoryQuery)
    return json(await svc.campaign_history(principal, campaign_id, query))


@_marketing.post("/campaigns/{campaign_id}/members", status_code=201, response_model=MemberRead)
async def add_member(
    campaign_id: RecordId, body: MemberCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Add a contact (`contact_id`) or a lead (`lead_id`), once per campaign (409)."""
    member = await svc.add_member(principal, campaign_id, body)
    return record(member, 201, f"/v1/marketing/campaigns/{campaign_id}/members/{member.id}")


@_marketing.get(
    "/campaigns/{campaign_id}/members",
    response_model=Page[MemberRead],
    openapi_extra=query_parameters(MemberListQuery),
)
async def list_members(
    campaign_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Filter `status`; `sort` = `created_at` or `-created_at`."""
    query = await list_params(request, MemberListQuery)
    return json(await svc.list_members(principal, campaign_id, query))


@_marketing.patch("/campaigns/{campaign_id}/members/{member_id}", response_model=MemberRead)
async def update_member(
    campaign_id: RecordId,
    member_id: RecordId,
    body: MemberUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    return record(await svc.update_member(principal, campaign_id, member_id, body, version))


@_marketing.delete("/campaigns/{campaign_id}/members/{member_id}", status_code=204)
async def remove_campaign_member(
    campaign_id: RecordId,
    member_id: RecordId,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    """Remove a member (adding it again brings it back)."""
    return no_content(await svc.remove_member(principal, campaign_id, member_id, version))


# -- capture forms -------------------------------------------------------------------
@_marketing.post("/forms", status_code=201, response_model=FormRead)
async def create_form(body: FormCreate, principal: CurrentPrincipal, svc: Service) -> Response:
    """A capture form; its random `form_key` is the public address
    `POST /v1/marketing/capture/{form_key}`."""
    form = await svc.create_form(principal, body)
    return record(form, 201, f"/v1/marketing/forms/{form.id}")


@_marketing.get(
    "/forms", response_model=Page[FormRead], openapi_extra=query_parameters(FormListQuery)
)
async def list_forms(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    query = await list_params(request, FormListQuery)
    return json(await svc.list_forms(principal, query))


@_marketing.get("/forms/{form_id}", response_model=FormRead)
async def get_form(form_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_form(principal, form_id))


@_marketing.patch("/forms/{form_id}", response_model=FormRead)
async def update_form(
    form_id: RecordId,
    body: FormUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    return record(await svc.update_form(principal, form_id, body, version))


@_marketing.get(
    "/forms/{form_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def form_history(
    form_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Changes of name, fields, required fields, default source, campaign, owner and
    active, with creation and deletion; newest first (`sort=created_at` for oldest)."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.form_history(principal, form_id, query))


@_marketing.delete("/forms/{form_id}", status_code=204)
async def delete_form(
    form_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    return no_content(await svc.delete_form(principal, form_id, version))


# -- public capture (no token) ------------------------------------------------------
def _payload(body: bytes, content_type: str) -> dict[str, Any]:
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the form body is malformed") from None
        payload: dict[str, Any] = {}
        for name, value in pairs:
            if name in payload:
                raise Validation("invalid capture", [{"field": name, "message": "given twice"}])
            payload[name] = value
        return payload
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise Validation("invalid capture", [{"field": "body", "message": "must be an object"}])
    return parsed


_CAPTURED = request_body(
    {
        "application/json": {
            "type": "object",
            "properties": {
                name: {"type": ["string", "null"], "maxLength": most}
                for name, most in MAX_LENGTH.items()
            },
            "additionalProperties": False,
        },
        "application/x-www-form-urlencoded": {
            "type": "object",
            "properties": {
                name: {"type": "string", "maxLength": most} for name, most in MAX_LENGTH.items()
            },
            "additionalProperties": False,
        },
    },
    "The fields the form has (of these), at most 8 KiB in all; those the form requires"
    " must be given.",
)


@_capture.post(
    "/capture/{form_key}",
    status_code=202,
    response_model=CaptureAccepted,
    openapi_extra={**PUBLIC, **_CAPTURED},
)
async def capture(form_key: FormKey, request: Request, svc: Service) -> Response:
    """Submit a capture form (JSON object or url-encoded form; no authentication).
    Creates the lead, or touches the lead that already has this e-mail; answers 202
    either way. 404 for an unknown or inactive form, 422 for fields the form does not
    have or invalid values, 413 above 8 KiB, 429 (Retry-After) when rate-limited."""
    st = state(request)
    peer = request.client.host if request.client else None
    client = client_address(peer, request.headers.get("x-forwarded-for"), st.trusted_proxies)
    if st.capture_form_limiter is not None:
        await enforce(request, st.capture_form_limiter, f"capture-form:{form_key}")
    if st.capture_client_limiter is not None:
        await enforce(request, st.capture_client_limiter, f"capture-client:{client}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        return problem(request, 413, "too-large", "Request too large", "capture body too large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return problem(request, 413, "too-large", "Request too large", "capture body too large")
    payload = _payload(body, request.headers.get("content-type", "application/json"))
    accepted = await svc.capture(CAPTURE_PRINCIPAL, form_key, payload)
    return json(accepted, 202)


router.include_router(_marketing)
router.include_router(_capture)
