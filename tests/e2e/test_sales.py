"""The Sales service over HTTP and through its deployment handle: pipelines, deals on
their customer's shard with stage history, orders with exact totals."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ray import serve

from deployments._kit.types import Money
from deployments.sales.schemas import DealCreate, DealRead
from gateway.principal import Principal
from shards import consistency, ids

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def _customer(http: httpx.Client, headers: dict[str, str], name: str = "Deal Co") -> str:
    made = http.post("/v1/customers", headers=headers, json={"name": name})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


@pytest.fixture(scope="module")
def default_pipeline(http: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    page = http.get("/v1/sales/pipelines", headers=admin)
    assert page.status_code == 200, page.text
    defaults = [p for p in page.json()["data"] if p["is_default"]]
    assert len(defaults) == 1
    return dict(defaults[0])


def _stage(pipeline: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in pipeline["stages"] if s["name"] == name)


def test_default_pipeline_exists(default_pipeline: dict[str, Any]) -> None:
    stages = [(s["name"], s["probability"], s["kind"]) for s in default_pipeline["stages"]]
    assert stages == [
        ("Prospecting", 10, "open"),
        ("Qualification", 25, "open"),
        ("Proposal", 50, "open"),
        ("Negotiation", 75, "open"),
        ("Closed Won", 100, "won"),
        ("Closed Lost", 0, "lost"),
    ]
    assert [s["position"] for s in default_pipeline["stages"]] == [1, 2, 3, 4, 5, 6]


def test_pipeline_stages_are_managed_with_the_pipeline(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    body = {
        "name": "Renewals",
        "stages": [
            {"name": "Due", "probability": 60},
            {"name": "Renewed", "probability": 100, "kind": "won"},
            {"name": "Churned", "probability": 0, "kind": "lost"},
        ],
    }
    assert http.post("/v1/sales/pipelines", headers=agent, json=body).status_code == 403
    made = http.post("/v1/sales/pipelines", headers=admin, json=body)
    assert made.status_code == 201, made.text
    pipeline = made.json()
    url = f"/v1/sales/pipelines/{pipeline['id']}"
    added = http.post(
        f"{url}/stages", headers=admin, json={"name": "Quoted", "probability": 80, "position": 2}
    )
    assert added.status_code == 201, added.text
    assert [s["name"] for s in added.json()["stages"]] == ["Due", "Quoted", "Renewed", "Churned"]
    quoted = _stage(added.json(), "Quoted")
    moved = http.patch(f"{url}/stages/{quoted['id']}", headers=admin, json={"position": 1})
    assert moved.status_code == 200, moved.text
    assert [(s["name"], s["position"]) for s in moved.json()["stages"]] == [
        ("Quoted", 1),
        ("Due", 2),
        ("Renewed", 3),
        ("Churned", 4),
    ]
    stale = http.patch(url, headers={**admin, "If-Match": '"1"'}, json={"name": "R"})
    assert stale.status_code == 412
    # The only-open-stage rule and bad stage input.
    due = _stage(moved.json(), "Due")
    http.patch(f"{url}/stages/{quoted['id']}", headers=admin, json={"kind": "won"})
    refused = http.patch(f"{url}/stages/{due['id']}", headers=admin, json={"kind": "lost"})
    assert refused.status_code == 409
    bad = http.post(f"{url}/stages", headers=admin, json={"name": "x", "probability": 101})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "probability"
    assert http.delete(url, headers=admin).status_code == 204
    assert http.get(url, headers=admin).status_code == 404


def test_deal_lifecycle_through_the_stages(
    http: httpx.Client, admin: dict[str, str], default_pipeline: dict[str, Any]
) -> None:
    customer_id = _customer(http, admin)
    made = http.post(
        "/v1/sales/deals",
        headers=admin,
        json={
            "customer_id": customer_id,
            "name": "Big deal",
            "amount": {"amount": "12345.67", "currency": "EUR"},
            "expected_close_date": "2026-09-30",
        },
    )
    assert made.status_code == 201, made.text
    deal = made.json()
    assert deal["pipeline_id"] == str(default_pipeline["id"])
    assert deal["stage_id"] == str(_stage(default_pipeline, "Prospecting")["id"])
    assert deal["probability"] == 10 and deal["status"] == "open"
    assert deal["amount"] == {"amount": "12345.67", "currency": "EUR"}
    assert Decimal(deal["weighted_amount"]["amount"]) == Decimal("1234.567")
    # The deal lives on its customer's logical shard.
    assert ids.shard_of(int(deal["id"])) == ids.shard_of(int(customer_id))
    url = f"/v1/sales/deals/{deal['id']}"

    for name, probability in (("Qualification", 25), ("Proposal", 50), ("Negotiation", 75)):
        step = http.post(
            f"{url}/stage", headers=admin, json={"stage_id": _stage(default_pipeline, name)["id"]}
        )
        assert step.status_code == 200, step.text
        assert step.json()["probability"] == probability
    negotiated = http.get(url, headers=admin).json()
    assert Decimal(negotiated["weighted_amount"]["amount"]) == Decimal("9259.2525")

    closing = _stage(default_pipeline, "Closed Won")["id"]
    refused = http.post(f"{url}/stage", headers=admin, json={"stage_id": closing})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "stage_id"
    assert http.post(f"{url}/lost", headers=admin, json={}).status_code == 422  # reason needed

    won = http.post(f"{url}/won", headers=admin, json={"reason": "best price"})
    assert won.status_code == 200, won.text
    body = won.json()
    assert (body["status"], body["probability"], body["close_reason"]) == ("won", 100, "best price")
    assert body["closed_at"] and body["stage_id"] == str(closing)
    assert http.post(f"{url}/won", headers=admin, json={}).status_code == 409

    history = http.get(f"{url}/stage-history", headers=admin).json()["data"]
    names = {str(s["id"]): s["name"] for s in default_pipeline["stages"]}
    assert [(names.get(h["from_stage_id"]), names[h["to_stage_id"]]) for h in history] == [
        (None, "Prospecting"),
        ("Prospecting", "Qualification"),
        ("Qualification", "Proposal"),
        ("Proposal", "Negotiation"),
        ("Negotiation", "Closed Won"),
    ]
    assert all(h["seconds_in_previous_stage"] >= 0 for h in history[1:])
    assert history[-1]["status"] == "won"

    changes = http.get(f"{url}/history?sort=created_at", headers=admin).json()["data"]
    assert [c["action"] for c in changes][:2] == ["created", "stage_changed"]
    assert changes[-1]["action"] == "won"
    assert changes[-1]["changes"]["status"] == ["open", "won"]

    # Reopen goes back to the stage it left; a pipeline move then takes another one.
    reopened = http.post(f"{url}/reopen", headers=admin)
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["stage_id"] == str(_stage(default_pipeline, "Negotiation")["id"])
    assert reopened.json()["closed_at"] is None


def test_deal_lists_filters_and_customer_deals(
    http: httpx.Client, admin: dict[str, str], default_pipeline: dict[str, Any]
) -> None:
    customer_id = _customer(http, admin, "List Co")
    amounts = ["0.10", "0.20", "100", "99999.99"]
    made = [
        http.post(
            "/v1/sales/deals",
            headers=admin,
            json={
                "customer_id": customer_id,
                "name": f"L{a}",
                "amount": {"amount": a, "currency": "USD"},
            },
        ).json()
        for a in amounts
    ]
    page = http.get(
        f"/v1/sales/deals?customer_id={customer_id}&sort=amount&limit=3", headers=admin
    ).json()
    assert [d["amount"]["amount"] for d in page["data"]] == ["0.10", "0.20", "100"]
    rest = http.get(
        f"/v1/sales/deals?customer_id={customer_id}&sort=amount&limit=3&cursor={page['next_cursor']}",
        headers=admin,
    ).json()
    assert [d["amount"]["amount"] for d in rest["data"]] == ["99999.99"]
    ranged = http.get(
        f"/v1/sales/deals?customer_id={customer_id}&amount[gte]=0.2&amount[lte]=100&count=true",
        headers=admin,
    ).json()
    assert ranged["total"] == 2
    everywhere = http.get(
        "/v1/sales/deals?sort=-amount&status=open&limit=200", headers=admin
    ).json()
    assert {d["id"] for d in made} <= {d["id"] for d in everywhere["data"]}
    mine = http.get(
        f"/v1/sales/customers/{customer_id}/deals?sort=-created_at", headers=admin
    ).json()
    assert [d["id"] for d in mine["data"]] == [d["id"] for d in reversed(made)]
    assert http.get("/v1/sales/customers/12345/deals", headers=admin).status_code == 404
    by_date = http.get("/v1/sales/deals?sort=expected_close_date&limit=2", headers=admin)
    assert by_date.status_code == 200
    if by_date.json()["next_cursor"]:
        nxt = http.get(
            f"/v1/sales/deals?sort=expected_close_date&limit=2&cursor={by_date.json()['next_cursor']}",
            headers=admin,
        )
        assert nxt.status_code == 200


def test_roles_versions_and_bad_input(
    http: httpx.Client,
    admin: dict[str, str],
    agent: dict[str, str],
    viewer: dict[str, str],
    default_pipeline: dict[str, Any],
) -> None:
    customer_id = _customer(http, agent, "Rules Co")
    body = {"customer_id": customer_id, "name": "R", "amount": {"amount": "5", "currency": "EUR"}}
    assert http.post("/v1/sales/deals", headers=viewer, json=body).status_code == 403
    made = http.post("/v1/sales/deals", headers=agent, json=body)
    assert made.status_code == 201, made.text
    url = f"/v1/sales/deals/{made.json()['id']}"
    # Another user's read sees the agent's write once it brings the agent's token (else
    # a standby that has not replayed it yet may answer 404).
    after = {consistency.HEADER: made.headers[consistency.HEADER]}
    assert http.get(url, headers={**viewer, **after}).status_code == 200
    assert http.patch(url, headers=viewer, json={"name": "x"}).status_code == 403
    assert http.post(f"{url}/won", headers=viewer, json={}).status_code == 403
    assert http.delete(url, headers=viewer).status_code == 403
    assert http.post("/v1/sales/pipelines", headers=viewer, json={}).status_code in (403, 422)
    # Another owner needs deal:assign (agents do not have it).
    given = http.post("/v1/sales/deals", headers=agent, json={**body, "owner_id": "1"})
    assert given.status_code == 403

    stale = http.patch(url, headers={**agent, "If-Match": '"9"'}, json={"name": "R2"})
    assert stale.status_code == 412 and stale.headers["content-type"] == PROBLEM
    fresh = http.patch(url, headers={**agent, "If-Match": '"1"'}, json={"name": "R2"})
    assert fresh.status_code == 200 and fresh.headers["etag"] == '"2"'
    assert http.post(f"{url}/won", headers={**agent, "If-Match": '"1"'}, json={}).status_code == 412

    def problem(response: httpx.Response, field: str) -> None:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM
        assert field in {e["field"] for e in response.json()["errors"]}, response.text

    problem(
        http.post(
            "/v1/sales/deals",
            headers=agent,
            json={**body, "amount": {"amount": 0.1, "currency": "EUR"}},
        ),
        "amount.amount",
    )
    problem(
        http.post("/v1/sales/deals", headers=agent, json={**body, "customer_id": "12345"}),
        "customer_id",
    )
    problem(
        http.post("/v1/sales/deals", headers=agent, json={**body, "stage_id": "999999"}), "stage_id"
    )
    problem(http.post("/v1/sales/deals", headers=agent, json={**body, "version": 3}), "version")
    problem(http.post(f"{url}/stage", headers=agent, json={"stage_id": "999999"}), "stage_id")
    other = http.post(
        "/v1/sales/pipelines",
        headers=admin,
        json={"name": "Other", "stages": [{"name": "Only", "probability": 5}]},
    ).json()
    foreign_stage = other["stages"][0]["id"]
    problem(http.post(f"{url}/stage", headers=agent, json={"stage_id": foreign_stage}), "stage_id")
    problem(http.get("/v1/sales/deals?colour=red", headers=agent), "colour")
    problem(http.get("/v1/sales/deals?amount[gte]=lots", headers=agent), "amount[gte]")
    problem(http.get("/v1/sales/deals?sort=name", headers=agent), "sort")
    garbage = http.get("/v1/sales/deals?sort=amount&cursor=garbage", headers=agent)
    assert garbage.status_code == 400, garbage.text  # a cursor not ours is malformed
    assert [e["field"] for e in garbage.json()["errors"]] == ["cursor"]

    # A pipeline move into the other pipeline's open stage.
    moved = http.post(
        f"{url}/move", headers=agent, json={"pipeline_id": other["id"], "stage_id": foreign_stage}
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["pipeline_id"], moved.json()["probability"]) == (other["id"], 5)

    assert http.delete(url, headers=agent).status_code == 403  # agents do not delete deals
    assert http.delete(url, headers=admin).status_code == 204
    assert http.get(url, headers=admin).status_code == 404
    assert http.post(f"{url}/restore", headers=admin).status_code == 200


def test_create_deal_through_the_handle_is_idempotent_by_source_key(
    ray_driver: None, http: httpx.Client, admin: dict[str, str]
) -> None:
    me = http.get("/v1/auth/me", headers=admin).json()
    principal = Principal(
        user_id=int(me["id"]),
        role="admin",
        permissions=frozenset({"deal:read", "deal:write", "customer:read"}),
    )
    customer_id = int(_customer(http, admin, "Lead Co"))
    sales = serve.get_app_handle("sales")
    data = DealCreate(
        customer_id=customer_id, name="From lead", amount=Money(amount="250", currency="EUR")
    )
    first = sales.create_deal.remote(principal, data, source_key="lead:42").result()
    again = sales.create_deal.remote(principal, data, source_key="lead:42").result()
    assert isinstance(first, DealRead) and again.id == first.id
    assert first.source_key == "lead:42"
    page = http.get(f"/v1/sales/customers/{customer_id}/deals", headers=admin).json()
    assert [d["id"] for d in page["data"]] == [str(first.id)]


def _priced_product(
    http: httpx.Client, admin: dict[str, str], book: str, price: str, tax: str = "0"
) -> str:
    made = http.post(
        "/v1/products",
        headers=admin,
        json={"sku": f"S-{os.urandom(4).hex()}", "name": f"P {price}", "tax_percent": tax},
    )
    assert made.status_code == 201, made.text
    pid = str(made.json()["id"])
    priced = http.put(
        f"/v1/products/price-books/{book}/prices/{pid}", headers=admin, json={"unit_price": price}
    )
    assert priced.status_code in (200, 201), priced.text
    return pid


def test_order_from_a_won_deal_with_exact_totals(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str], viewer: dict[str, str]
) -> None:
    book = http.post(
        "/v1/products/price-books",
        headers=admin,
        json={"name": f"B {os.urandom(3).hex()}", "currency": "EUR"},
    )
    assert book.status_code == 201, book.text
    book_id = str(book.json()["id"])
    gadget = _priced_product(http, admin, book_id, "19.99", tax="7.5")
    dime = _priced_product(http, admin, book_id, "0.10")
    fifth = _priced_product(http, admin, book_id, "0.20")
    customer_id = _customer(http, agent, "Order Co")
    deal = http.post(
        "/v1/sales/deals",
        headers=agent,
        json={
            "customer_id": customer_id,
            "name": "O",
            "amount": {"amount": "65", "currency": "EUR"},
        },
    ).json()
    lines = [
        {"product_id": gadget, "quantity": "3"},  # 59.97 + 7.5% tax 4.49775 -> 4.50
        {"product_id": dime, "quantity": "1"},
        {"product_id": fifth, "quantity": "2.5", "discount_percent": "10"},  # 0.50 - 0.05
    ]
    order_url = f"/v1/sales/deals/{deal['id']}/order"
    body = {"price_book_id": book_id, "lines": lines}
    not_won = http.post(order_url, headers=agent, json=body)
    assert not_won.status_code == 409, not_won.text
    assert http.post(f"/v1/sales/deals/{deal['id']}/won", headers=agent, json={}).status_code == 200

    assert http.post(order_url, headers=viewer, json=body).status_code == 403
    made = http.post(order_url, headers=agent, json=body)
    assert made.status_code == 201, made.text
    order = made.json()
    assert ids.shard_of(int(order["id"])) == ids.shard_of(int(customer_id))
    assert (order["customer_id"], order["deal_id"]) == (customer_id, deal["id"])
    assert (order["currency"], order["status"]) == ("EUR", "draft")
    assert [
        (x["unit_price"], x["tax_percent"], x["subtotal"], x["discount"], x["tax"], x["total"])
        for x in order["lines"]
    ] == [
        ("19.99", "7.5", "59.97", "0.00", "4.50", "64.47"),
        ("0.10", "0", "0.10", "0.00", "0.00", "0.10"),
        ("0.20", "0", "0.50", "0.05", "0.00", "0.45"),
    ]
    assert order["lines"][0]["name"] == "P 19.99" and order["lines"][0]["sku"].startswith("S-")
    assert {
        k: order[k]["amount"] for k in ("subtotal", "discount_total", "tax_total", "total")
    } == {
        "subtotal": "60.57",
        "discount_total": "0.05",
        "tax_total": "4.50",
        "total": "65.02",
    }
    assert order["total"]["currency"] == "EUR"
    assert http.post(order_url, headers=agent, json=body).status_code == 409  # one per deal

    def unprocessable(response: httpx.Response, field: str) -> None:
        assert response.status_code == 422, response.text
        assert any(field in e["field"] for e in response.json()["errors"]), response.text

    new = {"customer_id": customer_id, "price_book_id": book_id, "lines": lines}
    unprocessable(
        http.post("/v1/sales/orders", headers=agent, json={**new, "total": "1.00"}), "total"
    )
    unprocessable(
        http.post(
            "/v1/sales/orders",
            headers=agent,
            json={**new, "lines": [{"product_id": dime, "quantity": 1.5}]},
        ),
        "quantity",
    )
    unprocessable(
        http.post(
            "/v1/sales/orders",
            headers=agent,
            json={**new, "lines": [{"product_id": dime, "quantity": "0"}]},
        ),
        "quantity",
    )
    unprocessable(
        http.post(
            "/v1/sales/orders",
            headers=agent,
            json={**new, "lines": [{"product_id": "12345", "quantity": "1"}]},
        ),
        "product_id",
    )
    unprocessable(
        http.post("/v1/sales/orders", headers=agent, json={**new, "customer_id": "12345"}),
        "customer_id",
    )
    explicit = {**new, "lines": [{"product_id": dime, "quantity": "1", "unit_price": "0.01"}]}
    assert http.post("/v1/sales/orders", headers=agent, json=explicit).status_code == 403
    by_admin = http.post("/v1/sales/orders", headers=admin, json=explicit)
    assert by_admin.status_code == 201 and by_admin.json()["total"]["amount"] == "0.01"

    url = f"/v1/sales/orders/{order['id']}"
    stale = http.patch(url, headers={**agent, "If-Match": '"9"'}, json={"notes": "x"})
    assert stale.status_code == 412
    noted = http.patch(url, headers={**agent, "If-Match": '"1"'}, json={"notes": "ship fast"})
    assert noted.status_code == 200 and noted.json()["version"] == 2
    confirmed = http.post(f"{url}/confirm", headers=agent)
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
    assert http.patch(url, headers=agent, json={"notes": "late"}).status_code == 409
    assert http.post(f"{url}/confirm", headers=agent).status_code == 409
    assert http.delete(url, headers=admin).status_code == 409
    cancelled = http.post(f"{url}/cancel", headers=agent)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    listed = http.get(f"/v1/sales/customers/{customer_id}/orders?sort=total", headers=viewer).json()
    assert [o["total"]["amount"] for o in listed["data"]] == ["0.01", "65.02"]
    everywhere = http.get("/v1/sales/orders?status=cancelled&limit=200", headers=viewer).json()
    assert order["id"] in {o["id"] for o in everywhere["data"]}
    assert http.get("/v1/sales/orders?colour=red", headers=viewer).status_code == 422
    actions = [c["action"] for c in http.get(f"{url}/history", headers=viewer).json()["data"]]
    assert actions == ["cancelled", "confirmed", "updated", "created"]
