"""Record-level access (OWASP API1, 2023) on deals and orders: agents read their
team's and change only their own, on every read, list, history, update, stage move,
close and status change, and order only their own deals — against the deployed app,
with users made for this module (tests/e2e/test_record_access.py does customers)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Member, team_people

pytestmark = pytest.mark.e2e
AGENTS = ("a1", "a2", "b1")


def _made(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _deal(http: httpx.Client, who: Member, customer: str, name: str, amount: str) -> str:
    body = {"customer_id": customer, "name": name, "amount": {"amount": amount, "currency": "EUR"}}
    deal = _made(http.post("/v1/sales/deals", headers=who.headers, json=body))
    assert deal["owner_id"] == who.id
    return str(deal["id"])


def _order(http: httpx.Client, who: dict[str, str], customer: str, book: str, product: str) -> str:
    lines = [{"product_id": product, "quantity": "1"}]
    body = {"customer_id": customer, "price_book_id": book, "lines": lines}
    return str(_made(http.post("/v1/sales/orders", headers=who, json=body))["id"])


@pytest.fixture(scope="module")
def world(http: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    """Teams A and B; agents a1 and a2 in A, b1 in B. Each agent owns a customer, an
    open deal on it (all three at one amount no other module uses) and a draft order
    in this module's price book. Beside them, on a2's customer: a deal the admin gave
    to b1 and an order the admin owns, which a1 must not see among a2's."""
    tag = os.urandom(4).hex()
    teams, people = team_people(
        http, admin, "sales", {"a1": ("agent", "A"), "a2": ("agent", "A"), "b1": ("agent", "B")}
    )
    books = []
    for _ in range(2):  # the second for orders made from deals (kept out of the lists)
        body = {"name": f"Scope book {os.urandom(3).hex()}", "currency": "EUR"}
        books.append(
            str(_made(http.post("/v1/products/price-books", headers=admin, json=body))["id"])
        )
    made = http.post("/v1/products", headers=admin, json={"sku": f"SC-{tag}", "name": "Scoped"})
    product = str(_made(made)["id"])
    for book in books:
        priced = http.put(
            f"/v1/products/price-books/{book}/prices/{product}",
            headers=admin,
            json={"unit_price": "2.50"},
        )
        assert priced.status_code in (200, 201), priced.text
    amount = f"{4000 + int(tag[:3], 16)}.37"
    customers, deals, orders = {}, {}, {}
    for who in AGENTS:
        member = people[who]
        body = {"name": f"Scope {tag} {who}"}
        customers[who] = str(
            _made(http.post("/v1/customers", headers=member.headers, json=body))["id"]
        )
        deals[who] = _deal(http, member, customers[who], f"Scope {tag} {who}", amount)
        orders[who] = _order(http, member.headers, customers[who], books[0], product)
    given = {
        "customer_id": customers["a2"],
        "name": f"Given {tag}",
        "amount": {"amount": "1.00", "currency": "EUR"},
        "owner_id": people["b1"].id,
    }
    deals["given"] = str(_made(http.post("/v1/sales/deals", headers=admin, json=given))["id"])
    orders["admin"] = _order(http, admin, customers["a2"], books[0], product)
    stages = {
        s["name"]: s["id"]
        for p in http.get("/v1/sales/pipelines", headers=admin).json()["data"]
        if p["is_default"]
        for s in p["stages"]
    }
    return {
        "tag": tag,
        "amount": amount,
        "people": people,
        "books": books,
        "product": product,
        "customers": customers,
        "deals": deals,
        "orders": orders,
        "stages": stages,
    }


def _deal_names(http: httpx.Client, headers: dict[str, str], world: dict[str, Any]) -> Any:
    amount = world["amount"]
    page = http.get(
        "/v1/sales/deals",
        headers=headers,
        params={"amount[gte]": amount, "amount[lte]": amount, "count": "true"},
    )
    assert page.status_code == 200, page.text
    return {d["name"].rsplit(" ", 1)[1] for d in page.json()["data"]}, page.json()["total"]


def _order_owners(http: httpx.Client, headers: dict[str, str], world: dict[str, Any]) -> Any:
    params = {"price_book_id": world["books"][0], "count": "true"}
    page = http.get("/v1/sales/orders", headers=headers, params=params)
    assert page.status_code == 200, page.text
    return {o["owner_id"] for o in page.json()["data"]}, page.json()["total"]


