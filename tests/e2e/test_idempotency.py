"""`Idempotency-Key` on POST against the deployed app (gateway/idempotency.py)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import httpx
import pytest

from cluster.settings import Settings

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
    headers = {**admin, "Idempotency-Key": _key()}
    first = http.post("/v1/customers", headers=headers, json={"name": ""})
    assert first.status_code == 422
    again = http.post("/v1/customers", headers=headers, json={"name": ""})
    assert again.status_code == 422 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["errors"] == first.json()["errors"]
    bad = http.post(
        "/v1/customers", headers={**admin, "Idempotency-Key": "has space"}, json={"name": "Bad Key"}
    )
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
    assert _count(http, admin, "Bad Key") == 0


def test_a_key_in_flight_is_409_and_an_abandoned_claim_is_taken_over(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    caller, key, name = _caller(http, admin), _key(), f"Flight {os.urandom(4).hex()}"
    # Another request with this key is running (its claim's lease has not run out).
    _auth_db(
        serve_app,
        "INSERT INTO idempotency_keys (caller, key, claim, locked_until)"
        " VALUES ($1, $2, gen_random_uuid(), now() + interval '1 minute')",
        caller,
        key,
    )
    headers = {**admin, "Idempotency-Key": key}
    busy = http.post("/v1/customers", headers=headers, json={"name": name})
    assert busy.status_code == 409 and busy.headers["content-type"] == PROBLEM
    assert busy.json()["type"].endswith("/idempotency-in-flight")
    assert int(busy.headers["retry-after"]) >= 1
    assert _count(http, admin, name) == 0
    # Its gateway died: once the lease ran out a retry runs the request.
    _auth_db(
        serve_app,
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 second'"
        " WHERE caller = $1 AND key = $2",
        caller,
        key,
    )
    taken = http.post("/v1/customers", headers=headers, json={"name": name})
    assert taken.status_code == 201, taken.text
    assert _count(http, admin, name) == 1


def test_a_lost_response_still_makes_one_record(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    """The gateway wrote the customer and died before storing the response: the claim
    is left unfinished. The retry runs the create again, and the key (also the
    customer's source key) makes it find the first customer instead of a second."""
    caller, key, name = _caller(http, admin), _key(), f"Lost {os.urandom(4).hex()}"
    headers = {**admin, "Idempotency-Key": key}
    first = http.post("/v1/customers", headers=headers, json={"name": name})
    assert first.status_code == 201
    _auth_db(
        serve_app,
        "UPDATE idempotency_keys SET status = NULL, body = NULL, headers = NULL,"
        " locked_until = now() - interval '1 second' WHERE caller = $1 AND key = $2",
        caller,
        key,
    )
    retried = http.post("/v1/customers", headers=headers, json={"name": name})
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers  # it really ran again
    assert retried.json()["id"] == first.json()["id"]
    assert _count(http, admin, name) == 1

    contact_key = _key()
    path = f"/v1/customers/{first.json()['id']}/contacts"
    contact = {"first_name": "Once"}
    made = http.post(path, headers={**admin, "Idempotency-Key": contact_key}, json=contact)
    assert made.status_code == 201, made.text
    _auth_db(
        serve_app,
        "DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2",
        caller,
        contact_key,
    )
    again = http.post(path, headers={**admin, "Idempotency-Key": contact_key}, json=contact)
    assert again.status_code == 201 and again.json()["id"] == made.json()["id"]
    listed = http.get(path, headers=admin).json()["data"]
    assert [c["first_name"] for c in listed] == ["Once"]


def test_every_create_route_takes_part(http: httpx.Client, admin: dict[str, str]) -> None:
    """Keyed POSTs of other services replay too (the gateway does it for every route
    that authenticates): a pipeline and a product."""
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
