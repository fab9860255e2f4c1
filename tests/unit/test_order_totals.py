"""Order totals: exact decimals, cents rounded half up per line."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments.sales.totals import cents, line_totals, order_totals

D = Decimal


def test_the_float_traps_come_out_exact() -> None:
    # 0.1 + 0.2 in floats is 0.30000000000000004.
    totals = order_totals([(D("0.10"), D(1), D(0), D(0)), (D("0.20"), D(1), D(0), D(0))])
    assert totals.total == D("0.30") and str(totals.total) == "0.30"
    # 19.99 x 3 = 59.97; 7.5% tax = 4.49775 -> 4.50 (half up); total 64.47.
    line = line_totals(D("19.99"), D(3), D(0), D("7.5"))
    assert line == line_totals(D("19.99"), D("3.000"), D("0"), D("7.50"))
    assert (line.subtotal, line.discount, line.tax, line.total) == (
        D("59.97"),
        D("0.00"),
        D("4.50"),
        D("64.47"),
    )


def test_discount_before_tax_and_half_up() -> None:
    line = line_totals(D("10.00"), D("1.5"), D("10"), D("20"))
    # 15.00, discount 1.50, tax on 13.50 = 2.70, total 16.20
    assert (line.subtotal, line.discount, line.tax, line.total) == (
        D("15.00"),
        D("1.50"),
        D("2.70"),
        D("16.20"),
    )
    assert cents(D("0.005")) == D("0.01") and cents(D("0.0049")) == D("0.00")
    assert cents(D("2.675")) == D("2.68")  # a float would say 2.67
    assert line_totals(D("0.01"), D("0.5"), D(0), D(0)).subtotal == D("0.01")


def test_bad_lines_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        line_totals(D(1), D(0), D(0), D(0))
    with pytest.raises(ValueError, match="0-100"):
        line_totals(D(1), D(1), D(101), D(0))


def test_an_empty_order_is_zero() -> None:
    assert order_totals([]).total == D("0.00")


_money = st.decimals(min_value=0, max_value=D("99999999999999.9999"), places=4)
_quantity = st.decimals(min_value=D("0.0001"), max_value=D("99999999.9999"), places=4)
_percent = st.decimals(min_value=0, max_value=100, places=2)


@given(st.lists(st.tuples(_money, _quantity, _percent, _percent), min_size=1, max_size=20))
def test_total_is_the_exact_sum_of_line_totals(
    lines: list[tuple[Decimal, Decimal, Decimal, Decimal]],
) -> None:
    totals = order_totals(lines)
    assert totals.total == sum((t.total for t in totals.lines), D(0))
    assert totals.total == totals.subtotal - totals.discount_total + totals.tax_total
    for (price, qty, _disc, _tax), line in zip(lines, totals.lines, strict=True):
        assert line.total == line.subtotal - line.discount + line.tax
        for value in (line.subtotal, line.discount, line.tax, line.total):
            assert value == value.quantize(D("0.01"))  # whole cents
        # Each rounding is within half a cent of the exact value.
        assert abs(line.subtotal - price * qty) <= D("0.005")
        assert 0 <= line.discount <= line.subtotal
        assert line.tax >= 0
