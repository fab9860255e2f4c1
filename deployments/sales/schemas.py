"""Pipeline, deal and order models, shared by HTTP routes and deployment handles."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from deployments._kit.batch import (
    Batch,
    BatchCreate,
    BatchResult,
    BatchUpdate,
    ItemResult,
)
from deployments._kit.types import Amount, Id, Money, NonNegativeAmount, NonNegativeMoney, Percent
from gateway.inputs import Input, JsonObject, Patch, when_given
from gateway.listing import ListQuery
from gateway.records import Record

StageKind = Literal["open", "won", "lost"]
DealStatus = Literal["open", "won", "lost"]
# A computed amount (weighted amounts, line totals): exact, written as a string, with
# as many decimals as the arithmetic gives (weighted amounts can have 6).
Exact = Annotated[
    Decimal,
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}),
]


class ComputedMoney(BaseModel):
    """Money the server computed: `{"amount": "12.345600", "currency": "EUR"}`."""

    model_config = ConfigDict(frozen=True)

    amount: Exact
    currency: str


# -- pipelines ---------------------------------------------------------------------
class StageCreate(Input):
    name: str = Field(min_length=1, max_length=100)
    probability: int = Field(ge=0, le=100, description="Default win probability, percent.")
    kind: StageKind = "open"
    position: int | None = Field(
        default=None, ge=1, description="1-based place in the pipeline; default: last."
    )


# A stage always has a place (a create without one appends it): no field is cleared.
class StageUpdate(Patch, creates=StageCreate, nullable=()):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    probability: int | None = Field(default=None, ge=0, le=100)
    kind: StageKind | None = None
    position: int | None = Field(default=None, ge=1, description="Move the stage here.")


class StageRead(Record):
    id: Id
    pipeline_id: Id
    name: str
    position: int
    probability: int
    kind: StageKind
    version: int
    created_at: datetime
    updated_at: datetime


class PipelineStageInput(Input):
    name: str = Field(min_length=1, max_length=100)
    probability: int = Field(ge=0, le=100)
    kind: StageKind = "open"


class PipelineCreate(Input):
    name: str = Field(min_length=1, max_length=100)
    is_default: bool = False
    stages: list[PipelineStageInput] = Field(
        min_length=1, max_length=50, description="In order; at least one `open` stage."
    )

    @field_validator("stages")
    @classmethod
    def _one_open(cls, stages: list[PipelineStageInput]) -> list[PipelineStageInput]:
        if not any(s.kind == "open" for s in stages):
            raise ValueError("a pipeline needs at least one open stage")
        return stages


class PipelineUpdate(Patch, creates=PipelineCreate):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    is_default: Literal[True] | None = Field(
        default=None, description="true makes this the default (the old one stops being it)."
    )


class PipelineRead(Record):
    id: Id
    name: str
    is_default: bool
    stages: list[StageRead]
    version: int
    created_at: datetime
    updated_at: datetime

    def stage(self, stage_id: int) -> StageRead | None:
        return next((s for s in self.stages if s.id == stage_id), None)

    def first(self, kind: str) -> StageRead | None:
        return next((s for s in self.stages if s.kind == kind), None)


class PipelineListQuery(ListQuery):
    countable: ClassVar[bool] = False
    sort: str = "created_at"
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime}


# -- deals -------------------------------------------------------------------------
class DealCreate(Input):
    customer_id: Id
    contact_id: Id | None = Field(default=None, description="A contact of that customer.")
    name: str = Field(min_length=1, max_length=200)
    amount: NonNegativeMoney
    pipeline_id: Id | None = Field(default=None, description="Default: the default pipeline.")
    stage_id: Id | None = Field(
        default=None, description="An open stage of the pipeline; default: its first."
    )
    probability: int | None = Field(default=None, ge=0, le=100, description="Default: stage's.")
    owner_id: Id | None = Field(
        default=None, description="Defaults to the caller; needs `deal:assign` otherwise."
    )
    expected_close_date: date | None = None
    custom_fields: JsonObject = Field(default_factory=dict, max_length=100)


class DealUpdate(Patch, creates=DealCreate):
    """Stage, pipeline and status change through their own actions, not here."""

    contact_id: Id | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    amount: NonNegativeMoney | None = None
    probability: int | None = Field(default=None, ge=0, le=100)
    owner_id: Id | None = None
    expected_close_date: date | None = None
    custom_fields: JsonObject | None = Field(
        default=None, max_length=100, description="The keys given change; null clears one."
    )


class DealRead(Record):
    id: Id
    customer_id: Id
    contact_id: Id | None
    name: str
    amount: Money
    weighted_amount: ComputedMoney = Field(description="amount x probability / 100, exact.")
    pipeline_id: Id
    stage_id: Id
    probability: int
    status: DealStatus
    close_reason: str | None
    closed_at: datetime | None
    owner_id: Id | None
    expected_close_date: date | None
    source_key: str | None
    stage_entered_at: datetime
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    version: int
    created_at: datetime
    updated_at: datetime


class DealBatchCreate(BatchCreate[DealCreate]):
    pass


class DealBatchUpdate(BatchUpdate[DealUpdate]):
    pass


class DealBatch(Batch[DealBatchCreate, DealBatchUpdate]):
    """Up to 100 creates, updates and deletes of deals, each with its own result
    (`POST /v1/sales/deals/batch`, deployments/_kit/batch.py)."""


class DealBatchItem(ItemResult[DealRead]):
    pass


class DealBatchResult(BatchResult[DealRead]):
    results: Sequence[DealBatchItem]


class StageMove(Input):
    stage_id: Id
    probability: int | None = Field(default=None, ge=0, le=100, description="Default: stage's.")


class PipelineMove(Input):
    pipeline_id: Id
    stage_id: Id
    probability: int | None = Field(default=None, ge=0, le=100)


class WonRequest(Input):
    reason: str | None = Field(default=None, min_length=1, max_length=1000)


class LostRequest(Input):
    reason: str = Field(min_length=1, max_length=1000)


class StageChangeRead(Record):
    id: Id
    deal_id: Id
    from_pipeline_id: Id | None
    from_stage_id: Id | None
    to_pipeline_id: Id
    to_stage_id: Id
    probability: int
    status: DealStatus
    changed_by: Id | None
    changed_at: datetime
    seconds_in_previous_stage: float | None


class StageHistoryQuery(ListQuery):
    sort: str = "changed_at"
    sort_fields: ClassVar[dict[str, type]] = {"changed_at": datetime}


class DealListQuery(ListQuery):
    view_object: ClassVar[str | None] = "deals"
    custom_fields: ClassVar[str | None] = "deals"
    status: DealStatus | None = None
    pipeline_id: Id | None = None
    stage_id: Id | None = None
    owner_id: Id | None = None
    customer_id: Id | None = None
    amount_gte: Amount | None = Field(default=None, description="amount >= this")
    amount_lte: Amount | None = Field(default=None, description="amount <= this")
    close_from: date | None = Field(default=None, description="expected_close_date >= this")
    close_before: date | None = Field(default=None, description="expected_close_date < this")
    created_from: datetime | None = Field(default=None, description="created_at >= this")
    created_before: datetime | None = Field(default=None, description="created_at < this")

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "status": "status",
        "pipeline_id": "pipeline_id",
        "stage_id": "stage_id",
        "owner_id": "owner_id",
        "customer_id": "customer_id",
        "amount[gte]": "amount_gte",
        "amount[lte]": "amount_lte",
        "expected_close_date[gte]": "close_from",
        "expected_close_date[lt]": "close_before",
        "created_at[gte]": "created_from",
        "created_at[lt]": "created_before",
    }
    sort_fields: ClassVar[dict[str, type]] = {
        "created_at": datetime,
        "amount": Decimal,
        "expected_close_date": date,
    }


# -- orders ------------------------------------------------------------------------
def _no_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError('send decimals as strings, such as "2.5"')
    return value


Quantity = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    Field(gt=0, max_digits=12, decimal_places=4, allow_inf_nan=False),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",  # more than 0; at most 8 digits before the point, 4 after
            "pattern": r"^([1-9][0-9]{0,7}(\.[0-9]{1,4})?|0?\.([1-9][0-9]{0,3}|0[1-9][0-9]{0,2}"
            r"|00[1-9][0-9]?|000[1-9]))$",
        }
    ),
]
OrderStatus = Literal["draft", "confirmed", "cancelled"]


class OrderLineInput(Input):
    product_id: Id
    quantity: Quantity
    discount_percent: Percent = Decimal(0)
    tax_percent: Percent | None = Field(default=None, description="Default: the product's.")
    unit_price: NonNegativeAmount | None = Field(
        default=None,
        description="Default (and normally): the price book's. An explicit price needs "
        "`product:write` (people who may set prices).",
    )


class OrderCreate(Input):
    customer_id: Id
    price_book_id: Id = Field(description="Prices and the order's currency come from it.")
    lines: list[OrderLineInput] = Field(min_length=1, max_length=200)
    notes: str | None = Field(default=None, max_length=5000)


class DealOrderCreate(Input):
    """An order from a won deal: its customer is the deal's."""

    price_book_id: Id
    lines: list[OrderLineInput] = Field(min_length=1, max_length=200)
    notes: str | None = Field(default=None, max_length=5000)


