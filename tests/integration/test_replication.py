"""Every PostgreSQL server of the session's stack is a primary with a streaming
standby, and `nextflow shards failover` promotes the standby of a dead primary.

The failover test kills shard2's primary, fails over, rebuilds the old node as a
standby, then fails back (`--force`) and rebuilds again, so the stack ends as it
began (other tests address shard servers by their configured ports)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest

from cluster.postgres import PostgresServer
from cluster.procs import StackError, pid_alive
from cluster.replication import ServerNodes
from cluster.settings import Settings
from cluster.stack import LocalStack

pytestmark = pytest.mark.integration
NEXTFLOW = str(Path(sys.executable).with_name("nextflow"))
_PROBE_TABLE = (
    "CREATE TABLE IF NOT EXISTS replication_probe"
    " (token text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEXTFLOW, *args], text=True, capture_output=True, timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def _sql(s: Settings, node: PostgresServer, query: str, *args: Any, db: str = "postgres") -> Any:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(s.dsn_for(node.host, node.port, db), timeout=5)
        try:
            return cast(list[asyncpg.Record], await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def _in_recovery(s: Settings, node: PostgresServer) -> bool:
    return bool(_sql(s, node, "SELECT pg_is_in_recovery() AS r")[0]["r"])


def _write_and_see_it_streamed(s: Settings, group: ServerNodes, timeout: float = 10) -> str:
    """Insert a row on the primary; return its token once the standby has it."""
    token = uuid.uuid4().hex
    _sql(s, group.primary, _PROBE_TABLE)
    _sql(s, group.primary, "INSERT INTO replication_probe (token) VALUES ($1)", token)
    deadline = time.monotonic() + timeout
    query = "SELECT to_regclass('replication_probe') IS NOT NULL AS t"
    while True:
        if _sql(s, group.standby, query)[0]["t"] and _sql(
            s, group.standby, "SELECT 1 FROM replication_probe WHERE token = $1", token
        ):
            return token
        assert time.monotonic() < deadline, f"{group.standby.name} did not get the row"
        time.sleep(0.1)


def _catalog_snapshot(s: Settings) -> dict[str, list[tuple[Any, ...]]]:
    catalog = PostgresServer("catalog", Path("/nonexistent"), s.host, s.catalog_port, "", "")
    queries = {
        "servers": "SELECT name, host, port FROM shard_servers ORDER BY name",
        "replicas": "SELECT name, server, host, port FROM shard_replicas ORDER BY name",
        "map": "SELECT shard_key, shard_server, version FROM shard_map ORDER BY shard_key",
    }
    return {
        key: [tuple(r.values()) for r in _sql(s, catalog, q, db="catalog")]
        for key, q in queries.items()
    }


def _group(local: LocalStack, server: str) -> ServerNodes:
    (group,) = [g for g in local.server_nodes(local.read_catalog()) if g.server == server]
    return group


def test_every_server_streams_to_its_standby(stack: object, stack_settings: Settings) -> None:
    local = cast(LocalStack, stack)
    s = stack_settings
    view = local.read_catalog()
    assert view is not None
    groups = local.server_nodes(view)
    assert [g.server for g in groups] == ["catalog", "shard1", "shard2"]
    for group in groups:
        assert group.replica.port == group.home.port + s.replica_port_offset
        assert not _in_recovery(s, group.primary)
        assert _in_recovery(s, group.standby), f"{group.standby.name} is not a standby"
        assert group.standby.is_standby()
        registered = [(r.name, r.host, r.port) for r in view.replicas.get(group.server, [])]
        assert registered == [(group.standby.name, group.standby.host, group.standby.port)]
        _write_and_see_it_streamed(s, group)
        (row,) = _sql(
            s, group.primary, "SELECT application_name, state, sync_state FROM pg_stat_replication"
        )
        assert (row["application_name"], row["state"]) == (group.standby.name, "streaming")
        assert row["sync_state"] == "async"  # the default: NEXTFLOW_SYNCHRONOUS_REPLICAS off

    _, nodes = local.replication_status(view)
    assert [(n.node, n.state) for n in nodes if not n.healthy] == []
    assert {n.node: n.role for n in nodes}["shard1-replica"] == "standby"


def test_failover_refusals_change_nothing(stack: object, stack_settings: Settings) -> None:
    before = _catalog_snapshot(stack_settings)
    for args, message in [
        (("shard2",), "is healthy"),
        (("catalog",), "NEXTFLOW_CATALOG_PORT"),
        (("shard9",), "unknown server 'shard9'"),
    ]:
        result = _cli("shards", "failover", *args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    assert _catalog_snapshot(stack_settings) == before
    assert all(node.accepts_connections() for node in cast(LocalStack, stack).postgres_servers())


def _process_tree(pid: int) -> list[int]:
    """`pid` and every process it started (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rfind(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        found.append(queue.pop())
        queue.extend(children.get(found[-1], []))
    return found


def test_failover_of_a_hung_primary_and_rebuild(stack: object, stack_settings: Settings) -> None:
    """A primary that hangs (every process of it stopped) is fenced by killing it: the
    failover does not wait for a clean stop that would never come."""
    local = cast(LocalStack, stack)
    s = stack_settings
    group = _group(local, "shard2")
    old, new = group.primary, group.standby
    assert (old.name, new.name) == ("shard2", "shard2-replica")
    versions = {k: v for k, server, v in _catalog_snapshot(s)["map"] if server == "shard2"}
    streamed = _write_and_see_it_streamed(s, group)

    hung = _process_tree(int((old.pgdata / "postmaster.pid").read_text().split()[0]))
    assert len(hung) > 3  # the postmaster and its background processes
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 15
    while old.accepts_connections():
        assert time.monotonic() < deadline
        time.sleep(0.1)

    began = time.monotonic()
    result = _cli("shards", "failover", "shard2")
    took = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed over from shard2 to shard2-replica" in result.stdout
    assert "shard2: killed (hung)" in result.stdout
    assert not [p for p in hung if pid_alive(p)], "a process of the hung primary survived"
    assert took < 30, took
    print(f"failover CLI: {took:.1f}s\n{result.stdout}")

    # The promoted node takes writes and has what had streamed before the kill.
    assert not _in_recovery(s, new)
    _sql(s, new, "INSERT INTO replication_probe (token) VALUES ($1)", uuid.uuid4().hex)
    assert _sql(s, new, "SELECT 1 FROM replication_probe WHERE token = $1", streamed)
    after = _catalog_snapshot(s)
    assert ("shard2", new.host, new.port) in after["servers"]
    assert [r for r in after["replicas"] if r[1] == "shard2"] == []
    assert {k: v for k, server, v in after["map"] if server == "shard2"} == {
        k: v + 1 for k, v in versions.items()
    }
    # The old primary is fenced: it can no longer be started as a primary.
    assert old.is_demoted()
    with pytest.raises(StackError, match="demoted"):
        old.start()

    # `up`'s database step rebuilds it as a standby of the new primary.
    began = time.monotonic()
    local.start_databases()
    print(f"rebuild as standby: {time.monotonic() - began:.1f}s")
    group = _group(local, "shard2")
    assert (group.primary.name, group.standby.name) == ("shard2-replica", "shard2")
    assert _in_recovery(s, old)
    assert not old.is_demoted()
    _write_and_see_it_streamed(s, group)
    assert [r for r in _catalog_snapshot(s)["replicas"] if r[1] == "shard2"] == [
        ("shard2", "shard2", old.host, old.port)
    ]
    assert list(old.data_path.parent.glob("shard2.old-*")), "the old data was kept aside"

    # Fail back on purpose (--force: the current primary is healthy), then rebuild, so
    # the stack ends in its configured layout.
    result = _cli("shards", "failover", "shard2", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    local.start_databases()
    group = _group(local, "shard2")
    assert (group.primary.name, group.standby.name) == ("shard2", "shard2-replica")
    assert ("shard2", old.host, old.port) in _catalog_snapshot(s)["servers"]
    _write_and_see_it_streamed(s, group)

    status = _cli("shards", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "shard2-replica" in status.stdout and "streaming" in status.stdout
