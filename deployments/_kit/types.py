"""Field types shared by every schema."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from shards.ids import JsonId

# 64-bit ids: accepted as a JSON number or string, always written as a string
# (JavaScript loses precision above 2**53). Defined beside the id layout.
Id = JsonId


def _no_float(value: object) -> object:
    # A JSON number with a fraction arrives as a binary float, already inexact.
    if isinstance(value, float):
        raise ValueError('send amounts as decimal strings, such as "1234.50"')
    return value


# Money amounts: exact decimals, accepted as a string or an integer (never a float),
# always written as a string. At most 18 digits with 4 after the point (the schema's
# pattern says exactly that: 14 before the point).
Amount = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    Field(max_digits=18, decimal_places=4, allow_inf_nan=False),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]{1,14}(\.[0-9]{1,4})?$"}),
]
# An amount that cannot be negative (prices, deal amounts, budgets).
NonNegativeAmount = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    Field(ge=0, max_digits=18, decimal_places=4, allow_inf_nan=False),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,14}(\.[0-9]{1,4})?$"}),
]
# A percentage from 0 to 100 with up to 4 decimals, as a string (tax, discount).
Percent = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    Field(ge=0, le=100, max_digits=7, decimal_places=4, allow_inf_nan=False),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^(100(\.0{1,4})?|[0-9]{1,2}(\.[0-9]{1,4})?)$"}),
]
# ISO 4217 code.
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR", "USD", "VND"])]


class Money(BaseModel):
    """`{"amount": "123.45", "currency": "EUR"}` (docs/api.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    amount: Amount
    currency: Currency


# A tag: 1-50 characters (after trimming) without a comma (lists filter by `tag[in]=a,b`).
Tag = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[^,\x00]*[^,\s\x00][^,\x00]*$")]


def distinct(tags: list[str]) -> list[str]:
    """The tags once each, in the order first given."""
    return list(dict.fromkeys(tags))


class NonNegativeMoney(Money):
    """Money a caller sets that cannot be negative (a deal's amount, a budget). A
    `Money` (from a handle caller) is taken too, and checked."""

    model_config = ConfigDict(from_attributes=True)

    amount: NonNegativeAmount


def _plausible(moment: datetime) -> datetime:
    if not 1900 <= moment.year <= 2199:
        raise ValueError("a time from 1900 to 2199")
    return moment


# A point in time a caller sets (a due date, when a call happened): with its UTC offset
# (RFC 3339; a time without one is refused, not guessed), years 1900 to 2199.
When = Annotated[
    AwareDatetime,
    AfterValidator(_plausible),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": "^(19|2[01])[0-9]{2}-"}),
]
