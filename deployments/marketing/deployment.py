"""`MarketingService` as a Ray Serve deployment: thin; every method takes the caller's
`Principal` first and the same pydantic models the HTTP routes use.

    handle = serve.get_deployment_handle("MarketingService", app_name="nextflow")
    lead = await handle.create_lead.remote(principal, LeadCreate(email="a@b.com"))

It reaches the Customer (and Sales) deployments through the handles bound in
`gateway/app.py`. Its Serve `user_config` may hold `{"fail_conversion_after": "customer"}`
(or "contact", "deal"): a fault-injection seam for crash tests, off by default.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments._kit.boundary import boundary
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.marketing.conversion import ConversionFaults
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
from deployments.marketing.service import MarketingService as _Logic
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Database, Shards


@serve.deployment(name="MarketingService")
class MarketingDeployment:
    async def __init__(  # type: ignore[misc]  # Serve awaits async inits
        self, customers: Any = None, sales: Any = None
    ) -> None:
        self._svc = _Logic(
            await Shards.connect("marketing"), Database("marketing_config"), customers, sales
        )

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's `user_config`: only the fault-injection seam for now."""
        self._svc.faults = ConversionFaults.from_user_config(config)

    async def check_health(self) -> None:
        await self._svc.shards.alive()

    async def ready(self) -> None:
        """Readiness: the marketing shards and `marketing_config` answer."""
        await self._svc.shards.ping()
        await self._svc.config.ping()

    # -- leads ---------------------------------------------------------------------
    @boundary
    async def create_lead(self, principal: Principal, data: LeadCreate) -> LeadRead:
        return await self._svc.create_lead(principal, data)

    @boundary
    async def get_lead(self, principal: Principal, lead_id: int) -> LeadRead:
        return await self._svc.get_lead(principal, lead_id)

    @boundary
    async def update_lead(
        self, principal: Principal, lead_id: int, data: LeadUpdate, if_version: int | None = None
    ) -> LeadRead:
        return await self._svc.update_lead(principal, lead_id, data, if_version)

    @boundary
    async def delete_lead(
        self, principal: Principal, lead_id: int, if_version: int | None = None
    ) -> LeadRead:
        return await self._svc.delete_lead(principal, lead_id, if_version)

    @boundary
    async def restore_lead(self, principal: Principal, lead_id: int) -> LeadRead:
        return await self._svc.restore_lead(principal, lead_id)

    @boundary
    async def list_leads(self, principal: Principal, query: LeadListQuery) -> Page[LeadRead]:
        return await self._svc.list_leads(principal, query)

    @boundary
    async def lead_history(
        self, principal: Principal, lead_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.lead_history(principal, lead_id, query)

    # -- conversion ----------------------------------------------------------------
    @boundary
    async def convert_lead(
        self, principal: Principal, lead_id: int, options: LeadConvert
    ) -> ConversionRead:
        return await self._svc.convert_lead(principal, lead_id, options)

    @boundary
    async def get_conversion(self, principal: Principal, lead_id: int) -> ConversionRead:
        return await self._svc.get_conversion(principal, lead_id)

    @boundary
    async def resume_conversions(
        self, principal: Principal, stale_after_s: float = 300, limit: int = 100
    ) -> list[ConversionRead]:
        """Finish conversions left in progress for `stale_after_s` (after a crash)."""
        return await self._svc.resume_conversions(principal, stale_after_s, limit)

    # -- campaigns -----------------------------------------------------------------
    @boundary
    async def create_campaign(self, principal: Principal, data: CampaignCreate) -> CampaignRead:
        return await self._svc.create_campaign(principal, data)

    @boundary
    async def get_campaign(self, principal: Principal, campaign_id: int) -> CampaignRead:
        return await self._svc.get_campaign(principal, campaign_id)

    @boundary
    async def update_campaign(
        self,
        principal: Principal,
        campaign_id: int,
        data: CampaignUpdate,
        if_version: int | None = None,
    ) -> CampaignRead:
        return await self._svc.update_campaign(principal, campaign_id, data, if_version)

    @boundary
    async def delete_campaign(
        self, principal: Principal, campaign_id: int, if_version: int | None = None
    ) -> CampaignRead:
        return await self._svc.delete_campaign(principal, campaign_id, if_version)

    @boundary
    async def restore_campaign(self, principal: Principal, campaign_id: int) -> CampaignRead:
        return await self._svc.restore_campaign(principal, campaign_id)

    @boundary
    async def list_campaigns(
        self, principal: Principal, query: CampaignListQuery
    ) -> Page[CampaignRead]:
        return await self._svc.list_campaigns(principal, query)

    @boundary
    async def campaign_history(
        self, principal: Principal, campaign_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.campaign_history(principal, campaign_id, query)

    @boundary
    async def add_member(
        self, principal: Principal, campaign_id: int, data: MemberCreate
    ) -> MemberRead:
        return await self._svc.add_member(principal, campaign_id, data)

    @boundary
    async def list_members(
        self, principal: Principal, campaign_id: int, query: MemberListQuery
    ) -> Page[MemberRead]:
        return await self._svc.list_members(principal, campaign_id, query)

    @boundary
    async def update_member(
        self,
        principal: Principal,
        campaign_id: int,
        member_id: int,
        data: MemberUpdate,
        if_version: int | None = None,
    ) -> MemberRead:
        return await self._svc.update_member(principal, campaign_id, member_id, data, if_version)

    @boundary
    async def remove_member(
        self,
        principal: Principal,
        campaign_id: int,
        member_id: int,
        if_version: int | None = None,
    ) -> MemberRead:
        return await self._svc.remove_member(principal, campaign_id, member_id, if_version)

    # -- capture forms and public capture ------------------------------------------
    @boundary
    async def create_form(self, principal: Principal, data: FormCreate) -> FormRead:
        return await self._svc.create_form(principal, data)

    @boundary
    async def get_form(self, principal: Principal, form_id: int) -> FormRead:
        return await self._svc.get_form(principal, form_id)

    @boundary
    async def update_form(
        self, principal: Principal, form_id: int, data: FormUpdate, if_version: int | None = None
    ) -> FormRead:
        return await self._svc.update_form(principal, form_id, data, if_version)

    @boundary
    async def delete_form(
        self, principal: Principal, form_id: int, if_version: int | None = None
    ) -> FormRead:
        return await self._svc.delete_form(principal, form_id, if_version)

    @boundary
    async def form_history(
        self, principal: Principal, form_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.form_history(principal, form_id, query)

    @boundary
    async def list_forms(self, principal: Principal, query: FormListQuery) -> Page[FormRead]:
        return await self._svc.list_forms(principal, query)

    @boundary
    async def capture(
        self, principal: Principal, form_key: str, payload: dict[str, Any]
    ) -> CaptureAccepted:
        return await self._svc.capture(principal, form_key, payload)
