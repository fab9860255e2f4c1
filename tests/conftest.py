"""One throwaway stack per test session, started for real on free ports:
PostgreSQL servers (catalog + shard servers), Redis, and, for e2e, a Ray head with
the Serve application deployed from `serve_config.yaml` through `LocalStack`, the
same code `nextflow up` runs."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Ray reads these when it is first imported. Every Ray client here uses tokens, and
# nothing may quietly start a local cluster of its own (a handle touched after
# `ray.shutdown()` would, with auto-connect on).
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

# Imported early: its pytest plugin otherwise imports it at the very end, deep in the
# stack, which trips a Python 3.11 AST bug.
import hypothesis  # noqa: E402, F401
import pytest  # noqa: E402

from cluster.settings import Settings, get_settings  # noqa: E402

TEST_LOGICAL_SHARDS = 10
TEST_SHARD_SERVERS = 2


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings for the session's stack, also exported as NEXTFLOW_* variables so that
    code reading `get_settings()` (and every Ray worker) sees the same values."""
    # PostgreSQL runs as `postgres` when we are root: the folder must be enterable.
    root = Path(tempfile.mkdtemp(prefix="nft-", dir="/tmp"))
    root.chmod(0o755)
    (catalog, redis, gcs, dash, client, agent, metrics, http) = _free_ports(8)
    # Shard servers take consecutive ports from shard_base.
    shard_base = _consecutive_free(TEST_SHARD_SERVERS)
    values = {
        "NEXTFLOW_DATA_DIR": str(root),
        "NEXTFLOW_CATALOG_PORT": str(catalog),
        "NEXTFLOW_SHARD_SERVERS": str(TEST_SHARD_SERVERS),
        "NEXTFLOW_SHARD_BASE_PORT": str(shard_base),
        "NEXTFLOW_LOGICAL_SHARDS": str(TEST_LOGICAL_SHARDS),
        "NEXTFLOW_REDIS_PORT": str(redis),
        "NEXTFLOW_RAY_GCS_PORT": str(gcs),
        "NEXTFLOW_RAY_DASHBOARD_PORT": str(dash),
        "NEXTFLOW_RAY_CLIENT_PORT": str(client),
        "NEXTFLOW_RAY_DASHBOARD_AGENT_PORT": str(agent),
        "NEXTFLOW_RAY_METRICS_PORT": str(metrics),
        "NEXTFLOW_SERVE_HTTP_PORT": str(http),
        "NEXTFLOW_PG_PASSWORD": secrets.token_urlsafe(24),
        "NEXTFLOW_JWT_SECRET": secrets.token_urlsafe(48),
        "NEXTFLOW_POOL_MAX_SIZE": "4",
        "NEXTFLOW_RATE_LIMIT_BURST": "100000",
        "NEXTFLOW_LOGIN_LIMIT_BURST": "1000",
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        shutil.rmtree(root, ignore_errors=True)


def _consecutive_free(count: int) -> int:
    for _ in range(50):
        (start,) = _free_ports(1)
        if start + count >= 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(start, start + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                held.append(s)
            for s in held:
                s.close()
            return start
        except OSError:
            for s in held:
                s.close()
    raise RuntimeError("no run of free ports found")


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[object]:
    """PostgreSQL servers and Redis, migrated (no Ray yet)."""
    from cluster.stack import LocalStack

    local = LocalStack(stack_settings)
    try:
        local.start_databases()
        local.migrate()
        local.start_redis()
        yield local
    finally:
        local.down()
