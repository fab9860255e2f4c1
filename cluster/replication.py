"""Primaries, standbys and failover for the local stack's PostgreSQL servers.

Every server (the catalog and each shard server) has two local nodes: its *home*
node (the address in settings) and its *replica* node (port + replica_port_offset,
folder `pg/<server>-replica`). Which of the two is the primary is whatever the
catalog's `shard_servers` says (a failover moves it); the other one is the streaming
standby, registered in `shard_replicas`. The catalog server itself always runs on
its configured address (NEXTFLOW_CATALOG_PORT): its failover is a manual procedure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from cluster.postgres import REPLICATION_USER, PostgresServer
from cluster.procs import StackError

CATALOG_SERVER = "catalog"
_CONNECT_TIMEOUT = 5.0
_COMMAND_TIMEOUT = 15.0


@dataclass(frozen=True)
class ServerNodes:
    """One logical server's two local nodes and which one is its primary now."""

    server: str
    home: PostgresServer
    replica: PostgresServer
    primary: PostgresServer

    @property
    def standby(self) -> PostgresServer:
        return self.replica if self.primary is self.home else self.home

    @property
    def nodes(self) -> tuple[PostgresServer, PostgresServer]:
        return (self.home, self.replica)

    def node_at(self, host: str, port: int) -> PostgresServer | None:
        for node in self.nodes:
            if (node.host, node.port) == (host, port):
                return node
        return None


@dataclass(frozen=True)
class RegisteredReplica:
    name: str
    server: str
    host: str
    port: int


@dataclass(frozen=True)
class ShardMapRow:
    shard_key: str
    server: str
    version: int


@dataclass(frozen=True)
class CatalogView:
    """The catalog's idea of the topology: current primaries, replicas, the shard map."""

    primaries: dict[str, tuple[str, int]]
    replicas: dict[str, list[RegisteredReplica]]
    shard_map: list[ShardMapRow] = field(default_factory=list)


@dataclass(frozen=True)
class StandbyLag:
    application_name: str
    state: str
    lag_bytes: int | None
    replay_lag_s: float | None


@dataclass(frozen=True)
class NodeProbe:
    """What one running node says about itself."""

    in_recovery: bool
    receiver_status: str | None = None  # a standby's WAL receiver ("streaming", ...)
    replay_lsn: str | None = None
    standbys: tuple[StandbyLag, ...] = ()  # a primary's pg_stat_replication


@dataclass(frozen=True)
class NodeStatus:
    server: str
    node: str
    address: str
    role: str  # what it should be: "primary" or "standby" (per the catalog)
    state: str  # what it is: "primary", "standby", "stopped", ...
    healthy: bool
    detail: str = ""
    lag_bytes: int | None = None
    replay_lag_s: float | None = None


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn, timeout=_CONNECT_TIMEOUT, command_timeout=_COMMAND_TIMEOUT
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StackError(f"cannot connect to PostgreSQL: {exc}") from exc
    return conn


async def read_catalog(dsn: str) -> CatalogView | None:
    """The catalog's topology; None while the catalog database or its tables do not
    exist yet (first `up`). A catalog that does not answer is an error."""
    try:
        conn = await asyncpg.connect(
            dsn, timeout=_CONNECT_TIMEOUT, command_timeout=_COMMAND_TIMEOUT
        )
    except asyncpg.InvalidCatalogNameError:
        return None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StackError(f"catalog: cannot connect: {exc}") from exc
    try:
        present = await conn.fetchval(
            "SELECT to_regclass('shard_servers') IS NOT NULL"
            " AND to_regclass('shard_replicas') IS NOT NULL"
        )
        if not present:
            return None
        servers = await conn.fetch("SELECT name, host, port FROM shard_servers")
        replica_rows = await conn.fetch(
            "SELECT name, server, host, port FROM shard_replicas ORDER BY name"
        )
        map_rows = await conn.fetch(
            "SELECT shard_key, shard_server, version FROM shard_map"
            " ORDER BY length(shard_key), shard_key"
        )
    finally:
        await conn.close()
    replicas: dict[str, list[RegisteredReplica]] = {}
    for r in replica_rows:
        replicas.setdefault(r["server"], []).append(
            RegisteredReplica(r["name"], r["server"], r["host"], r["port"])
        )
    return CatalogView(
        primaries={r["name"]: (r["host"], r["port"]) for r in servers},
        replicas=replicas,
        shard_map=[ShardMapRow(r["shard_key"], r["shard_server"], r["version"]) for r in map_rows],
    )


