"""A shard primary that dies takes down only writes to its own shards, with 503s a
client can retry; reads go on from its replica; the service recovers by itself when
the primary is back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shards import ids

pytestmark = pytest.mark.e2e
NEXTFLOW = str(Path(sys.executable).with_name("nextflow"))


def shards(*args: str) -> str:
    """`nextflow shards ARGS...`, which must succeed; its output."""
    done = subprocess.run(
        [NEXTFLOW, "shards", *args],
        text=True, capture_output=True, timeout=180, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def watchdog(action: str) -> str:
    """`nextflow shards watchdog ACTION`; its output."""
    return shards("watchdog", action)


@pytest.fixture(scope="module", autouse=True)
def no_automatic_failover(serve_app: object) -> Iterator[None]:
    """These tests are about a primary away with nobody failing it over: the
    watchdog is paused, as an operator pauses it for maintenance."""
    assert "automatic failover: paused" in watchdog("pause")
    try:
        yield
    finally:
        watchdog("resume")


def _standby_of(stack: Any, server: str) -> Any:
    """The node of `server` that is not its primary now (earlier tests fail over)."""
    (group,) = [g for g in stack.server_nodes(stack.read_catalog()) if g.server == server]
    (standby,) = [n for n in group.nodes if n is not group.primary]
    return standby


async def _has_customer(dsn: str, customer_id: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM customers WHERE id = $1", customer_id))
    finally:
        await conn.close()


def _until_standbys_usable(http: httpx.Client) -> None:
    """After an earlier test's outage or failover a standby streams again only after
    its WAL receiver's retry (or its rebuild), and its manager notices at its next
    poll: `/ready` says "degraded" until every server has a usable standby."""
    deadline = time.monotonic() + 90
    while http.get("/ready").json().get("status") != "ready":
        assert time.monotonic() < deadline, http.get("/ready").text
        time.sleep(0.5)


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
    _until_standbys_usable(http)
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


def test_reads_go_on_from_the_standby_while_the_primary_is_away(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str], stack: object
) -> None:
    """Issue 28: with a shard primary away, reads of its shards stopped after ~16 s
    (the manager's view of the standby's lag ran out with the primary's samples) and
    every cross-shard list page was a 503 until it came back. Now they go on from the
    standby for as long as the primary is away; writes to its shards stay 503."""
    made = None
    for i in range(40):
        made = http.post("/v1/customers", headers=admin, json={"name": f"Away {i}"}).json()
        if ids.shard_of(int(made["id"])) >= 5:  # on shard2
            break
    assert made is not None and ids.shard_of(int(made["id"])) >= 5
    (shard2,) = [s for s in stack.postgres_servers() if s.name == "shard2"]  # type: ignore[attr-defined]
    _until_standbys_usable(http)
    # Reads without a position may lag the primary by up to `max_replica_lag_s`: wait
    # until the standby has the new customer itself.
    standby = _standby_of(stack, "shard2")
    settings = stack.app_settings()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while not asyncio.run(_has_customer(settings.dsn_for(standby.host, standby.port, "customer"),
                                        int(made["id"]))):  # fmt: skip
        assert time.monotonic() < deadline, "the standby never replayed the create"
        time.sleep(0.5)
    shard2.stop()
    answers: list[tuple[float, int, int]] = []
    began = time.monotonic()
    try:
        while time.monotonic() - began < 30:
            # The viewer wrote nothing: no position of its own to wait for.
            one = http.get(f"/v1/customers/{made['id']}", headers=viewer)
            page = http.get("/v1/customers", headers=viewer, params={"limit": 20})
            answers.append((time.monotonic() - began, one.status_code, page.status_code))
            time.sleep(1)
        write = http.patch(f"/v1/customers/{made['id']}", headers=admin, json={"name": "w"})
        assert write.status_code == 503, write.text
    finally:
        shard2.start()
    failed = [a for a in answers if a[1:] != (200, 200)]
    assert not failed, failed
    assert answers[-1][0] >= 25
    deadline = time.monotonic() + 60
    while http.patch(f"/v1/customers/{made['id']}", headers=admin,
                     json={"name": "back"}).status_code != 200:  # fmt: skip
        assert time.monotonic() < deadline, "writes did not come back"
        time.sleep(0.5)


def test_a_server_without_a_usable_standby_is_degraded_not_down(
    http: httpx.Client, stack: object
) -> None:
    """Issue 28: `/ready` said `ready` while a shard server had no standby. Now it is
    200 "degraded", naming the server (the API serves; a lost primary would take its
    shards with it), and `ready` again once the standby streams."""
    standby = _standby_of(stack, "shard2")
    _until_standbys_usable(http)
    standby.stop()
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = http.get("/ready")
            assert ready.status_code == 200, ready.text
            if ready.json()["status"] == "degraded" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        body = ready.json()
        assert body["status"] == "degraded", body
        assert body["checks"]["standbys"].startswith("degraded: shard2: no usable standby")
        assert "shard1" not in body["checks"]["standbys"]
    finally:
        standby.start()
    deadline = time.monotonic() + 60
    while http.get("/ready").json()["status"] != "ready":
        assert time.monotonic() < deadline, http.get("/ready").text
        time.sleep(0.5)