def test_agents_read_their_teams_deals_only(http: httpx.Client, world: dict[str, Any]) -> None:
    a1, b1 = world["people"]["a1"], world["people"]["b1"]
    deals, customers = world["deals"], world["customers"]
    for who in ("a1", "a2"):
        url = f"/v1/sales/deals/{deals[who]}"
        for path in (url, f"{url}/history", f"{url}/stage-history"):
            assert http.get(path, headers=a1.headers).status_code == 200, path
    stranger = f"/v1/sales/deals/{deals['b1']}"
    for path in (stranger, f"{stranger}/history", f"{stranger}/stage-history"):
        hidden = http.get(path, headers=a1.headers)
        assert hidden.status_code == 404, (path, hidden.text)  # its existence is not told
    assert _deal_names(http, a1.headers, world) == ({"a1", "a2"}, 2)
    assert _deal_names(http, b1.headers, world) == ({"b1"}, 1)
    # The owner filter cannot widen the scope.
    other = http.get("/v1/sales/deals", headers=a1.headers, params={"owner_id": b1.id})
    assert other.status_code == 200 and other.json()["data"] == []
    # A customer's deals: only those the scope reaches (not b1's deal on a2's customer).
    listed = http.get(f"/v1/sales/customers/{customers['a2']}/deals", headers=a1.headers)
    assert listed.status_code == 200, listed.text
    assert [d["id"] for d in listed.json()["data"]] == [deals["a2"]]
    assert (
        http.get(f"/v1/sales/customers/{customers['b1']}/deals", headers=a1.headers).status_code
        == 404
    )
    # b1 reaches the deal given to them, though not the customer it is on.
    assert http.get(f"/v1/sales/deals/{deals['given']}", headers=b1.headers).status_code == 200
    assert (
        http.get(f"/v1/sales/customers/{customers['a2']}/deals", headers=b1.headers).status_code
        == 404
    )


