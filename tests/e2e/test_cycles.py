"""Whole working days across services, over HTTP as a client app drives them."""

from __future__ import annotations

import itertools
import os
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shards import ids

pytestmark = pytest.mark.e2e


def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_full_sales_cycle_from_a_web_form_to_an_order(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    """Lead captured by a public form -> converted (customer + contact + deal) -> deal
    moved through the pipeline -> won -> an order with line items and exact totals."""
    tag = os.urandom(3).hex()
    # What marketing and sales set up once: a campaign, its form, a price book.
    campaign = _ok(
        http.post(
            "/v1/marketing/campaigns", headers=admin, json={"name": f"Web {tag}", "type": "email"}
        ),
        201,
    )
    form = _ok(
        http.post(
            "/v1/marketing/forms",
            headers=admin,
            json={"name": f"Demo {tag}", "campaign_id": campaign["id"]},
        ),
        201,
    )
    book = _ok(
        http.post(
            "/v1/products/price-books", headers=admin, json={"name": f"EU {tag}", "currency": "EUR"}
        ),
        201,
    )
    licence = _ok(
        http.post(
            "/v1/products",
            headers=admin,
            json={"sku": f"LIC-{tag}", "name": "Licence", "tax_percent": "19"},
        ),
        201,
    )
    setup = _ok(
        http.post("/v1/products", headers=admin, json={"sku": f"SET-{tag}", "name": "Setup"}), 201
    )
    for product, price in ((licence, "19.99"), (setup, "0.10")):
        _ok(
            http.put(
                f"/v1/products/price-books/{book['id']}/prices/{product['id']}",
                headers=admin,
                json={"unit_price": price},
            )
        )

    # 1. A visitor fills the public form: no token.
    email = f"ada-{tag}@example.com"
    captured = http.post(
        f"/v1/marketing/capture/{form['form_key']}",
        headers={"X-Forwarded-For": f"203.0.113.{os.urandom(1)[0]}"},
        json={"email": email, "first_name": "Ada", "last_name": "Lovelace", "company": "Engines"},
    )
    assert captured.status_code == 202, captured.text
    (lead,) = _ok(http.get(f"/v1/marketing/leads?email={email}", headers=admin))["data"]
    assert lead["status"] == "new" and lead["source"] == "web_form"
    members = _ok(http.get(f"/v1/marketing/campaigns/{campaign['id']}/members", headers=admin))[
        "data"
    ]
    assert [m["lead_id"] for m in members] == [lead["id"]]

    # 2. Sales converts it: customer + contact + deal, no distributed transaction.
    conversion = _ok(
        http.post(
            f"/v1/marketing/leads/{lead['id']}/convert",
            headers=admin,
            json={
                "create_deal": True,
                "deal": {
                    "name": "Engines rollout",
                    "amount": {"amount": "1200.00", "currency": "EUR"},
                },
            },
        )
    )
    assert conversion["state"] == "completed"
    customer = _ok(http.get(f"/v1/customers/{conversion['customer_id']}", headers=admin))
    assert customer["name"] == "Engines"
    contact = _ok(http.get(f"/v1/customers/contacts/{conversion['contact_id']}", headers=admin))
    assert contact["email"] == email and contact["customer_id"] == customer["id"]
    assert (
        _ok(http.get(f"/v1/marketing/leads/{lead['id']}", headers=admin))["status"] == "converted"
    )
    # The deal lives on its customer's shard.
    deal = _ok(http.get(f"/v1/sales/deals/{conversion['deal_id']}", headers=admin))
    assert ids.shard_of(int(deal["id"])) == ids.shard_of(int(customer["id"]))

    # 3. Through the default pipeline's open stages; probability follows each stage.
    pipeline = _ok(http.get(f"/v1/sales/pipelines/{deal['pipeline_id']}", headers=admin))
    stages = sorted(pipeline["stages"], key=lambda s: s["position"])
    open_stages = [s for s in stages if s["kind"] == "open"]
    assert deal["stage_id"] == open_stages[0]["id"]
    for stage in open_stages[1:]:
        deal = _ok(
            http.post(
                f"/v1/sales/deals/{deal['id']}/stage", headers=admin, json={"stage_id": stage["id"]}
            )
        )
        assert deal["probability"] == stage["probability"]
        expected = Decimal("1200.00") * stage["probability"] / 100
        assert Decimal(deal["weighted_amount"]["amount"]) == expected

    # 4. Won, with a reason; the stage history holds every transition.
    deal = _ok(
        http.post(f"/v1/sales/deals/{deal['id']}/won", headers=admin, json={"reason": "Best fit"})
    )
    assert deal["status"] == "won" and deal["probability"] == 100
    transitions = _ok(
        http.get(f"/v1/sales/deals/{deal['id']}/stage-history?sort=changed_at", headers=admin)
    )["data"]
    won_stage = next(s for s in stages if s["kind"] == "won")
    moves = [(t["from_stage_id"], t["to_stage_id"]) for t in transitions]
    path = [s["id"] for s in open_stages] + [won_stage["id"]]
    # The creation (no from-stage), every move, then the win: nothing missing or extra.
    assert moves == [(None, path[0]), *itertools.pairwise(path)]
    assert transitions[-1]["status"] == "won"

    # 5. The order: prices from the book, totals computed on the server, exact.
    order = _ok(
        http.post(
            f"/v1/sales/deals/{deal['id']}/order",
            headers=admin,
            json={
                "price_book_id": book["id"],
                "lines": [
                    {"product_id": licence["id"], "quantity": "3", "discount_percent": "10"},
                    {"product_id": setup["id"], "quantity": "3", "tax_percent": "7.5"},
                ],
            },
        ),
        201,
    )
    # Licence: 3 x 19.99 = 59.97, -10% = 5.997 -> 6.00, 53.97 + 19% = 10.2543 -> 10.25.
    # Setup: 3 x 0.10 = 0.30 (a float sum would give 0.30000000000000004), 7.5% = 0.0225
    # -> 0.02.
    assert order["customer_id"] == customer["id"] and order["deal_id"] == deal["id"]
    assert order["subtotal"] == {"amount": "60.27", "currency": "EUR"}
    assert order["discount_total"] == {"amount": "6.00", "currency": "EUR"}
    assert order["tax_total"] == {"amount": "10.27", "currency": "EUR"}
    assert order["total"] == {"amount": "64.54", "currency": "EUR"}
    line_totals = sum(Decimal(line["total"]) for line in order["lines"])
    assert line_totals == Decimal(order["total"]["amount"])
    assert ids.shard_of(int(order["id"])) == ids.shard_of(int(customer["id"]))
    confirmed = _ok(http.post(f"/v1/sales/orders/{order['id']}/confirm", headers=admin))
    assert confirmed["status"] == "confirmed"
    # The customer's page shows what happened: its deal and its order.
    assert [
        d["id"]
        for d in _ok(http.get(f"/v1/sales/customers/{customer['id']}/deals", headers=admin))["data"]
    ] == [deal["id"]]
    assert [
        o["id"]
        for o in _ok(http.get(f"/v1/sales/customers/{customer['id']}/orders", headers=admin))[
            "data"
        ]
    ] == [order["id"]]
