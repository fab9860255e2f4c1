"""Money and change history: the shared pieces every service's records use."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from deployments._kit.history import diff, plain
from deployments._kit.types import Money


def test_money_is_exact_and_written_as_a_string() -> None:
    money = Money.model_validate_json('{"amount": "0.10", "currency": "EUR"}')
    assert money.amount == Decimal("0.10")
    assert money.model_dump_json() == '{"amount":"0.10","currency":"EUR"}'
    assert Money.model_validate_json('{"amount": 12, "currency": "USD"}').amount == 12


@pytest.mark.parametrize(
    "body",
    [
        '{"amount": 0.1, "currency": "EUR"}',  # a float is already inexact
        '{"amount": "1.23456", "currency": "EUR"}',  # more than 4 places
        '{"amount": "NaN", "currency": "EUR"}',
        '{"amount": "1", "currency": "eur"}',
        '{"amount": "1", "currency": "EURO"}',
        '{"amount": "1e30", "currency": "EUR"}',
        '{"amount": "1", "currency": "EUR", "extra": 1}',
    ],
)
def test_money_refuses_what_it_cannot_hold_exactly(body: str) -> None:
    with pytest.raises(ValidationError):
        Money.model_validate_json(body)


@given(st.decimals(min_value=-(10**13), max_value=10**13, places=4, allow_nan=False))
def test_money_round_trips_every_amount(amount: Decimal) -> None:
    money = Money(amount=amount, currency="VND")
    assert Money.model_validate_json(money.model_dump_json()).amount == amount


def test_diff_names_only_audited_fields_that_changed() -> None:
    before = {"name": "A", "amount": Decimal("1.0"), "stage": 1, "notes": "x"}
    after = {"name": "B", "amount": Decimal("1.0"), "stage": 2, "notes": "y"}
    assert diff(before, after, ("name", "amount", "stage")) == {
        "name": ["A", "B"],
        "stage": [1, 2],
    }
    assert diff(None, after, ("name", "amount")) == {"name": [None, "B"], "amount": [None, "1.0"]}
    assert diff(after, after, ("name", "amount", "stage")) == {}


def test_plain_values_are_json_safe() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert plain({"d": date(2026, 1, 2), "t": when, "m": [Decimal("2.50")]}) == {
        "d": "2026-01-02",
        "t": "2026-01-02T03:04:05+00:00",
        "m": ["2.50"],
    }
