"""Marketing logic: leads, campaigns and members, capture forms, public capture and
lead conversion. No SQL here (that is repo.py) and no Ray or FastAPI (deployment.py);
other services are reached through the handles given to the constructor."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from deployments._kit.batch import BatchDelete, Plan
from deployments._kit.batch import run as run_batch
from deployments._kit.boundary import remote
from deployments._kit.custom_fields import Definitions, ObjectFields, ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery, list_changes, redact_changes
from deployments._kit.once import write_once
from deployments._kit.sql import Denied, Stale, written
from deployments._kit.unique_values import Records
from deployments.customer.schemas import ContactCreate, CustomerCreate
from deployments.marketing import repo
from deployments.marketing.capture import parse_capture
from deployments.marketing.conversion import (
    ConversionFaults,
    next_state,
    source_key,
    step_for,
)
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
    LeadBatchCreate,
    LeadBatchResult,
    LeadBatchUpdate,
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
from deployments.sales.schemas import DealCreate
from gateway.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    Unavailable,
    Validation,
)
from gateway.idempotency import Once
from gateway.listing import Page, decode_cursor, merge_pages, row_key, validate_sort
from gateway.principal import Principal
from shards import ShardNotFound
from shards.client import Database, Shards

log = logging.getLogger("nextflow.marketing")


class MarketingService:
    def __init__(
        self,
        shards: Shards,
        config: Database,
        customers: Any = None,
        sales: Any = None,
        faults: ConversionFaults | None = None,
        fields: Definitions | None = None,
    ) -> None:
        """`customers` / `sales`: the Customer and Sales deployment handles (lead
        conversion); `faults`: the test-only fault seam, off by default; `fields`:
        the custom field definitions (None: leads' custom fields kept unchecked)."""
        self.shards = shards
        self.config = config
        self.customers = customers
        self.sales = sales
        self.faults = faults or ConversionFaults()
        self.lead_fields = ObjectFields("leads", fields, Records(shards, "leads"))

    def _shard(self, record_id: int, kind: str) -> int:
        try:
            return self.shards.shard_for_id(record_id)
        except ShardNotFound:
            raise NotFound(f"{kind} {record_id} not found") from None

    # -- leads ---------------------------------------------------------------------
    async def create_lead(
        self, principal: Principal, data: LeadCreate, once: Once | None = None
    ) -> LeadRead:
        """A lead with an e-mail is placed by a stable hash of the lower-cased e-mail,
        so the unique index on that shard finds any duplicate without a scatter. With
        `once` (the caller's `Idempotency-Key`), made once per key in its transaction."""
        principal.require("lead:write")
        owner_id = data.owner_id if data.owner_id is not None else principal.user_id
        _may_give(principal, "lead", owner_id)
        data = await self.lead_fields.create(data)
        placed_by = data.email.lower() if data.email else (once.slot if once else None)
        shard = self.shards.place(key=placed_by)
        async with await self.lead_fields.claim(data.custom_fields, key=once):
            made = await write_once(
                self.shards, shard, once, LeadRead,
                repo.create_lead, shard, data, owner_id, principal.user_id,
            )  # fmt: skip
            if isinstance(made, repo.Duplicate):
                raise _duplicate(principal, made)
        return await self._lead(principal, made)

    async def batch_leads(
        self, principal: Principal, body: LeadBatch, key: Once | None = None
    ) -> LeadBatchResult:
        """Creates (each placed by its e-mail, as a single create), updates and deletes
        of leads, each checked and answered as the single operation would be, in one
        transaction per logical shard (deployments/_kit/batch.py)."""
        plan = Plan(principal, "lead", LeadRead, LeadBatchResult, key)

        def duplicate(made: Any) -> AppError | None:
            return _duplicate(principal, made) if isinstance(made, repo.Duplicate) else None

        async def prepare(i: int, item: LeadBatchCreate | LeadBatchUpdate | BatchDelete) -> None:
            if isinstance(item, LeadBatchCreate):
                principal.require("lead:write")
                field = f"items.{i}.data.custom_fields"
                data = await self.lead_fields.create(item.data, field)
                owner_id = data.owner_id if data.owner_id is not None else principal.user_id
                _may_give(principal, "lead", owner_id)
                once = plan.item_key(i, item)
                placed_by = data.email.lower() if data.email else (once.slot if once else None)
                shard = self.shards.place(key=placed_by)
                claim = await self.lead_fields.claim(data.custom_fields, key=once, field=field)
                plan.add(
                    i, "create", shard, repo.create_lead, shard, data, owner_id,
                    principal.user_id, key=once, explain=duplicate, claim=claim,
                )  # fmt: skip
                return
            shard = self._shard(item.id, "lead")
            if isinstance(item, LeadBatchUpdate):
                changes = item.data.model_dump(exclude_unset=True)
                if "owner_id" in changes:
                    _may_give(principal, "lead", changes["owner_id"])
                field = f"items.{i}.data.custom_fields"
                changes = await self.lead_fields.changes(changes, field)
                claim = await self.lead_fields.claim(
                    changes.get("custom_fields"), record=item.id, field=field
                )
                plan.change(i, item, shard, repo.update_lead, "lead:write", changes, claim=claim)
            else:
                plan.change(i, item, shard, repo.delete_lead, "lead:delete")

        done = await run_batch(plan, self.shards, body.items, prepare)
        return await self.lead_fields.shown_results(done)

    async def purge_custom_field(self, principal: Principal, object_name: str, key: str) -> int:
        """Remove a deleted custom field's values from every lead (the auth
        service's purge, `field:write`); how many records held one."""
        principal.require("field:write")
        return await self.lead_fields.purge(key)

    async def lead_schema(self, principal: Principal) -> ObjectSchema:
        """The lead create body as JSON Schema with the live custom fields."""
        principal.require("lead:read")
        return await self.lead_fields.schema(LeadCreate)

    async def _lead(self, principal: Principal, lead: LeadRead) -> LeadRead:
        """What the caller sees of a lead (hidden fields null, live custom fields)."""
        return await self.lead_fields.shown(principal.redact("lead", lead))

    async def get_lead(self, principal: Principal, lead_id: int) -> LeadRead:
        """A live lead the caller's `lead:read` scope reaches (else 404)."""
        principal.require("lead:read")
        found = await self.shards.read(
            self._shard(lead_id, "lead"), repo.get_lead, lead_id, principal.owners("lead:read")
        )
        if found is None:
            raise NotFound(f"lead {lead_id} not found")
        return await self._lead(principal, found)

    async def update_lead(
        self,
        principal: Principal,
        lead_id: int,
        data: LeadUpdate,
        if_version: int | None = None,
    ) -> LeadRead:
        principal.require("lead:write")
        changes = data.model_dump(exclude_unset=True)
        if "owner_id" in changes:
            _may_give(principal, "lead", changes["owner_id"])
        changes = await self.lead_fields.changes(changes)
        shard = self._shard(lead_id, "lead")
        async with await self.lead_fields.claim(changes.get("custom_fields"), record=lead_id):
            outcome = await self.shards.write(
                shard, repo.update_lead, lead_id, changes, if_version, principal.user_id,
                principal.owners("lead:write"),
            )  # fmt: skip
            updated = written(outcome, "lead", lead_id, principal)
        return await self._lead(principal, updated)

    async def delete_lead(
        self, principal: Principal, lead_id: int, if_version: int | None = None
    ) -> LeadRead:
        principal.require("lead:delete")
        shard = self._shard(lead_id, "lead")
        outcome = await self.shards.write(
            shard, repo.delete_lead, lead_id, if_version, principal.user_id,
            principal.owners("lead:delete"),
        )  # fmt: skip
        return await self._lead(principal, written(outcome, "lead", lead_id, principal))

    async def restore_lead(self, principal: Principal, lead_id: int) -> LeadRead:
        principal.require("lead:delete")
        shard = self._shard(lead_id, "lead")
        async with await self.lead_fields.claim_restore(lead_id):
            restored = await self.shards.write(
                shard, repo.restore_lead, lead_id, principal.user_id,
                principal.owners("lead:delete"),
            )  # fmt: skip
            if restored is None:
                raise NotFound(f"lead {lead_id} not found")
        return await self._lead(principal, restored)

    async def list_leads(self, principal: Principal, query: LeadListQuery) -> Page[LeadRead]:
        """Leads across every shard in one global order (a filter on `email` reads only
        the shard that e-mail hashes to)."""
        principal.require("lead:read")
        if query.email is not None and "email" in principal.hidden.get("lead", ()):
            # A filter on a field the role may not see would tell it, lead by lead.
            raise Forbidden("your role may not filter leads by email")
        order = validate_sort(query)
        sort = await self.lead_fields.sort(order)
        position = decode_cursor(query)
        position = sort.position(position) if sort else position
        owners = principal.owners("lead:read")
        custom = await self.lead_fields.filters(query.custom)
        runs_call = self.shards.gather(
            repo.list_leads, query, order, position, owners, custom, sort
        )
        if query.count:
            runs, counts = await asyncio.gather(
                runs_call, self.shards.gather(repo.count_leads, query, owners, custom)
            )
            total: int | None = sum(counts)
        else:
            runs, total = await runs_call, None
        key = (
            sort.row_key if sort else _score_key if order.field == "score" else row_key(order.field)
        )
        items, cursor = merge_pages(runs, key, order, query.limit)
        items = await self.lead_fields.shown_all(principal.redact_all("lead", items))
        return Page[LeadRead](data=items, next_cursor=cursor, total=total)

    async def lead_history(
        self, principal: Principal, lead_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a live lead the caller may read; fields hidden from the role show
        that they changed, not their values."""
        await self.get_lead(principal, lead_id)
        page = await self._history("lead", self._shard(lead_id, "lead"), lead_id, query)
        return redact_changes(principal, "lead", page)

    async def _history(
        self, record_type: str, shard: int, record_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        order = validate_sort(query)
        position = decode_cursor(query)
        rows = await self.shards.read(
            shard, list_changes, record_type, record_id, query.limit, order, position
        )
        items, cursor = merge_pages([rows], row_key("created_at"), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)

    # -- campaigns -----------------------------------------------------------------
    async def create_campaign(self, principal: Principal, data: CampaignCreate) -> CampaignRead:
        principal.require("campaign:write")
        owner_id = data.owner_id if data.owner_id is not None else principal.user_id
        _may_give(principal, "campaign", owner_id)
        shard = self.shards.place()
        created = await self.shards.write(
            shard, repo.create_campaign, shard, data, owner_id, principal.user_id
        )
        return principal.redact("campaign", created)

    async def get_campaign(self, principal: Principal, campaign_id: int) -> CampaignRead:
        """A live campaign the caller's `campaign:read` scope reaches (else 404)."""
        principal.require("campaign:read")
        shard = self._shard(campaign_id, "campaign")
        found = await self.shards.read(
            shard, repo.get_campaign, campaign_id, principal.owners("campaign:read")
        )
        if found is None:
            raise NotFound(f"campaign {campaign_id} not found")
        return principal.redact("campaign", found)

    async def update_campaign(
        self,
        principal: Principal,
        campaign_id: int,
        data: CampaignUpdate,
        if_version: int | None = None,
    ) -> CampaignRead:
        principal.require("campaign:write")
        changes = data.model_dump(exclude_unset=True)
        if "owner_id" in changes:
            _may_give(principal, "campaign", changes["owner_id"])
        shard = self._shard(campaign_id, "campaign")
        outcome = await self.shards.write(
            shard, repo.update_campaign, campaign_id, changes, if_version, principal.user_id,
            principal.owners("campaign:write"),
        )  # fmt: skip
        if isinstance(outcome, repo.BadDates):
            raise Validation(
                "end_date is before start_date",
                [{"field": "end_date", "message": "end_date is before start_date"}],
            )
        return principal.redact("campaign", written(outcome, "campaign", campaign_id, principal))

    async def delete_campaign(
        self, principal: Principal, campaign_id: int, if_version: int | None = None
    ) -> CampaignRead:
        principal.require("campaign:delete")
        shard = self._shard(campaign_id, "campaign")
        outcome = await self.shards.write(
            shard, repo.delete_campaign, campaign_id, if_version, principal.user_id,
            principal.owners("campaign:delete"),
        )  # fmt: skip
        return principal.redact("campaign", written(outcome, "campaign", campaign_id, principal))

    async def restore_campaign(self, principal: Principal, campaign_id: int) -> CampaignRead:
        principal.require("campaign:delete")
        shard = self._shard(campaign_id, "campaign")
        restored = await self.shards.write(
            shard, repo.restore_campaign, campaign_id, principal.user_id,
            principal.owners("campaign:delete"),
        )  # fmt: skip
        if restored is None:
            raise NotFound(f"campaign {campaign_id} not found")
        return principal.redact("campaign", restored)

    async def list_campaigns(
        self, principal: Principal, query: CampaignListQuery
    ) -> Page[CampaignRead]:
        principal.require("campaign:read")
        order = validate_sort(query)
        position = decode_cursor(query)
        owners = principal.owners("campaign:read")
        runs_call = self.shards.gather(repo.list_campaigns, query, order, position, owners)
        if query.count:
            runs, counts = await asyncio.gather(
                runs_call, self.shards.gather(repo.count_campaigns, query, owners)
            )
            total: int | None = sum(counts)
        else:
            runs, total = await runs_call, None
        items, cursor = merge_pages(runs, row_key(order.field), order, query.limit)
        items = principal.redact_all("campaign", items)
        return Page[CampaignRead](data=items, next_cursor=cursor, total=total)

    async def campaign_history(
        self, principal: Principal, campaign_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a live campaign the caller may read."""
        await self.get_campaign(principal, campaign_id)
        shard = self._shard(campaign_id, "campaign")
        page = await self._history("campaign", shard, campaign_id, query)
        return redact_changes(principal, "campaign", page)

    # -- members -------------------------------------------------------------------
    async def add_member(
        self, principal: Principal, campaign_id: int, data: MemberCreate
    ) -> MemberRead:
        """A contact or a lead joins a campaign the caller's `campaign:write` scope
        reaches; the member is checked to exist and be readable by the caller (the
        contact through the Customer service). Once per campaign: a duplicate is a 409."""
        principal.require("campaign:write")
        shard = self._shard(campaign_id, "campaign")
        await self._check_member_target(principal, data)
        outcome = await self.shards.write(
            shard, repo.add_member, shard, campaign_id, data, principal.owners("campaign:write")
        )
        if isinstance(outcome, repo.Duplicate):
            field = "contact_id" if data.contact_id is not None else "lead_id"
            raise Conflict(
                f"already a member of campaign {campaign_id}",
                [{"field": field, "message": f"duplicate of member {outcome.existing_id}"}],
            )
        return principal.redact("member", written(outcome, "campaign", campaign_id, principal))

    async def _check_member_target(self, principal: Principal, data: MemberCreate) -> None:
        """A lead or contact the caller may read (one they may not is "no such")."""
        if data.lead_id is not None:
            try:
                shard = self.shards.shard_for_id(data.lead_id)
                found = await self.shards.read(
                    shard, repo.get_lead, data.lead_id, principal.owners("lead:read")
                )
            except ShardNotFound:
                found = None
            if found is None:
                raise Validation("no such lead", [{"field": "lead_id", "message": "not found"}])
        elif data.contact_id is not None and self.customers is not None:
            try:
                await remote(self.customers.get_contact.remote(principal, data.contact_id))
            except NotFound:
                raise Validation(
                    "no such contact", [{"field": "contact_id", "message": "not found"}]
                ) from None

    async def list_members(
        self, principal: Principal, campaign_id: int, query: MemberListQuery
    ) -> Page[MemberRead]:
        """Members of a live campaign the caller's `campaign:read` scope reaches."""
        principal.require("campaign:read")
        if query.count:
            raise Validation(
                "count is not offered on members", [{"field": "count", "message": "not supported"}]
            )
        order = validate_sort(query)
        position = decode_cursor(query)
        shard = self._shard(campaign_id, "campaign")
        rows = await self.shards.read(
            shard, repo.list_members, campaign_id, query, order, position,
            principal.owners("campaign:read"),
        )  # fmt: skip
        if rows is None:
            raise NotFound(f"campaign {campaign_id} not found")
        items, cursor = merge_pages([rows], row_key("created_at"), order, query.limit)
        items = principal.redact_all("member", items)
        return Page[MemberRead](data=items, next_cursor=cursor)

    async def update_member(
        self,
        principal: Principal,
        campaign_id: int,
        member_id: int,
        data: MemberUpdate,
        if_version: int | None = None,
    ) -> MemberRead:
        principal.require("campaign:write")
        shard = self._shard(campaign_id, "campaign")
        outcome = await self.shards.write(
            shard, repo.update_member, campaign_id, member_id, data.status, if_version,
            principal.owners("campaign:write"),
        )  # fmt: skip
        return principal.redact(
            "member", _member_written(outcome, campaign_id, member_id, principal)
        )

    async def remove_member(
        self,
        principal: Principal,
        campaign_id: int,
        member_id: int,
        if_version: int | None = None,
    ) -> MemberRead:
        principal.require("campaign:write")
        shard = self._shard(campaign_id, "campaign")
        outcome = await self.shards.write(
            shard, repo.delete_member, campaign_id, member_id, if_version,
            principal.owners("campaign:write"),
        )  # fmt: skip
        return principal.redact(
            "member", _member_written(outcome, campaign_id, member_id, principal)
        )

    # -- capture forms -------------------------------------------------------------
    async def create_form(self, principal: Principal, data: FormCreate) -> FormRead:
        principal.require("form:write")
        owner_id = data.owner_id if data.owner_id is not None else principal.user_id
        return await self.config.write(
            repo.create_form, data, secrets.token_urlsafe(16), owner_id, principal.user_id
        )

    async def get_form(self, principal: Principal, form_id: int) -> FormRead:
        principal.require("form:read")
        found = await self.config.read(repo.get_form, form_id)
        if found is None:
            raise NotFound(f"form {form_id} not found")
        return found

    async def update_form(
        self,
        principal: Principal,
        form_id: int,
        data: FormUpdate,
        if_version: int | None = None,
    ) -> FormRead:
        principal.require("form:write")
        changes = data.model_dump(exclude_unset=True)
        outcome = await self.config.write(
            repo.update_form, form_id, changes, if_version, principal.user_id
        )
        if isinstance(outcome, repo.BadDates):
            raise Validation(
                "required_fields must be among fields",
                [{"field": "required_fields", "message": "must be among fields"}],
            )
        return written(outcome, "form", form_id)

    async def delete_form(
        self, principal: Principal, form_id: int, if_version: int | None = None
    ) -> FormRead:
        principal.require("form:write")
        outcome = await self.config.write(repo.delete_form, form_id, if_version, principal.user_id)
        return written(outcome, "form", form_id)

    async def form_history(
        self, principal: Principal, form_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a live form's audited fields (in `marketing_config`)."""
        await self.get_form(principal, form_id)
        order = validate_sort(query)
        rows = await self.config.read(
            list_changes, "form", form_id, query.limit, order, decode_cursor(query)
        )
        items, cursor = merge_pages([rows], row_key("created_at"), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)

    async def list_forms(self, principal: Principal, query: FormListQuery) -> Page[FormRead]:
        principal.require("form:read")
        if query.count:
            raise Validation(
                "count is not offered on forms", [{"field": "count", "message": "not supported"}]
            )
        order = validate_sort(query)
        position = decode_cursor(query)
        rows = await self.config.read(repo.list_forms, query, order, position)
        items, cursor = merge_pages([rows], row_key("created_at"), order, query.limit)
        return Page[FormRead](data=items, next_cursor=cursor)

    # -- public capture ------------------------------------------------------------
    async def capture(
        self, principal: Principal, form_key: str, payload: dict[str, Any]
    ) -> CaptureAccepted:
        """A web page's submission to an active form: the lead is made, or the lead
        with this e-mail is touched (never overwritten); it joins the form's campaign.
        The answer is the same either way, so it does not tell whether the e-mail was
        known."""
        principal.require("form:read", "lead:write")
        form = await self.config.read(repo.get_active_form, form_key)
        if form is None:
            raise NotFound("no such form")
        data = parse_capture(form.fields, form.required_fields, payload)
        shard = self.shards.place(key=data.email.lower() if data.email else None)
        lead_id = await self.shards.write(
            shard, repo.capture_lead, shard, data, form.default_source, form.owner_id,
            form.campaign_id,
        )  # fmt: skip
        if form.campaign_id is not None:
            principal.require("campaign:write")
            await self._join_campaign(form.campaign_id, lead_id)
        return CaptureAccepted()

    async def _join_campaign(self, campaign_id: int, lead_id: int) -> None:
        """Idempotent: a lead already in the campaign stays as it is; a campaign that is
        gone is logged, not reported to the public."""
        try:
            shard = self.shards.shard_for_id(campaign_id)
        except ShardNotFound:
            log.warning("capture form names campaign %s, which cannot exist", campaign_id)
            return
        made = await self.shards.write(
            shard,
            repo.add_member,
            shard,
            campaign_id,
            MemberCreate(lead_id=lead_id, status="responded"),
        )
        if made is None:
            log.warning("capture form names campaign %s, which is gone", campaign_id)

    # -- lead conversion -----------------------------------------------------------
    async def convert_lead(
        self, principal: Principal, lead_id: int, options: LeadConvert
    ) -> ConversionRead:
        """Lead -> customer + contact (+ deal), resumable and idempotent: the first call
        records a conversion and runs its steps; a call after a failure resumes from the
        recorded state with the options it brings (ids already made stay); a call after
        completion returns the completed conversion."""
        principal.require("lead:convert", "customer:write", "contact:write")
        if options.create_deal:
            principal.require("deal:write")
        shard = self._shard(lead_id, "lead")
        begun = await self.shards.write(
            shard, repo.begin_conversion, shard, lead_id, options.model_dump(mode="json"),
            principal.user_id, principal.owners("lead:convert"),
        )  # fmt: skip
        conversion, lead = written(begun, "lead", lead_id, principal)
        return await self._drive(principal, shard, conversion, lead)

    async def get_conversion(self, principal: Principal, lead_id: int) -> ConversionRead:
        """The conversion of a lead the caller's `lead:read` scope reaches."""
        principal.require("lead:read")
        shard = self._shard(lead_id, "lead")
        found = await self.shards.read(
            shard, repo.get_conversion, lead_id, principal.owners("lead:read")
        )
        if found is None:
            raise NotFound(f"lead {lead_id} has no conversion")
        return found

    async def resume_conversions(
        self, principal: Principal, stale_after_s: float = 300, limit: int = 100
    ) -> list[ConversionRead]:
        """Finish conversions left in progress (a crash, a failed step nobody retried)
        that nobody has touched for `stale_after_s`. Each is resumed with its recorded
        options; one that fails again stays recorded with its error. Returns the
        conversions as they ended up. Only leads the caller's `lead:convert` scope
        reaches are resumed."""
        principal.require("lead:convert", "customer:write", "contact:write")
        stale_before = datetime.now(UTC) - timedelta(seconds=stale_after_s)
        owners = principal.owners("lead:convert")
        runs = await self.shards.gather(repo.open_conversions, stale_before, limit, owners)
        results = []
        for open_one in [c for run in runs for c in run][:limit]:
            shard = self._shard(open_one.lead_id, "lead")
            try:
                begun = await self.shards.write(
                    shard, repo.begin_conversion, shard, open_one.lead_id,
                    open_one.options.model_dump(mode="json"), principal.user_id, owners,
                )  # fmt: skip
                if isinstance(begun, Denied):  # given to someone else meanwhile
                    continue
                if begun is None:  # the lead was deleted meanwhile: leave it recorded
                    results.append(open_one)
                    continue
                results.append(await self._drive(principal, shard, *begun))
            except AppError as exc:
                log.warning("conversion of lead %s not resumed: %s", open_one.lead_id, exc)
                current = await self.shards.read(shard, repo.get_conversion, open_one.lead_id)
                results.append(current or open_one)
        return results

    async def _drive(
        self, principal: Principal, shard: int, conversion: ConversionRead, lead: LeadRead
    ) -> ConversionRead:
        """Run the steps from the recorded state to completion. A step's work is
        idempotent (source keys) and its state change a compare-and-set, so two runs
        at once, or a run after a crash anywhere, still finish exactly once."""
        key = source_key(lead.id)
        options = conversion.options
        while (step := step_for(conversion.state)) is not None:
            if step == "complete":
                if self.customers is not None and conversion.customer_id is not None:
                    # The lead's activities go to its customer (idempotent: a resumed
                    # conversion repeats it harmlessly).
                    await remote(self.customers.adopt_lead_activities.remote(
                        principal, lead.id, conversion.customer_id
                    ))  # fmt: skip
                conversion = await self.shards.write(
                    shard, repo.complete_conversion, conversion.id, principal.user_id
                )
                continue
            try:
                made: dict[str, int | None]
                if step == "customer":
                    made = {"customer_id": await self._customer_step(principal, key, lead, options)}
                elif step == "contact":
                    assert conversion.customer_id is not None
                    made = {
                        "contact_id": await self._contact_step(
                            principal, key, conversion.customer_id, lead
                        )
                    }
                else:
                    made = {"deal_id": await self._deal_step(principal, key, conversion, options)}
                self.faults.after(step)
            except Exception as exc:
                await self._note_error(shard, conversion.id, step, exc)
                if isinstance(exc, AppError):
                    raise
                raise Unavailable("the conversion could not finish; retry it") from None
            conversion = await self.shards.write(
                shard, repo.advance_conversion, conversion.id, conversion.state,
                next_state(conversion.state), made,
            )  # fmt: skip
        return conversion

    async def _note_error(self, shard: int, conversion_id: int, step: str, exc: Exception) -> None:
        message = exc.detail if isinstance(exc, AppError) else type(exc).__name__
        try:
            await self.shards.write(
                shard, repo.note_conversion_error, conversion_id, f"{step}: {message}"
            )
        except Exception as note_exc:  # the step's own error is the one to report
            log.warning("could not record a conversion error: %r", note_exc)

    async def _customer_step(
        self, principal: Principal, key: str, lead: LeadRead, options: LeadConvert
    ) -> int:
        if self.customers is None:
            raise Unavailable("the customer service is not available")
        if options.customer_id is not None:
            try:
                found = await remote(self.customers.get.remote(principal, options.customer_id))
            except NotFound:
                raise Validation(
                    "no such customer", [{"field": "customer_id", "message": "not found"}]
                ) from None
            # The contact step adds a contact to this customer: as when adding one
            # directly, the caller's `contact:write` scope must reach it.
            if not principal.reaches("contact:write", found.owner_id):
                raise Forbidden(f"your role may not add contacts to customer {options.customer_id}")
            return int(found.id)
        wanted = options.customer
        full_name = " ".join(p for p in (lead.first_name, lead.last_name) if p)
        data = CustomerCreate(
            name=(wanted.name or lead.company or full_name or lead.email or f"Lead {lead.id}")[
                :200
            ],
            email=wanted.email or lead.email,
            phone=wanted.phone or lead.phone,
            website=wanted.website,
            industry=wanted.industry,
        )
        # On the lead's own logical shard: its activities are there already.
        made = await remote(
            self.customers.create_from_source.remote(principal, key, data, near=lead.id)
        )
        return int(made.id)

    async def _contact_step(
        self, principal: Principal, key: str, customer_id: int, lead: LeadRead
    ) -> int:
        if self.customers is None:
            raise Unavailable("the customer service is not available")
        first = lead.first_name or lead.last_name
        data = ContactCreate(
            first_name=first or (lead.email.split("@")[0][:100] if lead.email else "Unknown"),
            last_name=lead.last_name if lead.first_name else None,
            email=lead.email,
            phone=lead.phone,
            title=lead.title,
        )
        made = await remote(
            self.customers.create_contact_from_source.remote(principal, key, customer_id, data)
        )
        return int(made.id)

    async def _deal_step(
        self, principal: Principal, key: str, conversion: ConversionRead, options: LeadConvert
    ) -> int | None:
        if not options.create_deal or options.deal is None:
            return None
        if self.sales is None:
            raise Unavailable("the sales service is not available to make the deal")
        assert conversion.customer_id is not None
        deal = options.deal
        data = DealCreate(
            customer_id=conversion.customer_id,
            contact_id=conversion.contact_id,
            name=deal.name,
            amount=deal.amount,
            pipeline_id=deal.pipeline_id,
            stage_id=deal.stage_id,
            expected_close_date=deal.expected_close_date,
        )
        made = await remote(self.sales.create_deal.remote(principal, data, key))
        return int(made.id)


def _duplicate(principal: Principal, made: repo.Duplicate) -> Conflict:
    """A lead create refused for its e-mail: which lead it is, and whether it is
    deleted, is told only to whom may read it (e-mails are unique either way)."""
    if not principal.reaches("lead:read", made.owner_id):
        return Conflict(
            "a lead with this e-mail exists",
            [{"field": "email", "message": "duplicate of another lead"}],
        )
    detail = f"a lead with this e-mail exists: lead {made.existing_id}"
    if made.deleted:
        detail += " (deleted; restore it instead)"
    return Conflict(
        detail, [{"field": "email", "message": f"duplicate of lead {made.existing_id}"}]
    )


def _may_give(principal: Principal, kind: str, owner_id: int | None) -> None:
    """A record may be given (on create or update) only to an owner the caller's
    `<kind>:write` scope reaches: an agent's leads stay their own."""
    if not principal.reaches(f"{kind}:write", owner_id):
        raise Forbidden(f"your role may not give a {kind} to another owner")


def _member_written(
    outcome: MemberRead | Stale | Denied | None,
    campaign_id: int,
    member_id: int,
    principal: Principal,
) -> MemberRead:
    """A member change's record or error; a campaign outside the caller's write scope
    is a 403 if they may read it, else a 404 (as for the campaign itself)."""
    if isinstance(outcome, Denied):
        written(outcome, "campaign", campaign_id, principal)  # raises
    return written(outcome, "member", member_id)


def _score_key(row: LeadRead) -> tuple[float, int]:
    # The SQL sorts by coalesce(score, -1): unscored leads rank below every score.
    return (row.score if row.score is not None else -1.0, row.id)
