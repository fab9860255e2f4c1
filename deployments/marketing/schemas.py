"""Marketing models (leads, campaigns, members, capture forms, conversions), shared
by the HTTP routes and the deployment handle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from deployments._kit.batch import (
    Batch,
    BatchCreate,
    BatchResult,
    BatchUpdate,
    ItemResult,
)
from deployments._kit.types import Id, Money, NonNegativeMoney
from gateway.inputs import Input, JsonObject, Patch, when_given
from gateway.listing import ListQuery
from gateway.records import Record

LeadSource = Literal["web_form", "import", "referral", "event", "ad", "other"]
LeadStatus = Literal["new", "contacted", "qualified", "unqualified", "converted"]
# `converted` is set by a conversion only, never by a client.
SettableLeadStatus = Literal["new", "contacted", "qualified", "unqualified"]
CampaignType = Literal["email", "event", "webinar", "ads", "social", "other"]
CampaignStatus = Literal["planned", "active", "paused", "completed", "cancelled"]
MemberStatus = Literal["planned", "sent", "responded", "converted", "opted_out"]
CaptureField = Literal["first_name", "last_name", "email", "phone", "company", "title", "message"]
ConversionState = Literal["started", "customer_done", "contact_done", "deal_done", "completed"]


# -- leads ---------------------------------------------------------------------------
class LeadCreate(Input):
    # The schema says what `_someone` checks (not all of them absent, null or blank),
    # so a client can tell before sending.
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "properties": {
                    **{f: {"anyOf": [{"type": "null"}, {"type": "string", "pattern": r"^\s*$"}]}
                       for f in ("first_name", "last_name", "company")},
                    "email": {"type": "null"},
                }
            }
        }
    )  # fmt: skip

    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    email: EmailStr | None = Field(
        default=None, description="Unique among leads (case-insensitive): a duplicate is a 409."
    )
    phone: str | None = Field(default=None, max_length=50)
    company: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=100)
    source: LeadSource = "other"
    status: SettableLeadStatus = "new"
    owner_id: Id | None = Field(default=None, description="Defaults to the caller.")
    campaign_id: Id | None = None
    notes: str | None = Field(default=None, max_length=5000)
    custom_fields: JsonObject = Field(default_factory=dict, max_length=100)

    @model_validator(mode="after")
    def _someone(self) -> LeadCreate:
        if not (self.first_name or self.last_name or self.email or self.company):
            raise ValueError("a lead needs at least a name, an email or a company")
        return self


class LeadUpdate(Patch, creates=LeadCreate):
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    # Not changeable (a lead is placed by its e-mail): not in the schema, and a clear
    # 422 for a caller who sends it anyway.
    email: SkipJsonSchema[str | None] = None
    phone: str | None = Field(default=None, max_length=50)
    company: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=100)
    source: LeadSource | None = None
    status: SettableLeadStatus | None = None
    owner_id: Id | None = None
    campaign_id: Id | None = None
    notes: str | None = Field(default=None, max_length=5000)
    custom_fields: JsonObject | None = Field(default=None, max_length=100)

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, _value: object) -> None:
        raise ValueError(
            "a lead's e-mail cannot be changed (leads are placed and de-duplicated by it);"
            " create a new lead and delete this one"
        )


class LeadRead(Record):
    id: Id
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    company: str | None
    title: str | None
    source: str
    status: str
    owner_id: Id | None
    campaign_id: Id | None
    score: float | None = Field(description="Filled by the AI service; null until scored.")
    notes: str | None
    custom_fields: dict[str, Any]
    capture_count: int
    last_captured_at: datetime | None
    converted_customer_id: Id | None
    converted_contact_id: Id | None
    converted_deal_id: Id | None
    converted_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime



class LeadBatchCreate(BatchCreate[LeadCreate]):
    pass


class LeadBatchUpdate(BatchUpdate[LeadUpdate]):
    pass


class LeadBatch(Batch[LeadBatchCreate, LeadBatchUpdate]):
    """Up to 100 creates, updates and deletes of leads, each with its own result
    (`POST /v1/marketing/leads/batch`, deployments/_kit/batch.py)."""


class LeadBatchItem(ItemResult[LeadRead]):
    pass


class LeadBatchResult(BatchResult[LeadRead]):
    results: Sequence[LeadBatchItem]

class LeadListQuery(ListQuery):
    view_object: ClassVar[str | None] = "leads"
    custom_fields: ClassVar[str | None] = "leads"
    status: LeadStatus | None = None
    source: LeadSource | None = None
    owner_id: Id | None = None
    campaign_id: Id | None = None
    email: str | None = Field(default=None, max_length=320, description="Exact, any case.")
    created_from: datetime | None = Field(default=None, description="created_at >= this")
    created_before: datetime | None = Field(default=None, description="created_at < this")
    score_min: float | None = Field(default=None, description="score >= this")

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "status": "status",
        "source": "source",
        "owner_id": "owner_id",
        "campaign_id": "campaign_id",
        "email": "email",
        "created_at[gte]": "created_from",
        "created_at[lt]": "created_before",
        "score[gte]": "score_min",
    }
    # score sorts put unscored leads (null) after every scored one in -score order.
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime, "score": float}


# -- campaigns -----------------------------------------------------------------------
class CampaignCreate(Input):
    name: str = Field(min_length=1, max_length=200)
    type: CampaignType
    status: CampaignStatus = "planned"
    budget: NonNegativeMoney | None = None
    expected_revenue: NonNegativeMoney | None = None
    start_date: date | None = None
    end_date: date | None = Field(default=None, description="On or after start_date.")
    description: str | None = Field(default=None, max_length=5000)
    owner_id: Id | None = Field(default=None, description="Defaults to the caller.")

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, end: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("start_date")
        if end is not None and start is not None and end < start:
            raise ValueError("end_date is before start_date")
        return end


class CampaignUpdate(Patch, creates=CampaignCreate):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    type: CampaignType | None = None
    status: CampaignStatus | None = None
    budget: NonNegativeMoney | None = None
    expected_revenue: NonNegativeMoney | None = None
    start_date: date | None = None
    end_date: date | None = None
    description: str | None = Field(default=None, max_length=5000)
    owner_id: Id | None = None

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, end: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("start_date")
        if end is not None and start is not None and end < start:
            raise ValueError("end_date is before start_date")
        return end


class CampaignRead(Record):
    id: Id
    name: str
    type: str
    status: str
    budget: Money | None
    expected_revenue: Money | None
    start_date: date | None
    end_date: date | None
    description: str | None
    owner_id: Id | None
    version: int
    created_at: datetime
    updated_at: datetime


class CampaignListQuery(ListQuery):
    view_object: ClassVar[str | None] = "campaigns"
    status: CampaignStatus | None = None
    campaign_type: CampaignType | None = None
    owner_id: Id | None = None
    name_prefix: str | None = Field(default=None, min_length=1, max_length=200)
    created_from: datetime | None = None
    created_before: datetime | None = None

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "status": "status",
        "type": "campaign_type",
        "owner_id": "owner_id",
        "name[prefix]": "name_prefix",
        "created_at[gte]": "created_from",
        "created_at[lt]": "created_before",
    }
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime, "name": str}


class MemberCreate(Input):
    # Exactly one of the two, as `_exactly_one` checks.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                when_given(
                    "contact_id",
                    then={"properties": {"lead_id": {"type": "null"}}},
                    otherwise={
                        "required": ["lead_id"],
                        "properties": {"lead_id": {"type": "string"}},
                    },
                )
            ]
        }
    )

    contact_id: Id | None = None
    lead_id: Id | None = None
    status: MemberStatus = "planned"

    @model_validator(mode="after")
    def _exactly_one(self) -> MemberCreate:
        if (self.contact_id is None) == (self.lead_id is None):
            raise ValueError("give exactly one of contact_id and lead_id")
        return self


class MemberUpdate(Patch, creates=MemberCreate):
    status: MemberStatus


class MemberRead(Record):
    id: Id
    campaign_id: Id
    contact_id: Id | None
    lead_id: Id | None
    status: str
    version: int
    created_at: datetime
    updated_at: datetime


class MemberListQuery(ListQuery):
    countable: ClassVar[bool] = False
    status: MemberStatus | None = None
    query_params: ClassVar[dict[str, str]] = {**ListQuery.query_params, "status": "status"}
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime}


# -- capture forms -------------------------------------------------------------------
_REQUIRED: tuple[CaptureField, ...] = ("email",)
_DEFAULT_FIELDS: tuple[CaptureField, ...] = ("first_name", "last_name", "email", "company")


def _check_fields(fields: Sequence[str] | None, required: Sequence[str] | None) -> None:
    if fields is not None and "email" not in fields:
        raise ValueError("a capture form collects `email` (leads are de-duplicated by it)")
    if fields is not None and required is not None and not set(required) <= set(fields):
        raise ValueError("required_fields must be among fields")


class FormCreate(Input):
    name: str = Field(min_length=1, max_length=200)
    fields: list[CaptureField] = Field(default_factory=lambda: list(_DEFAULT_FIELDS), min_length=1)
    required_fields: list[CaptureField] = Field(default_factory=lambda: list(_REQUIRED))
    default_source: LeadSource = "web_form"
    campaign_id: Id | None = Field(default=None, description="Captured leads join it.")
    owner_id: Id | None = Field(default=None, description="Owner of captured leads.")
    active: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> FormCreate:
        self.fields = list(dict.fromkeys(self.fields))
        self.required_fields = list(dict.fromkeys(self.required_fields))
        _check_fields(self.fields, self.required_fields)
        return self


class FormUpdate(Patch, creates=FormCreate):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    fields: list[CaptureField] | None = Field(default=None, min_length=1)
    required_fields: list[CaptureField] | None = None
    default_source: LeadSource | None = None
    campaign_id: Id | None = None
    owner_id: Id | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FormUpdate:
        _check_fields(self.fields, self.required_fields)
        return self


class FormRead(Record):
    id: Id
    name: str
    form_key: str = Field(description="Public: pages post to /capture/{form_key}.")
    fields: list[str]
    required_fields: list[str]
    default_source: str
    campaign_id: Id | None
    owner_id: Id | None
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime


class FormListQuery(ListQuery):
    countable: ClassVar[bool] = False
    active: bool | None = None
    query_params: ClassVar[dict[str, str]] = {**ListQuery.query_params, "active": "active"}
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime}


class CaptureAccepted(BaseModel):
    """The public answer to a capture, the same whether the e-mail was known or not."""

    status: Literal["received"] = "received"


# -- conversion ----------------------------------------------------------------------
class ConvertCustomer(Input):
    """Overrides for the customer made from the lead (defaults: the lead's company,
    else its name; its e-mail and phone)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=50)
    website: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=100)


class ConvertDeal(Input):
    name: str = Field(min_length=1, max_length=200)
    amount: NonNegativeMoney
    pipeline_id: Id | None = None
    stage_id: Id | None = None
    expected_close_date: date | None = None


class LeadConvert(Input):
    # As `_deal` checks: `create_deal` needs `deal`.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "required": ["create_deal"],
                        "properties": {"create_deal": {"const": True}},
                    },
                    "then": {"required": ["deal"], "properties": {"deal": {"type": "object"}}},
                }
            ]
        }
    )

    customer_id: Id | None = Field(
        default=None, description="Attach to this existing customer instead of making one."
    )
    customer: ConvertCustomer = Field(default_factory=ConvertCustomer)
    create_deal: bool = False
    deal: ConvertDeal | None = None

    @model_validator(mode="after")
    def _deal(self) -> LeadConvert:
        if self.create_deal and self.deal is None:
            raise ValueError("create_deal needs `deal` (name and amount)")
        return self


class ConversionRead(Record):
    id: Id
    lead_id: Id
    state: ConversionState
    customer_id: Id | None
    contact_id: Id | None
    deal_id: Id | None
    attempts: int
    last_error: str | None
    options: LeadConvert
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