async def ensure_replication_role(dsn: str, password: str) -> bool:
    """Create the `replicator` role on a primary unless it exists; True when created."""
    conn = await connect(dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", REPLICATION_USER):
            return False
        statement = await conn.fetchval(
            "SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN PASSWORD %L',"
            " $1::text, $2::text)",
            REPLICATION_USER,
            password,
        )
        # Local commit: with synchronous replicas on, no standby exists yet to wait for.
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = local")
            await conn.execute(statement)
        return True
    except asyncpg.DuplicateObjectError:  # a concurrent run created it
        return False
    finally:
        await conn.close()


async def drop_idle_slot(dsn: str, slot: str) -> bool:
    """Drop `slot` on a primary if it exists and nothing streams from it (a standby
    being rebuilt); True when dropped."""
    conn = await connect(dsn)
    try:
        dropped = await conn.fetchval(
            "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots"
            " WHERE slot_name = $1 AND NOT active",
            slot,
        )
        return bool(dropped)
    finally:
        await conn.close()


async def register_standby(dsn: str, server: str, node: PostgresServer) -> None:
    """Make `node` the one registered replica of `server` in `shard_replicas`."""
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = local")
            await conn.execute(
                "DELETE FROM shard_replicas WHERE server = $1 AND name <> $2", server, node.name
            )
            await conn.execute(
                "INSERT INTO shard_replicas (name, server, host, port) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (name) DO UPDATE"
                " SET server = excluded.server, host = excluded.host, port = excluded.port",
                node.name,
                server,
                node.host,
                node.port,
            )
    finally:
        await conn.close()


async def register_server(
    dsn: str, server: str, primary: PostgresServer, standby: PostgresServer
) -> None:
    """Register a new shard server and its standby in one catalog transaction."""
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = local")
            await conn.execute(
                "INSERT INTO shard_servers (name, host, port) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO NOTHING",
                server,
                primary.host,
                primary.port,
            )
            await conn.execute(
                "INSERT INTO shard_replicas (name, server, host, port) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (name) DO NOTHING",
                standby.name,
                server,
                standby.host,
                standby.port,
            )
    finally:
        await conn.close()


async def record_failover(
    dsn: str, server: str, promoted: PostgresServer, replica_name: str
) -> list[ShardMapRow]:
    """One catalog transaction: the promoted node becomes `server`'s address, its
    replica row goes, and every logical shard of `server` gets a new map version."""
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            # The catalog's own standby may be the thing that is missing: do not wait
            # for it (synchronous replicas) to record a failover.
            await conn.execute("SET LOCAL synchronous_commit = local")
            await conn.execute("LOCK TABLE shard_map IN EXCLUSIVE MODE")
            updated = await conn.execute(
                "UPDATE shard_servers SET host = $2, port = $3 WHERE name = $1",
                server,
                promoted.host,
                promoted.port,
            )
            if updated != "UPDATE 1":
                raise StackError(f"catalog: server {server} vanished from shard_servers")
            await conn.execute("DELETE FROM shard_replicas WHERE name = $1", replica_name)
            rows = await conn.fetch(
                "UPDATE shard_map SET version = version + 1, updated_at = now()"
                " WHERE shard_server = $1 RETURNING shard_key, shard_server, version",
                server,
            )
    finally:
        await conn.close()
    return sorted(
        (ShardMapRow(r["shard_key"], r["shard_server"], r["version"]) for r in rows),
        key=lambda row: (len(row.shard_key), row.shard_key),
    )


async def probe(dsn: str) -> NodeProbe:
    """Role, WAL receiver and (on a primary) each standby's lag, from the node itself."""
    conn = await connect(dsn)
    try:
        in_recovery = bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
        if in_recovery:
            receiver = await conn.fetchval("SELECT status FROM pg_stat_wal_receiver")
            replay = await conn.fetchval("SELECT pg_last_wal_replay_lsn()::text")
            return NodeProbe(True, receiver_status=receiver, replay_lsn=replay)
        rows = await conn.fetch(
            "SELECT application_name, state,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes,"
            " extract(epoch FROM replay_lag)::float8 AS replay_lag_s"
            " FROM pg_stat_replication ORDER BY application_name"
        )
        return NodeProbe(
            False,
            standbys=tuple(
                StandbyLag(r["application_name"], r["state"], r["lag_bytes"], r["replay_lag_s"])
                for r in rows
            ),
        )
    finally:
        await conn.close()


def describe_lag(lag: StandbyLag | None) -> str:
    if lag is None:
        return "not connected to its primary"
    parts = [lag.state]
    if lag.lag_bytes is not None:
        parts.append(f"lag {format_bytes(lag.lag_bytes)}")
    if lag.replay_lag_s is not None:
        parts.append(f"replay {lag.replay_lag_s * 1000:.0f} ms behind")
    return ", ".join(parts)


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def node_statuses(
    groups: Sequence[ServerNodes], probes: dict[str, NodeProbe | None], running: dict[str, bool]
) -> list[NodeStatus]:
    """Compare what each node is with what the catalog says it should be."""
    rows = []
    for group in groups:
        primary_probe = probes.get(group.primary.name)
        lags = (
            {lag.application_name: lag for lag in primary_probe.standbys} if primary_probe else {}
        )
        for node in group.nodes:
            role = "primary" if node is group.primary else "standby"
            rows.append(
                _node_status(group, node, role, running.get(node.name, False), probes, lags)
            )
    return rows


def _node_status(
    group: ServerNodes,
    node: PostgresServer,
    role: str,
    running: bool,
    probes: dict[str, NodeProbe | None],
    lags: dict[str, StandbyLag],
) -> NodeStatus:
    def row(
        state: str, healthy: bool, detail: str = "", lag: StandbyLag | None = None
    ) -> NodeStatus:
        return NodeStatus(
            group.server,
            node.name,
            node.address,
            role,
            state,
            healthy,
            detail,
            lag.lag_bytes if lag else None,
            lag.replay_lag_s if lag else None,
        )

    if not running:
        if not node.is_initialized():
            return row("not created", False)
        return row("demoted, stopped" if node.is_demoted() else "stopped", False)
    seen = probes.get(node.name)
    if seen is None:
        return row("not accepting", False)
    if role == "primary":
        if seen.in_recovery:
            return row("standby", False, "the catalog names it primary but it is in recovery")
        streaming = [lag.application_name for lag in seen.standbys if lag.state == "streaming"]
        detail = "streams to " + ", ".join(streaming) if streaming else "no standby streaming"
        return row("primary", True, detail)
    if not seen.in_recovery:
        return row(
            "primary",
            False,
            f"split brain: accepts writes but {group.server}'s primary is {group.primary.name}",
        )
    lag = lags.get(node.name)
    healthy = seen.receiver_status == "streaming" and lag is not None
    return row("standby", healthy, f"of {group.primary.name}: {describe_lag(lag)}", lag)
