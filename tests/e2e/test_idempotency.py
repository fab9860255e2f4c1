"""`Idempotency-Key` on POST against the deployed app (gateway/idempotency.py)."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest

from cluster.settings import Settings
from shards.ids import shard_of
from tests.e2e.analytics_data import layout, on_each_server

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def _key() -> str:
    return f"test-{os.urandom(8).hex()}"


def _count(http: httpx.Client, headers: dict[str, str], name: str) -> int:
    page = http.get("/v1/customers", headers=headers, params={"name[prefix]": name, "limit": 200})
    assert page.status_code == 200, page.text
    return sum(1 for c in page.json()["data"] if c["name"] == name)


def _caller(http: httpx.Client, headers: dict[str, str]) -> str:
    return "u" + str(http.get("/v1/auth/me", headers=headers).json()["id"])


def _auth_db(settings: Settings, sql: str, *args: Any) -> None:
    async def run() -> None:
        catalog = settings.catalog_address()
        conn = await asyncpg.connect(settings.dsn_for(catalog.host, catalog.port, "auth"))
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    asyncio.run(run())


def test_a_repeat_replays_the_first_response_and_creates_nothing(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    name = f"Idem {os.urandom(4).hex()}"
    headers = {**admin, "Idempotency-Key": _key()}
    first = http.post("/v1/customers", headers=headers, json={"name": name, "tags": ["idem"]})
    assert first.status_code == 201, first.text
    again = http.post("/v1/customers", headers=headers, json={"name": name, "tags": ["idem"]})
    assert again.status_code == 201
    assert again.content == first.content
    for header in ("location", "etag", "content-type"):
        assert again.headers[header] == first.headers[header]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _count(http, admin, name) == 1

    # The same key on a different body (or endpoint) is refused, and nothing runs.
    other = http.post("/v1/customers", headers=headers, json={"name": name + " B"})
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert _count(http, admin, name + " B") == 0
    elsewhere = http.post(
        f"/v1/customers/{first.json()['id']}/contacts", headers=headers, json={"first_name": "X"}
    )
    assert elsewhere.status_code == 422

    # Without a key every POST creates.
    assert http.post("/v1/customers", headers=admin, json={"name": name}).status_code == 201
    assert _count(http, admin, name) == 2


def test_keys_are_scoped_per_caller(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    name = f"Scoped {os.urandom(4).hex()}"
    key = _key()
    mine = http.post(
        "/v1/customers", headers={**admin, "Idempotency-Key": key}, json={"name": name}
    )
    theirs = http.post(
        "/v1/customers", headers={**agent, "Idempotency-Key": key}, json={"name": name}
    )
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert "idempotent-replayed" not in theirs.headers
    assert _count(http, admin, name) == 2


def test_refusals_are_replayed_too_and_bad_keys_are_400(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    # A route whose answer the pipeline stores (a queue is not one shard transaction):
    # the same request gets the same refusal.
    headers = {**admin, "Idempotency-Key": _key()}
    first = http.post("/v1/support/queues", headers=headers, json={"name": ""})
    assert first.status_code == 422
    again = http.post("/v1/support/queues", headers=headers, json={"name": ""})
    assert again.status_code == 422 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["errors"] == first.json()["errors"]
    # A create that keeps its key with its record keeps nothing for a refusal: the
    # repeat is checked again (and refused again); a corrected body then runs.
    headers = {**admin, "Idempotency-Key": _key()}
    first = http.post("/v1/customers", headers=headers, json={"name": ""})
    again = http.post("/v1/customers", headers=headers, json={"name": ""})
    assert first.status_code == again.status_code == 422
    assert "idempotent-replayed" not in again.headers
    assert again.json()["errors"] == first.json()["errors"]
    name = f"Corrected {os.urandom(4).hex()}"
    fixed = http.post("/v1/customers", headers=headers, json={"name": name})
    assert fixed.status_code == 201, fixed.text
    bad = http.post(
        "/v1/customers", headers={**admin, "Idempotency-Key": "has space"}, json={"name": "Bad Key"}
    )
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
    assert _count(http, admin, "Bad Key") == 0


def test_a_key_in_flight_is_409_and_an_abandoned_claim_is_taken_over(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    """On a route whose answer the pipeline stores in the `auth` database."""
    caller, key = _caller(http, admin), _key()
    body = {"name": f"Flight {os.urandom(4).hex()}"}
    # Another request with this key is running (its claim's lease has not run out).
    _auth_db(
        serve_app,
        "INSERT INTO idempotency_keys (caller, key, claim, locked_until)"
        " VALUES ($1, $2, gen_random_uuid(), now() + interval '1 minute')",
        caller,
        key,
    )
    headers = {**admin, "Idempotency-Key": key}
    busy = http.post("/v1/support/queues", headers=headers, json=body)
    assert busy.status_code == 409 and busy.headers["content-type"] == PROBLEM
    assert busy.json()["type"].endswith("/idempotency-in-flight")
    assert int(busy.headers["retry-after"]) >= 1
    # Its gateway died: once the lease ran out a retry runs the request.
    _auth_db(
        serve_app,
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 second'"
        " WHERE caller = $1 AND key = $2",
        caller,
        key,
    )
    taken = http.post("/v1/support/queues", headers=headers, json=body)
    assert taken.status_code == 201, taken.text
    assert "idempotent-replayed" not in taken.headers


def test_concurrent_repeats_make_one_record_and_wait_for_it(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    """The key is inserted in the create's own transaction: repeats sent at once wait
    on it and answer with the one customer made (none is refused as in flight)."""
    name = f"Race {os.urandom(4).hex()}"
    headers = {**admin, "Idempotency-Key": _key()}
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(
                lambda _: http.post("/v1/customers", headers=headers, json={"name": name}),
                range(6),
            )
        )
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert _count(http, admin, name) == 1


def test_the_key_lives_with_its_record(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    """A customer's key is on the customer's logical shard, in the customer database,
    nowhere else; a create that made nothing (its customer is gone) keeps no key."""
    caller, key = _caller(http, admin), _key()
    made = http.post(
        "/v1/customers", headers={**admin, "Idempotency-Key": key}, json={"name": "Home"}
    )
    assert made.status_code == 201, made.text
    customer_id = int(made.json()["id"])

    async def find(conn: asyncpg.Connection, server: str) -> list[tuple[str, int]]:
        rows = await conn.fetch(
            "SELECT id FROM idempotency_keys WHERE caller = $1 AND key = $2", caller, key
        )
        return [(server, shard_of(int(r["id"]))) for r in rows]

    lay = asyncio.run(layout(serve_app))
    found = [hit for hits in asyncio.run(on_each_server(serve_app, lay, "customer", find))
             for hit in hits]  # fmt: skip
    home = shard_of(customer_id)
    assert found == [(lay.shard_server[home], home)]

    gone = http.post("/v1/customers", headers=admin, json={"name": "Gone"}).json()
    token = {}
    deleted = http.delete(f"/v1/customers/{gone['id']}", headers=admin)
    assert deleted.status_code == 204
    if "nextflow-read-after" in deleted.headers:
        token = {"NextFlow-Read-After": deleted.headers["nextflow-read-after"]}
    contact_key = _key()
    refused = http.post(
        f"/v1/customers/{gone['id']}/contacts",
        headers={**admin, **token, "Idempotency-Key": contact_key},
        json={"first_name": "Nobody"},
    )
    assert refused.status_code == 404, refused.text
    # Nothing was kept for that key: used on another request it runs, not 422.
    elsewhere = http.post(
        f"/v1/customers/{customer_id}/contacts",
        headers={**admin, "Idempotency-Key": contact_key},
        json={"first_name": "Somebody"},
    )
    assert elsewhere.status_code == 201, elsewhere.text


def test_every_create_route_takes_part(http: httpx.Client, admin: dict[str, str]) -> None:
    """Keyed POSTs of other services replay too (the gateway does it for every route
    that authenticates and does not keep the key itself): a product and a queue; and
    the deals and leads that keep it with their record."""
    for path, body in (
        ("/v1/products", {"sku": f"SKU-{os.urandom(4).hex()}", "name": "Idem product"}),
        ("/v1/support/queues", {"name": f"Idem queue {os.urandom(4).hex()}"}),
    ):
        headers = {**admin, "Idempotency-Key": _key()}
        first = http.post(path, headers=headers, json=body)
        assert first.status_code == 201, (path, first.text)
        again = http.post(path, headers=headers, json=body)
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]

    # Deals and leads keep the key with their record: the same answer for a repeat, a
    # 422 for the same key on another body.
    made = http.post("/v1/customers", headers=admin, json={"name": "Idem deals"})
    assert made.status_code == 201, made.text
    token = {"NextFlow-Read-After": made.headers["nextflow-read-after"]}
    for path, body, change in (
        ("/v1/sales/deals",
         {"customer_id": made.json()["id"], "name": "Idem deal",
          "amount": {"amount": "10.00", "currency": "USD"}}, {"name": "Other"}),
        ("/v1/marketing/leads", {"email": f"idem-{os.urandom(4).hex()}@example.com"},
         {"title": "Other"}),
        ("/v1/marketing/leads", {"company": f"Idem {os.urandom(4).hex()}"}, {"title": "Other"}),
    ):  # fmt: skip
        headers = {**admin, **token, "Idempotency-Key": _key()}
        first = http.post(path, headers=headers, json=body)
        assert first.status_code == 201, (path, first.text)
        again = http.post(path, headers=headers, json=body)
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        other = http.post(path, headers=headers, json={**body, **change})
        assert other.status_code == 422, (path, other.text)
        assert other.json()["type"].endswith("/idempotency-key-reused")