class OrderUpdate(Patch, creates=OrderCreate):
    """Drafts only. `lines` replaces every line (re-priced from the price book)."""

    # As `_book_with_lines` checks: a new price book comes with the lines.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                when_given(
                    "price_book_id",
                    then={"required": ["lines"], "properties": {"lines": {"type": "array"}}},
                )
            ]
        }
    )

    price_book_id: Id | None = None
    lines: list[OrderLineInput] | None = Field(default=None, min_length=1, max_length=200)
    notes: str | None = Field(default=None, max_length=5000)

    @model_validator(mode="after")
    def _book_with_lines(self) -> OrderUpdate:
        if self.price_book_id is not None and self.lines is None:
            raise ValueError("send `lines` with a new price_book_id (they are re-priced)")
        return self


class OrderLineRead(BaseModel):
    id: Id
    position: int
    product_id: Id
    sku: str
    name: str
    unit_price: Exact
    quantity: Exact
    discount_percent: Exact
    tax_percent: Exact
    subtotal: Exact
    discount: Exact
    tax: Exact
    total: Exact


class OrderRead(Record):
    id: Id
    customer_id: Id
    deal_id: Id | None
    price_book_id: Id
    currency: str
    status: OrderStatus
    notes: str | None
    owner_id: Id | None
    lines: list[OrderLineRead]
    subtotal: ComputedMoney
    discount_total: ComputedMoney
    tax_total: ComputedMoney
    total: ComputedMoney
    confirmed_at: datetime | None
    cancelled_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class OrderListQuery(ListQuery):
    view_object: ClassVar[str | None] = "orders"
    status: OrderStatus | None = None
    customer_id: Id | None = None
    deal_id: Id | None = None
    price_book_id: Id | None = None
    owner_id: Id | None = None
    total_gte: Amount | None = Field(default=None, description="total >= this")
    total_lte: Amount | None = Field(default=None, description="total <= this")
    created_from: datetime | None = Field(default=None, description="created_at >= this")
    created_before: datetime | None = Field(default=None, description="created_at < this")

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "status": "status",
        "customer_id": "customer_id",
        "deal_id": "deal_id",
        "price_book_id": "price_book_id",
        "owner_id": "owner_id",
        "total[gte]": "total_gte",
        "total[lte]": "total_lte",
        "created_at[gte]": "created_from",
        "created_at[lt]": "created_before",
    }
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime, "total": Decimal}
