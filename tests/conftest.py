"""One throwaway stack per test session, started for real on free ports:
PostgreSQL servers (catalog + shard servers, each with a streaming standby), Redis,
and, for e2e, a Ray head with the Serve application deployed from
`serve_config.yaml` through `LocalStack`, the same code `nextflow up` runs."""

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
from tests.chat_server import ChatServer  # noqa: E402

TEST_LOGICAL_SHARDS = 10
TEST_SHARD_SERVERS = 2


@pytest.fixture(scope="session")
def chat_server() -> Iterator[ChatServer]:
    """The chat model the session's AIService replicas summarize tickets with. It
    fails ("error") unless a test says otherwise, so summaries fall back to the
    extractive ones (tests/e2e/test_ai.py checks both)."""
    server = ChatServer()
    server.behaviour = "error"
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack_settings(chat_server: ChatServer) -> Iterator[Settings]:
    """Settings for the session's stack, also exported as NEXTFLOW_* variables so that
    code reading `get_settings()` (and every Ray worker) sees the same values."""
    # PostgreSQL runs as `postgres` when we are root: the folder must be enterable.
    root = Path(tempfile.mkdtemp(prefix="nft-", dir="/tmp"))
    root.chmod(0o755)
    (
        (redis, gcs, dash, client, agent, metrics, http, hap_stats, hap_metrics, grpc),
        catalog,
        replica_offset,
    ) = _port_plan(10, TEST_SHARD_SERVERS + 1)
    values = {
        "NEXTFLOW_DATA_DIR": str(root),
        # The catalog and the shard servers take consecutive ports; each one's
        # streaming replica runs at its port + the offset (another free run).
        "NEXTFLOW_CATALOG_PORT": str(catalog),
        "NEXTFLOW_SHARD_SERVERS": str(TEST_SHARD_SERVERS),
        "NEXTFLOW_SHARD_BASE_PORT": str(catalog + 1),
        "NEXTFLOW_REPLICA_PORT_OFFSET": str(replica_offset),
        "NEXTFLOW_LOGICAL_SHARDS": str(TEST_LOGICAL_SHARDS),
        "NEXTFLOW_REDIS_PORT": str(redis),
        "NEXTFLOW_RAY_GCS_PORT": str(gcs),
        "NEXTFLOW_RAY_DASHBOARD_PORT": str(dash),
        "NEXTFLOW_RAY_CLIENT_PORT": str(client),
        "NEXTFLOW_RAY_DASHBOARD_AGENT_PORT": str(agent),
        "NEXTFLOW_RAY_METRICS_PORT": str(metrics),
        "NEXTFLOW_SERVE_HTTP_PORT": str(http),
        "NEXTFLOW_SERVE_GRPC_PORT": str(grpc),
        "NEXTFLOW_HAPROXY_STATS_PORT": str(hap_stats),
        "NEXTFLOW_HAPROXY_METRICS_PORT": str(hap_metrics),
        "NEXTFLOW_PG_PASSWORD": secrets.token_urlsafe(24),
        "NEXTFLOW_JWT_SECRET": secrets.token_urlsafe(48),
        "NEXTFLOW_SECRETS_KEY": secrets.token_urlsafe(48),
        "NEXTFLOW_POOL_MAX_SIZE": "4",
        # Imports of more than one chunk parse in Ray tasks (by default only on 4+ CPUs).
        "NEXTFLOW_IMPORT_PARSERS": "2",
        "NEXTFLOW_IMPORT_MAX_ROWS": "100000",  # tests/e2e/test_imports.py: the cap
        # Tests create managers at any time and expect SLA notices to reach them: the
        # NotificationService asks Auth for the managers on every breach here.
        "NEXTFLOW_NOTIFICATION_DIRECTORY_TTL_S": "0",
        # Every process writes its spans here (tests/e2e/test_observability.py reads
        # them); new traces are sampled at the default ratio, a sampled caller always.
        "NEXTFLOW_OTEL_SPANS_DIR": str(root / "spans"),
        "NEXTFLOW_MAX_REPLICA_LAG_S": "2",
        "NEXTFLOW_RATE_LIMIT_BURST": "100000",
        "NEXTFLOW_LOGIN_LIMIT_BURST": "1000",
        # Short, so the e2e support test sees a periodic SLA sweep within seconds.
        "NEXTFLOW_SLA_SWEEP_INTERVAL_S": "3",
        "NEXTFLOW_ACTIVITY_REMINDER_INTERVAL_S": "2",
        # Small scoring batches, one task at a time: a batch-scoring job of the e2e
        # leads runs for seconds, long enough to be cancelled however fast the machine
        # is (batches of 50, eight at once, all landed before the cancel on a quiet one).
        "NEXTFLOW_AI_SCORE_BATCH_SIZE": "10",
        "NEXTFLOW_AI_TASKS_IN_FLIGHT": "1",
        "NEXTFLOW_AI_CHAT_URL": chat_server.url,
        "NEXTFLOW_AI_CHAT_MODEL": "test-chat",
        # No embedding backlog in the background: the imports of tests/e2e/test_imports.py
        # would keep a core busy embedding for minutes; test_ai.py runs a round by hand.
        "NEXTFLOW_AI_EMBED_BACKLOG_INTERVAL_S": "0",
        # Public capture: low limits, so tests/e2e/test_marketing.py can reach them; the
        # loopback ingress is trusted to pass X-Forwarded-For (one "client" per test).
        "NEXTFLOW_CAPTURE_FORM_LIMIT_PER_MINUTE": "5",
        "NEXTFLOW_CAPTURE_FORM_LIMIT_BURST": "5",
        "NEXTFLOW_CAPTURE_CLIENT_LIMIT_PER_MINUTE": "8",
        "NEXTFLOW_CAPTURE_CLIENT_LIMIT_BURST": "8",
        "NEXTFLOW_TRUSTED_PROXIES": "127.0.0.0/8,::1/128",
        # Small, so tests/e2e/test_files.py can pass the upload cap quickly.
        "NEXTFLOW_FILE_MAX_BYTES": str(256 * 1024),
        # Webhooks: receivers on 127.0.0.2 only are allowed (127.0.0.1 stays refused,
        # as by default); short retries and a fast delivery loop (tests/e2e/test_notify.py).
        "NEXTFLOW_WEBHOOK_ALLOWED_CIDRS": "127.0.0.2/32",
        "NEXTFLOW_WEBHOOK_RETRY_BASE_S": "0.3",
        "NEXTFLOW_WEBHOOK_RETRY_CAP_S": "1",
        "NEXTFLOW_WEBHOOK_POLL_INTERVAL_S": "0.2",
        # Slow request heads are cut sooner than the default 10 s (test_hardening.py).
        "NEXTFLOW_INGRESS_HEADER_TIMEOUT_S": "3",
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


def _port_plan(singles: int, run: int) -> tuple[list[int], int, int]:
    """`singles` free ports, plus two runs of `run` consecutive free ports (the
    PostgreSQL primaries and their replicas), all distinct: every socket stays bound
    until the whole plan is chosen. Returns (singles, first run's start, offset of the
    second run from the first, > 0)."""
    held: list[socket.socket] = []

    def bind(port: int) -> int:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            raise
        held.append(s)
        return int(s.getsockname()[1])

    def free_run(count: int) -> int:
        for _ in range(50):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            start = probe.getsockname()[1]
            probe.close()
            if start + count >= 65535:
                continue
            mark = len(held)
            try:
                for port in range(start, start + count):
                    bind(port)
                return int(start)
            except OSError:
                for s in held[mark:]:
                    s.close()
                del held[mark:]
        raise RuntimeError("no run of free ports found")

    try:
        ports = [bind(0) for _ in range(singles)]
        first, second = sorted((free_run(run), free_run(run)))
        return ports, first, second - first
    finally:
        for s in held:
            s.close()


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[object]:
    """PostgreSQL servers (each a primary with a streaming standby) and Redis,
    migrated (no Ray yet)."""
    from cluster.stack import LocalStack

    local = LocalStack(stack_settings)
    try:
        local.start_databases()
        local.migrate()
        local.start_redis()
        yield local
    finally:
        local.down()
