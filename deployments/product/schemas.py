"""Product, price book and price models, shared by HTTP routes and deployment handles."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from deployments._kit.types import Amount, Currency, Id, NonNegativeAmount, Percent
from gateway.inputs import Input, JsonObject, Patch
from gateway.listing import ListQuery
from gateway.records import Record


# -- products ----------------------------------------------------------------------
class ProductCreate(Input):
    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    family: str | None = Field(default=None, max_length=100)
    unit: str = Field(default="each", min_length=1, max_length=20)
    tax_percent: Percent = Decimal(0)
    is_active: bool = True
    custom_fields: JsonObject = Field(default_factory=dict, max_length=100)


class ProductUpdate(Patch, creates=ProductCreate):
    sku: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$"
    )
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    family: str | None = Field(default=None, max_length=100)
    unit: str | None = Field(default=None, min_length=1, max_length=20)
    tax_percent: Percent | None = None
    is_active: bool | None = None
    custom_fields: JsonObject | None = Field(
        default=None, max_length=100, description="The keys given change; null clears one."
    )


class ProductRead(Record):
    id: Id
    sku: str
    name: str
    description: str | None
    family: str | None
    unit: str
    tax_percent: Decimal
    is_active: bool
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    version: int
    created_at: datetime
    updated_at: datetime


class ProductListQuery(ListQuery):
    view_object: ClassVar[str | None] = "products"
    custom_fields: ClassVar[str | None] = "products"
    sku: str | None = Field(default=None, min_length=1, max_length=64)
    name_prefix: str | None = Field(default=None, min_length=1, max_length=200)
    family: str | None = Field(default=None, min_length=1, max_length=100)
    is_active: bool | None = None

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "sku": "sku",
        "name[prefix]": "name_prefix",
        "family": "family",
        "is_active": "is_active",
    }
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime, "name": str, "sku": str}


# -- price books ---------------------------------------------------------------------
class PriceBookCreate(Input):
    name: str = Field(min_length=1, max_length=200)
    currency: Currency
    description: str | None = Field(default=None, max_length=2000)
    is_active: bool = True


class PriceBookUpdate(Patch, creates=PriceBookCreate):
    """The currency of a book is fixed: its prices are amounts in it."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    is_active: bool | None = None


class PriceBookRead(Record):
    id: Id
    name: str
    currency: str
    description: str | None
    is_active: bool
    version: int
    created_at: datetime
    updated_at: datetime


class PriceBookListQuery(ListQuery):
    currency: Currency | None = None
    is_active: bool | None = None

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "currency": "currency",
        "is_active": "is_active",
    }
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime, "name": str}


# -- prices --------------------------------------------------------------------------
class PriceSet(Input):
    """`PUT /price-books/{id}/prices/{product_id}`: the price of a product in a book."""

    unit_price: NonNegativeAmount
    is_active: bool = True


class PriceRead(Record):
    price_book_id: Id
    product_id: Id
    currency: str
    unit_price: Amount
    is_active: bool
    version: int
    created_at: datetime
    updated_at: datetime


class PriceListQuery(ListQuery):
    """Prices of one book, in product id order."""

    sort: str = "product_id"
    sort_fields: ClassVar[dict[str, type]] = {"product_id": int}
    ascending_only: ClassVar[bool] = True


class QuoteLine(BaseModel):
    product_id: Id
    sku: str
    name: str
    unit: str
    tax_percent: Decimal
    unit_price: Amount


class Quote(BaseModel):
    """What an order needs to price its lines: every product's live price in a book."""

    price_book_id: Id
    currency: str
    lines: list[QuoteLine]