def test_admins_read_every_deal_and_order(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    names, total = _deal_names(http, admin, world)
    assert set(AGENTS) <= names and total >= 3
    owners, _ = _order_owners(http, admin, world)
    assert {world["people"][who].id for who in AGENTS} < owners  # and the admin's own


def test_agents_change_only_their_own_deals(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    a1 = world["people"]["a1"]
    deals, stages = world["deals"], world["stages"]
    before = {
        who: http.get(f"/v1/sales/deals/{deals[who]}", headers=admin).json() for who in ("a2", "b1")
    }
    for who, status in (("a2", 403), ("b1", 404)):
        url = f"/v1/sales/deals/{deals[who]}"
        attempts = {
            "update": http.patch(url, headers=a1.headers, json={"name": "taken"}),
            # A stale If-Match is not told either: the scope is checked first.
            "stale update": http.patch(
                url, headers={**a1.headers, "If-Match": '"9"'}, json={"name": "taken"}
            ),
            "stage": http.post(
                f"{url}/stage", headers=a1.headers, json={"stage_id": stages["Qualification"]}
            ),
            "won": http.post(f"{url}/won", headers=a1.headers, json={"reason": "mine now"}),
            "lost": http.post(f"{url}/lost", headers=a1.headers, json={"reason": "gone"}),
            # Refused by scope before the rules (reopening an open deal would be a 409).
            "reopen": http.post(f"{url}/reopen", headers=a1.headers),
        }
        for action, response in attempts.items():
            assert response.status_code == status, (who, action, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
    # Nothing was written by the refused calls.
    for who in ("a2", "b1"):
        after = http.get(f"/v1/sales/deals/{deals[who]}", headers=admin).json()
        assert after == before[who]
        assert (after["version"], after["status"]) == (1, "open")
        history = http.get(f"/v1/sales/deals/{deals[who]}/stage-history", headers=admin).json()[
            "data"
        ]
        assert len(history) == 1
    # Their own deal: every change goes through.
    url = f"/v1/sales/deals/{deals['a1']}"
    dated = {"expected_close_date": "2027-01-31"}
    changed = http.patch(url, headers={**a1.headers, "If-Match": '"1"'}, json=dated)
    assert changed.status_code == 200, changed.text
    moved = http.post(
        f"{url}/stage", headers=a1.headers, json={"stage_id": stages["Qualification"]}
    )
    assert moved.status_code == 200, moved.text
    won = http.post(f"{url}/won", headers=a1.headers, json={"reason": "best fit"})
    assert won.status_code == 200 and won.json()["status"] == "won", won.text
    assert http.post(f"{url}/reopen", headers=a1.headers).status_code == 200


def test_agents_read_their_teams_orders_only(http: httpx.Client, world: dict[str, Any]) -> None:
    a1, a2, b1 = (world["people"][who] for who in AGENTS)
    orders, customers = world["orders"], world["customers"]
    for who in ("a1", "a2"):
        for path in (f"/v1/sales/orders/{orders[who]}", f"/v1/sales/orders/{orders[who]}/history"):
            assert http.get(path, headers=a1.headers).status_code == 200, path
    for path in (f"/v1/sales/orders/{orders['b1']}", f"/v1/sales/orders/{orders['b1']}/history"):
        assert http.get(path, headers=a1.headers).status_code == 404, path
    assert _order_owners(http, a1.headers, world) == ({a1.id, a2.id}, 2)
    assert _order_owners(http, b1.headers, world) == ({b1.id}, 1)
    other = http.get("/v1/sales/orders", headers=a1.headers, params={"owner_id": b1.id})
    assert other.status_code == 200 and other.json()["data"] == []
    # A customer's orders: a2's, not the one the admin owns on a2's customer.
    listed = http.get(f"/v1/sales/customers/{customers['a2']}/orders", headers=a1.headers)
    assert listed.status_code == 200, listed.text
    assert [o["id"] for o in listed.json()["data"]] == [orders["a2"]]
    assert (
        http.get(f"/v1/sales/customers/{customers['b1']}/orders", headers=a1.headers).status_code
        == 404
    )


def test_agents_change_only_their_own_orders(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    a1 = world["people"]["a1"]
    orders = world["orders"]
    lines = [{"product_id": world["product"], "quantity": "2"}]
    before = {
        who: http.get(f"/v1/sales/orders/{orders[who]}", headers=admin).json()
        for who in ("a2", "b1")
    }
    for who, status in (("a2", 403), ("b1", 404)):
        url = f"/v1/sales/orders/{orders[who]}"
        attempts = {
            "notes": http.patch(url, headers=a1.headers, json={"notes": "taken"}),
            "lines": http.patch(url, headers=a1.headers, json={"lines": lines}),
            "stale": http.patch(
                url, headers={**a1.headers, "If-Match": '"9"'}, json={"notes": "taken"}
            ),
            "confirm": http.post(f"{url}/confirm", headers=a1.headers),
            "cancel": http.post(f"{url}/cancel", headers=a1.headers),
        }
        for action, response in attempts.items():
            assert response.status_code == status, (who, action, response.text)
    for who in ("a2", "b1"):
        after = http.get(f"/v1/sales/orders/{orders[who]}", headers=admin).json()
        assert after == before[who]
        assert (after["version"], after["status"], after["notes"]) == (1, "draft", None)
    url = f"/v1/sales/orders/{orders['a1']}"
    noted = http.patch(url, headers=a1.headers, json={"notes": "mine", "lines": lines})
    assert noted.status_code == 200 and noted.json()["total"]["amount"] == "5.00", noted.text
    confirmed = http.post(f"{url}/confirm", headers=a1.headers)
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"


def test_agents_order_only_their_own_deals(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    """An order from a deal needs the deal in the caller's order:write scope: a team
    mate's won deal is a 403, a stranger's a 404; no order is made for either."""
    people, customers = world["people"], world["customers"]
    won = {}
    for who in AGENTS:
        deal = _deal(http, people[who], customers[who], f"Won {world['tag']} {who}", "9.00")
        closed = http.post(f"/v1/sales/deals/{deal}/won", headers=people[who].headers, json={})
        assert closed.status_code == 200, closed.text
        won[who] = deal
    a1 = people["a1"]
    body = {
        "price_book_id": world["books"][1],
        "lines": [{"product_id": world["product"], "quantity": "1"}],
    }
    for who, status in (("a2", 403), ("b1", 404)):
        refused = http.post(f"/v1/sales/deals/{won[who]}/order", headers=a1.headers, json=body)
        assert refused.status_code == status, (who, refused.text)
        made = http.get("/v1/sales/orders", headers=admin, params={"deal_id": won[who]}).json()
        assert made["data"] == []
    mine = _made(http.post(f"/v1/sales/deals/{won['a1']}/order", headers=a1.headers, json=body))
    assert (mine["deal_id"], mine["owner_id"]) == (won["a1"], a1.id)
    # The team mate orders their own deal themselves.
    theirs = http.post(
        f"/v1/sales/deals/{won['a2']}/order", headers=people["a2"].headers, json=body
    )
    assert theirs.status_code == 201, theirs.text
