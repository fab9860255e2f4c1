"""Order totals, computed on the server with exact decimals (clients never send them).

Per line, each amount is rounded to cents half-up as it is computed:

    subtotal = unit_price x quantity
    discount = subtotal x discount_percent / 100
    tax      = (subtotal - discount) x tax_percent / 100
    total    = subtotal - discount + tax

and the order's subtotal, discount_total, tax_total and total are the sums of the
lines' (so the order total is always exactly the sum of what each line shows, and
equals subtotal - discount_total + tax_total).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

CENT = Decimal("0.01")
_HUNDRED = Decimal(100)


def cents(value: Decimal) -> Decimal:
    """Rounded to 2 places, half up (0.005 -> 0.01)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class LineTotals:
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal


@dataclass(frozen=True)
class OrderTotals:
    lines: tuple[LineTotals, ...]
    subtotal: Decimal
    discount_total: Decimal
    tax_total: Decimal
    total: Decimal


def line_totals(
    unit_price: Decimal, quantity: Decimal, discount_percent: Decimal, tax_percent: Decimal
) -> LineTotals:
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    if not (0 <= discount_percent <= 100 and 0 <= tax_percent <= 100):
        raise ValueError("percentages are 0-100")
    # Enough precision that no product below is ever rounded before `cents`.
    with localcontext() as ctx:
        ctx.prec = 80
        subtotal = cents(unit_price * quantity)
        discount = cents(subtotal * discount_percent / _HUNDRED)
        tax = cents((subtotal - discount) * tax_percent / _HUNDRED)
        return LineTotals(subtotal, discount, tax, subtotal - discount + tax)


def order_totals(
    lines: Sequence[tuple[Decimal, Decimal, Decimal, Decimal]],
) -> OrderTotals:
    """`lines`: (unit_price, quantity, discount_percent, tax_percent) each."""
    computed = tuple(line_totals(*line) for line in lines)
    zero = Decimal("0.00")
    with localcontext() as ctx:
        ctx.prec = 80
        return OrderTotals(
            lines=computed,
            subtotal=sum((t.subtotal for t in computed), zero),
            discount_total=sum((t.discount for t in computed), zero),
            tax_total=sum((t.tax for t in computed), zero),
            total=sum((t.total for t in computed), zero),
        )
