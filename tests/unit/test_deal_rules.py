"""Deal rules: weighted amounts and stage transitions (pure, no database)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments._kit.types import Money
from deployments.sales import rules
from deployments.sales.schemas import (
    ComputedMoney,
    DealCreate,
    DealListQuery,
    DealRead,
    PipelineRead,
    StageRead,
)
from gateway.errors import Conflict, Validation
from gateway.listing import Order, decode_cursor, encode_cursor, parse_list_params

NOW = datetime(2026, 3, 1, tzinfo=UTC)
KINDS = [("Prospecting", 10, "open"), ("Proposal", 50, "open"), ("Won", 100, "won")]


def _pipeline(pipeline_id: int = 1, stages: list[tuple[str, int, str]] | None = None):
    stages = stages or [*KINDS, ("Lost", 0, "lost")]
    return PipelineRead(
        id=pipeline_id,
        name=f"P{pipeline_id}",
        is_default=pipeline_id == 1,
        stages=[
            StageRead(
                id=pipeline_id * 100 + i,
                pipeline_id=pipeline_id,
                name=name,
                position=i,
                probability=p,
                kind=kind,  # type: ignore[arg-type]
                version=1,
                created_at=NOW,
                updated_at=NOW,
            )
            for i, (name, p, kind) in enumerate(stages, start=1)
        ],
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )


def _deal(stage_id: int = 101, status: str = "open", pipeline_id: int = 1) -> DealRead:
    return DealRead(
        id=7,
        customer_id=9,
        contact_id=None,
        name="D",
        amount=Money(amount=Decimal("1000.00"), currency="EUR"),
        weighted_amount=ComputedMoney(amount=Decimal("100.0000"), currency="EUR"),
        pipeline_id=pipeline_id,
        stage_id=stage_id,
        probability=10,
        status=status,  # type: ignore[arg-type]
        close_reason=None,
        closed_at=None if status == "open" else NOW,
        owner_id=1,
        expected_close_date=None,
        source_key=None,
        stage_entered_at=NOW,
        version=3,
        created_at=NOW,
        updated_at=NOW,
    )


# -- weighted amount -----------------------------------------------------------------
def test_weighted_amount_is_exact() -> None:
    assert rules.weighted_amount(Decimal("1000.00"), 25) == Decimal("250.00")
    assert str(rules.weighted_amount(Decimal("1000.00"), 25)) == "250.00"
    assert rules.weighted_amount(Decimal("19.99"), 33) == Decimal("6.5967")
    assert rules.weighted_amount(Decimal("0.1"), 30) == Decimal("0.03")
    assert rules.weighted_amount(Decimal("123.4567"), 0) == 0
    with pytest.raises(ValueError, match="probability"):
        rules.weighted_amount(Decimal(1), 101)


@given(
    st.decimals(min_value=0, max_value=Decimal("99999999999999.9999"), places=4),
    st.integers(0, 100),
)
def test_weighted_amount_times_100_gives_back_the_product(amount: Decimal, p: int) -> None:
    assert rules.weighted_amount(amount, p) * 100 == amount * p


def test_float_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="decimal strings"):
        DealCreate.model_validate(
            {"customer_id": "1", "name": "x", "amount": {"amount": 0.1, "currency": "EUR"}}
        )
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        DealCreate.model_validate(
            {"customer_id": "1", "name": "x", "amount": {"amount": "-1", "currency": "EUR"}}
        )


# -- transitions -----------------------------------------------------------------------
def test_initial_stage_defaults_to_the_first_open_stage() -> None:
    p = _pipeline()
    assert rules.initial_stage(p, None).id == 101
    assert rules.initial_stage(p, 102).probability == 50
    with pytest.raises(Validation) as bad:
        rules.initial_stage(p, 103)  # won stage
    assert bad.value.errors[0]["field"] == "stage_id"
    with pytest.raises(Validation):
        rules.initial_stage(p, 999)


def test_move_within_the_pipeline_takes_the_stage_probability() -> None:
    t = rules.move(_deal(), _pipeline(), 102)
    assert (t.stage_id, t.probability, t.status) == (102, 50, "open")
    assert rules.move(_deal(), _pipeline(), 102, probability=60).probability == 60


def test_move_refuses_stages_of_another_pipeline_and_closing_stages() -> None:
    with pytest.raises(Validation) as other:
        rules.move(_deal(), _pipeline(), 201)
    assert other.value.errors[0]["field"] == "stage_id"
    for closing in (103, 104):
        with pytest.raises(Validation, match="use POST"):
            rules.move(_deal(), _pipeline(), closing)


def test_move_to_another_pipeline() -> None:
    t = rules.move(_deal(), _pipeline(2), 202)
    assert (t.pipeline_id, t.stage_id, t.probability) == (2, 202, 50)


def test_won_and_lost_close_into_the_pipeline_closing_stages() -> None:
    w = rules.won(_deal(), _pipeline(), None)
    assert (w.stage_id, w.probability, w.status, w.close_reason) == (103, 100, "won", None)
    lost = rules.lost(_deal(), _pipeline(), "budget")
    assert (lost.stage_id, lost.probability, lost.status, lost.close_reason) == (
        104,
        0,
        "lost",
        "budget",
    )
    with pytest.raises(Validation):
        rules.lost(_deal(), _pipeline(), "  ")
    with pytest.raises(Conflict):
        rules.won(_deal(), _pipeline(stages=KINDS[:2]), None)  # no won stage


def test_closed_deals_change_only_by_reopening() -> None:
    closed = _deal(stage_id=103, status="won")
    for change in (
        lambda: rules.move(closed, _pipeline(), 102),
        lambda: rules.won(closed, _pipeline(), None),
        lambda: rules.lost(closed, _pipeline(), "x"),
        lambda: rules.reopen(_deal(), _pipeline(), None),
    ):
        with pytest.raises(Conflict):
            change()
    back = rules.reopen(closed, _pipeline(), 102)
    assert (back.stage_id, back.probability, back.status, back.close_reason) == (
        102,
        50,
        "open",
        None,
    )
    # The stage it left is gone (or not open any more): the first open stage.
    assert rules.reopen(closed, _pipeline(), 999).stage_id == 101
    assert rules.reopen(closed, _pipeline(), None).stage_id == 101


# -- list parameters and cursors -------------------------------------------------------
def test_deal_list_params() -> None:
    q = parse_list_params(
        [("amount[gte]", "10.50"), ("status", "open"), ("sort", "-amount")], DealListQuery
    )
    assert isinstance(q, DealListQuery) and q.amount_gte == Decimal("10.50")
    for bad in ([("colour", "red")], [("status", "maybe")], [("sort", "name")]):
        with pytest.raises(Validation):
            parse_list_params(bad, DealListQuery)


@pytest.mark.parametrize(
    ("sort", "value"),
    [("-amount", Decimal("0.30")), ("expected_close_date", date(2026, 5, 1))],
)
def test_decimal_and_date_cursors_round_trip(sort: str, value: object) -> None:
    order = Order(sort.lstrip("-"), sort.startswith("-"))
    cursor = encode_cursor(order, value, 42)
    position = decode_cursor(DealListQuery(sort=sort, cursor=cursor))
    assert position is not None and (position.value, position.id) == (value, 42)
