"""A shard primary killed under the running app: reads go on from its replica, the
failover watchdog promotes the replica, and writes through the API resume without
anyone running a command or restarting anything. The stack is then put back as it
was with `nextflow shards failover --force`."""

from __future__ import annotations

import os
import signal
import time
from typing import cast

import httpx
import pytest

from cluster.settings import Settings
from cluster.stack import LocalStack
from shards import ids
from tests.e2e.test_faults import Writers, _all_tagged, _wait, explain
from tests.e2e.test_shard_outage import _until_standbys_usable, shards, watchdog

pytestmark = pytest.mark.e2e


def _until_ok(call, timeout: float = 30) -> httpx.Response:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        response: httpx.Response = call()
        if response.status_code < 500 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_dead_primary_is_failed_over_by_the_watchdog(
    serve_app: Settings, stack: object, http: httpx.Client, admin: dict[str, str]
) -> None:
    """Issue 28: a shard primary killed (kill -9) under a keyed write load, and nobody
    runs a command: the watchdog fails it over, writes to its shards resume within
    15 s, every acknowledged write is there exactly once, and the lost node is rebuilt
    as the new standby, streaming, within a minute."""
    local = cast(LocalStack, stack)
    on_shard2 = None
    for i in range(60):
        made = http.post("/v1/customers", headers=admin, json={"name": f"Failover {i}"}).json()
        if ids.shard_of(int(made["id"])) >= 5:  # shards 5-9 live on shard2
            on_shard2 = made
            break
    assert on_shard2 is not None
    url = f"/v1/customers/{on_shard2['id']}"
    (primary,) = [n for n in local.postgres_servers() if n.name == "shard2"]
    _until_standbys_usable(http)
    assert "shard2 " in watchdog("status")
    writers = Writers(serve_app.serve_url, admin, "fail" + os.urandom(3).hex())
    try:
        with writers:  # a concurrent create load, keyed and retried, across the fault
            time.sleep(5)
            pid = int((primary.pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            # Reads are served by the replica while the primary is dead.
            assert _until_ok(lambda: http.get(url, headers=admin)).status_code == 200
            resumed = _until_ok(
                lambda: http.patch(url, headers=admin, json={"name": "After"}), timeout=60
            )
            resumed_s = time.monotonic() - killed_at
            print(f"\nwrites resumed {resumed_s:.1f}s after the kill, with no command")
            assert resumed.status_code == 200, resumed.text
            assert resumed_s <= 15, resumed_s
            assert http.get(url, headers=admin).json()["name"] == "After"
            after = time.monotonic()
            try:
                _wait(lambda: on_shard2_since(writers, after), 60, "keyed writes on shard2")
            except AssertionError:
                raise AssertionError((writers.unexpected[:3], writers.statuses[-20:])) from None
        _stored_once(http, admin, writers, killed_at)
        # The lost node is the new standby, streaming, within a minute of the kill.
        while True:
            statuses = {n.node: n for n in local.replication_status()[1] if n.server == "shard2"}
            rebuilt = statuses.get("shard2")
            if rebuilt is not None and rebuilt.role == "standby" and rebuilt.healthy:
                break
            assert time.monotonic() - killed_at < 60, statuses
            time.sleep(1)
        print(f"standby streaming {time.monotonic() - killed_at:.1f}s after the kill")
        status = watchdog("status")
        assert "shard2: silent" in status and "shard2 -> shard2-replica" in status, status
    finally:
        # Put the stack back as it was, by hand (the command the watchdog replaces):
        # paused, as for any maintenance; fail back on purpose, rebuild, resume.
        watchdog("pause")
        local.start_databases()
        shards("failover", "shard2", "--force")
        local.start_databases()
        watchdog("resume")
    back = _until_ok(lambda: http.patch(url, headers=admin, json={"name": "Back"}))
    assert back.status_code == 200


def on_shard2_since(writers: Writers, t: float) -> bool:
    return any(
        ids.shard_of(int(i)) >= 5 and writers.acknowledged_at.get(n, 0.0) > t
        for n, i in list(writers.acknowledged.items())
    )


def _stored_once(
    http: httpx.Client, admin: dict[str, str], writers: Writers, killed_at: float
) -> None:
    """Nothing stored twice; every create acknowledged before the primary died (with a
    margin for asynchronous replication: a commit acknowledged in its last moments may
    not have reached the standby, docs/reliability.md) or after is there, once, with
    the id it was acknowledged with; no request hung past the request timeout."""
    assert not writers.unexpected, explain(writers.unexpected)
    assert writers.slowest_s < 30
    stored = _all_tagged(http, admin, writers.tag)
    names = [c["name"] for c in stored]
    assert len(names) == len(set(names)), "a write was applied twice"
    by_name = {c["name"]: c["id"] for c in stored}
    at_risk = [n for n, t in writers.acknowledged_at.items() if killed_at - 1 < t < killed_at]
    lost = [n for n in at_risk if n not in by_name]
    print(f"\n{len(writers.acknowledged)} acknowledged, {len(lost)} of {len(at_risk)} "
          "acknowledged in the second before the kill lost (asynchronous replication)")  # fmt: skip
    for name, customer_id in writers.acknowledged.items():
        if name not in at_risk:
            assert by_name.get(name) == customer_id, name
    assert 503 in [s for _, s in writers.statuses]
    assert len(writers.acknowledged) > 10
