"""Products, price books and prices over HTTP, and quotes through a handle."""

from __future__ import annotations

import os
from decimal import Decimal

import httpx
import pytest
import ray
from ray import serve

from cluster.settings import Settings
from gateway.errors import Validation
from gateway.principal import Principal

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def _sku() -> str:
    return f"SKU-{os.urandom(4).hex()}"


def _product(http: httpx.Client, admin: dict[str, str], **fields: object) -> dict[str, object]:
    body = {"sku": _sku(), "name": "Widget", **fields}
    created = http.post("/v1/products", headers=admin, json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


def _book(http: httpx.Client, admin: dict[str, str], currency: str = "EUR") -> dict[str, object]:
    created = http.post(
        "/v1/products/price-books",
        headers=admin,
        json={"name": f"Book {os.urandom(3).hex()}", "currency": currency},
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


def test_product_crud_sku_and_history(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    product = _product(http, admin, tax_percent="7.5", family="hardware")
    pid = product["id"]
    assert isinstance(pid, str) and product["tax_percent"] == "7.5"
    assert product["is_active"] is True

    # A SKU names one live product, whatever its case.
    dup = http.post(
        "/v1/products", headers=admin, json={"sku": str(product["sku"]).lower(), "name": "x"}
    )
    assert dup.status_code == 409 and dup.headers["content-type"] == PROBLEM

    got = http.get(f"/v1/products/{pid}", headers=viewer)
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    stale = http.patch(
        f"/v1/products/{pid}", headers={**admin, "If-Match": '"7"'}, json={"name": "B"}
    )
    assert stale.status_code == 412
    renamed = http.patch(
        f"/v1/products/{pid}", headers={**admin, "If-Match": '"1"'}, json={"name": "Gadget"}
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "Gadget"
    # The cached read sees the change at once (the write bumped the cache generation).
    assert http.get(f"/v1/products/{pid}", headers=viewer).json()["name"] == "Gadget"

    assert (
        http.post("/v1/products", headers=viewer, json={"sku": _sku(), "name": "n"}).status_code
        == 403
    )
    for bad in (
        {"sku": "", "name": "x"},
        {"sku": "has space", "name": "x"},
        {"sku": _sku(), "name": "x", "tax_percent": "101"},
        {"sku": _sku(), "name": "x", "id": "5"},
    ):
        answer = http.post("/v1/products", headers=admin, json=bad)
        assert answer.status_code == 422, (bad, answer.text)
    assert http.patch(f"/v1/products/{pid}", headers=admin, json={"name": None}).status_code == 422

    assert http.delete(f"/v1/products/{pid}", headers=admin).status_code == 204
    assert http.get(f"/v1/products/{pid}", headers=admin).status_code == 404
    assert http.post(f"/v1/products/{pid}/restore", headers=admin).status_code == 200

    history = http.get(f"/v1/products/{pid}/history?sort=created_at", headers=admin).json()["data"]
    assert [h["action"] for h in history] == ["created", "updated", "deleted", "restored"]
    assert history[1]["changes"] == {"name": ["Widget", "Gadget"]}

    listed = http.get(f"/v1/products?sku={product['sku']}", headers=admin).json()["data"]
    assert [p["id"] for p in listed] == [pid]
    assert http.get("/v1/products?colour=red", headers=admin).status_code == 422


def test_prices_and_quotes(http: httpx.Client, admin: dict[str, str], serve_app: Settings) -> None:
    book = _book(http, admin, "EUR")
    first, second = _product(http, admin, tax_percent="19"), _product(http, admin)
    bid = book["id"]
    assert (
        http.post(
            "/v1/products/price-books", headers=admin, json={"name": "x", "currency": "eur"}
        ).status_code
        == 422
    )

    set_one = http.put(
        f"/v1/products/price-books/{bid}/prices/{first['id']}",
        headers=admin,
        json={"unit_price": "19.99"},
    )
    assert set_one.status_code == 200, set_one.text
    assert set_one.json()["unit_price"] == "19.99" and set_one.json()["currency"] == "EUR"
    # Money is never a float.
    as_float = http.put(
        f"/v1/products/price-books/{bid}/prices/{second['id']}",
        headers=admin,
        json={"unit_price": 0.1},
    )
    assert as_float.status_code == 422 and "decimal strings" in as_float.text
    negative = http.put(
        f"/v1/products/price-books/{bid}/prices/{second['id']}",
        headers=admin,
        json={"unit_price": "-1"},
    )
    assert negative.status_code == 422
    assert (
        http.put(
            f"/v1/products/price-books/{bid}/prices/999999999",
            headers=admin,
            json={"unit_price": "1"},
        ).status_code
        == 404
    )
    assert (
        http.put(
            f"/v1/products/price-books/{bid}/prices/{second['id']}",
            headers=admin,
            json={"unit_price": "0.10"},
        ).status_code
        == 200
    )

    page = http.get(f"/v1/products/price-books/{bid}/prices?limit=1", headers=admin).json()
    assert [p["product_id"] for p in page["data"]] == [first["id"]]
    rest = http.get(
        f"/v1/products/price-books/{bid}/prices?limit=1&cursor={page['next_cursor']}", headers=admin
    )
    assert [p["product_id"] for p in rest.json()["data"]] == [second["id"]]
    assert rest.json()["next_cursor"] is None

    os.environ["RAY_AUTH_MODE"] = "token"
    ray.init(address=serve_app.ray_address, namespace="nextflow-tests", log_to_driver=False)
    try:
        handle = serve.get_app_handle("product")
        me = http.get("/v1/auth/me", headers=admin).json()
        principal = Principal(
            user_id=int(me["id"]), role="admin", permissions=frozenset({"product:read"})
        )
        ids = [int(str(first["id"])), int(str(second["id"]))]
        quote = handle.quote.remote(principal, int(str(bid)), ids).result(timeout_s=30)
        assert quote.currency == "EUR"
        assert {line.product_id: line.unit_price for line in quote.lines} == {
            ids[0]: Decimal("19.99"),
            ids[1]: Decimal("0.10"),
        }
        assert quote.lines[0].tax_percent == Decimal("19")
        # A second quote is served from the cache; a price change shows at once.
        before = handle.cache_stats.remote().result(timeout_s=30)
        handle.quote.remote(principal, int(str(bid)), ids).result(timeout_s=30)
        after = handle.cache_stats.remote().result(timeout_s=30)
        assert after["hits"] > before["hits"]
        http.put(
            f"/v1/products/price-books/{bid}/prices/{ids[1]}",
            headers=admin,
            json={"unit_price": "0.25"},
        )
        again = handle.quote.remote(principal, int(str(bid)), ids).result(timeout_s=30)
        assert {line.product_id: line.unit_price for line in again.lines}[ids[1]] == Decimal("0.25")
        # An inactive product has no live price: the quote names it.
        http.patch(f"/v1/products/{ids[0]}", headers=admin, json={"is_active": False})
        with pytest.raises(Validation) as refused:
            handle.quote.remote(principal, int(str(bid)), ids).result(timeout_s=30)
        assert str(ids[0]) in str(refused.value.errors)
    finally:
        ray.shutdown()

    assert (
        http.delete(
            f"/v1/products/price-books/{bid}/prices/{second['id']}", headers=admin
        ).status_code
        == 204
    )
    assert (
        http.delete(
            f"/v1/products/price-books/{bid}/prices/{second['id']}", headers=admin
        ).status_code
        == 404
    )
    prices = http.get(f"/v1/products/{first['id']}/prices", headers=admin).json()["data"]
    assert [p["price_book_id"] for p in prices] == [bid]
