"""Read-your-writes over HTTP: a write returns a `NextFlow-Read-After` token; a read
that sends it back sees the write even while the replica is behind."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from cluster.settings import Settings
from shards import consistency, ids
from tests.e2e.conftest import set_replay

pytestmark = pytest.mark.e2e
TOKEN = consistency.HEADER


def test_token_makes_reads_see_the_write(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str]
) -> None:
    s = serve_app
    created = http.post("/v1/customers", headers=admin, json={"name": "Before"})
    assert created.status_code == 201
    first = created.headers[TOKEN]
    customer = created.json()
    server_index = 0 if ids.shard_of(int(customer["id"])) < 5 else 1
    primary_port = s.shard_base_port + server_index
    url = f"/v1/customers/{customer['id']}"

    asyncio.run(set_replay(s, primary_port, paused=True))
    try:
        updated = http.patch(url, headers={**admin, TOKEN: first}, json={"name": "After"})
        assert updated.status_code == 200
        second = updated.headers[TOKEN]
        # The response's token covers both writes (merged with the one sent).
        merged = consistency.decode(second)
        assert merged == consistency.merge(consistency.decode(first), merged)
        for _ in range(5):
            seen = http.get(url, headers={**admin, TOKEN: second})
            assert seen.status_code == 200 and seen.json()["name"] == "After"
    finally:
        asyncio.run(set_replay(s, primary_port, paused=False))

    assert TOKEN not in http.get(url, headers=admin).headers  # reads issue no token
    bad = http.get(url, headers={**admin, TOKEN: "not-a-token"})
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"


def test_a_caller_sees_its_own_writes_without_sending_the_token(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str]
) -> None:
    s = serve_app
    customer = http.post("/v1/customers", headers=admin, json={"name": "Plain client"}).json()
    server_index = 0 if ids.shard_of(int(customer["id"])) < 5 else 1
    primary_port = s.shard_base_port + server_index
    url = f"/v1/customers/{customer['id']}"

    asyncio.run(set_replay(s, primary_port, paused=True))
    try:
        # A client that ignores NextFlow-Read-After: the gateway remembers for it.
        assert http.patch(url, headers=admin, json={"name": "Changed"}).status_code == 200
        for _ in range(5):
            assert http.get(url, headers=admin).json()["name"] == "Changed"
        assert http.delete(url, headers=admin).status_code == 204
        assert http.get(url, headers=admin).status_code == 404
    finally:
        asyncio.run(set_replay(s, primary_port, paused=False))
