"""A shard primary that dies takes down only writes to its own shards, with 503s a
client can retry; reads go on from its replica; the service recovers by itself when
the primary is back."""

from __future__ import annotations

import time

import httpx
import pytest

from shards import ids

pytestmark = pytest.mark.e2e


def test_one_shard_server_down(http: httpx.Client, admin: dict[str, str], stack: object) -> None:
    by_server: dict[str, str] = {}
    for i in range(40):
        made = http.post("/v1/customers", headers=admin, json={"name": f"Outage {i}"}).json()
        server = "shard1" if ids.shard_of(int(made["id"])) < 5 else "shard2"
        by_server.setdefault(server, made["id"])
        if len(by_server) == 2:
            break
    assert set(by_server) == {"shard1", "shard2"}

    (shard2,) = [s for s in stack.postgres_servers() if s.name == "shard2"]  # type: ignore[attr-defined]
    shard2.stop()
    try:
        read = http.get(f"/v1/customers/{by_server['shard2']}", headers=admin)
        assert read.status_code == 200  # served by shard2's streaming replica
        down = http.patch(f"/v1/customers/{by_server['shard2']}", headers=admin, json={"name": "x"})
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert "Retry-After" in down.headers
        assert str(shard2.port) not in down.text and "shard2" not in down.text  # no internals
        up = http.patch(f"/v1/customers/{by_server['shard1']}", headers=admin, json={"name": "y"})
        assert up.status_code == 200
        ready = http.get("/ready")
        assert ready.status_code == 503
        assert http.get("/health").status_code == 200
    finally:
        shard2.start()

    deadline = time.monotonic() + 60
    while True:
        back = http.patch(f"/v1/customers/{by_server['shard2']}", headers=admin, json={"name": "z"})
        if back.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert back.status_code == 200
    assert http.get("/ready").status_code == 200
