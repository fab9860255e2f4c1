"""The performance suite (`bench/run`): every scenario against its baseline, in one run.

Starts a private stack on free ports (as the other benchmarks do) or, with `--reuse`,
uses the stack the NEXTFLOW_* environment names (e.g. the one `make up` started, or
the test suite's); generates data with a progress bar; runs each scenario; prints one
table and, on a full run, rewrites its section of docs/benchmarks.md.

Scenarios (targets from issue 9, on 2 cores):
1. `GET /v1/customers/{id}`, full stack against the bare uvicorn + FastAPI + asyncpg app
   (`bench/bare_app.py`) on the same server and row, at 32 connections: the ratio of
   throughputs (target >= 0.25) and the full stack's p99 (target <= 50 ms).
2. `POST /v1/customers`, the same comparison (target >= 0.25).
3. First page of the cross-shard customer list (`GET /v1/customers?limit=50`, newest
   first, every logical shard): p99 at 8 connections (target <= 50 ms).
4. A mixed CRM workload from a Python load generator (reads, writes, lists):
   throughput and p99 per operation.
5. Autoscaling: a step load on `GET /v1/customers/{id}` (256 workers for 60 s), replica
   counts of CustomerService (the customer application's ingress) sampled every second
   from the Serve API, plotted into `autoscaling.png` (docs/ on a full run); every request must
   succeed. Targets: scale-up within 60 s, back down after the load.
6. Footprint: the resident memory of the idle stack (target <= 4 GiB) and `nextflow
   up` to ready (target <= 90 s; only when the suite starts the stack).

Load comes from wrk (scenarios 1-3) when it is installed and `--quick` is not given,
else from the Python generator (slower: a lower ceiling, the same comparison).

    bench/run                      # 1,000,000 customers, rewrites docs/benchmarks.md
    bench/run --quick              # tiny data, seconds of load, docs untouched
    bench/run --quick --reuse --email E --password-stdin   # against a running stack
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)
from shard_moves import DAY_MS, IdMaker  # noqa: E402

from cluster.cli import RichReporter  # noqa: E402
from cluster.settings import Settings, get_settings  # noqa: E402
from cluster.stack import LocalStack  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/suite.py: generated, rerun `bench/run` to update -->"
DOC_END = "<!-- END bench/suite.py -->"
console = base.console
INDUSTRIES = ("software", "retail", "banking", "health", "logistics", "energy", "media")
PRIORITIES = ("low", "normal", "high", "urgent")
CUSTOMER_COLUMNS = ("id", "name", "email", "industry", "tags", "owner_id", "created_at")
CONTACT_COLUMNS = ("id", "customer_id", "first_name", "last_name", "email")
DEAL_COLUMNS = (
    "id", "customer_id", "name", "amount", "currency", "pipeline_id", "stage_id",
    "probability", "owner_id",
)  # fmt: skip
TICKET_COLUMNS = (
    "id", "customer_id", "subject", "priority", "first_response_due_at", "resolution_due_at",
)  # fmt: skip
BATCH = 5_000


@dataclass(frozen=True)
class Plan:
    customers: int
    duration_s: int
    quick: bool
    reuse: bool
    email: str | None
    password: str | None
    write_doc: bool


@dataclass(frozen=True)
class Row:
    scenario: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    baseline_rps: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline_rps else self.rps / self.baseline_rps


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    footprint: dict[str, float] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    driver: str = ""
    scaling: Scaling | None = None


# -- data ---------------------------------------------------------------------------------


async def generate(settings: Settings, customers: int, owner_id: int, seed: int) -> None:
    """`customers` customers spread uniformly over the logical shards, each with a
    contact; a deal for every second one and a ticket for every fourth, on the
    customer's shard. COPY straight into each server's primaries, with progress."""
    from shards.client import load_shard_map  # imports ray: after the env is set

    catalog = await asyncpg.connect(
        settings.dsn_for(settings.host, settings.catalog_port, "catalog")
    )
    try:
        shard_map = await load_shard_map(catalog)
    finally:
        await catalog.close()
    config = await asyncpg.connect(
        settings.dsn_for(settings.host, settings.catalog_port, "sales_config")
    )
    try:
        stage = await config.fetchrow(
            """SELECT s.pipeline_id, s.id, s.probability FROM pipeline_stages s
               JOIN pipelines p ON p.id = s.pipeline_id
               WHERE p.is_default AND p.deleted_at IS NULL ORDER BY s.position LIMIT 1"""
        )
    finally:
        await config.close()
    if stage is None:
        raise base.BenchError("no default pipeline in sales_config")
    servers = shard_map.server_names()
    conns: dict[tuple[str, str], asyncpg.Connection] = {}
    for server in servers:
        spec = shard_map.servers[server]
        for db in ("customer", "sales", "support"):
            conns[(server, db)] = await asyncpg.connect(settings.dsn_for(spec.host, spec.port, db))
    rng = random.Random(seed)
    maker = IdMaker(int(time.time() * 1000) - DAY_MS, [0] * shard_map.logical_shards)
    now = datetime.now(UTC)
    try:
        with base._progress() as progress:
            task = progress.add_task("generating customers", total=customers)
            for first in range(0, customers, BATCH):
                rows: dict[str, dict[str, list[tuple[Any, ...]]]] = {
                    s: {"customers": [], "contacts": [], "deals": [], "tickets": []}
                    for s in servers
                }
                for n in range(first, min(first + BATCH, customers)):
                    shard = rng.randrange(shard_map.logical_shards)
                    out = rows[shard_map.server_for_shard(shard).name]
                    cid = maker.next(shard)
                    created = now - timedelta(seconds=customers - n)
                    out["customers"].append((
                        cid, f"Customer {n:07d}", f"c{n}@example.com", rng.choice(INDUSTRIES),
                        ["bench", f"cohort-{n % 10}"], owner_id, created,
                    ))  # fmt: skip
                    out["contacts"].append(
                        (maker.next(shard), cid, f"First{n}", f"Last{n}", f"p{n}@example.com")
                    )
                    if n % 2 == 0:
                        out["deals"].append((
                            maker.next(shard), cid, f"Deal {n}", rng.randrange(100, 100_000),
                            "EUR", stage["pipeline_id"], stage["id"], stage["probability"],
                            owner_id,
                        ))  # fmt: skip
                    if n % 4 == 0:
                        out["tickets"].append((
                            maker.next(shard), cid, f"Ticket {n}", rng.choice(PRIORITIES),
                            now + timedelta(hours=4), now + timedelta(days=2),
                        ))  # fmt: skip
                await asyncio.gather(*(_copy(conns, s, rows[s]) for s in servers))
                progress.update(task, completed=min(first + BATCH, customers))
        for conn in conns.values():
            await conn.execute("ANALYZE")
    finally:
        for conn in conns.values():
            await conn.close()


async def _copy(
    conns: dict[tuple[str, str], asyncpg.Connection],
    server: str,
    rows: dict[str, list[tuple[Any, ...]]],
) -> None:
    customer = conns[(server, "customer")]
    async with customer.transaction():
        await customer.copy_records_to_table(
            "customers", records=rows["customers"], columns=CUSTOMER_COLUMNS
        )
        await customer.copy_records_to_table(
            "contacts", records=rows["contacts"], columns=CONTACT_COLUMNS
        )
    await conns[(server, "sales")].copy_records_to_table(
        "deals", records=rows["deals"], columns=DEAL_COLUMNS
    )
    await conns[(server, "support")].copy_records_to_table(
        "tickets", records=rows["tickets"], columns=TICKET_COLUMNS
    )


# -- the Python load generator ------------------------------------------------------------


@dataclass
class OpStats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    def row(self, scenario: str, target: str, elapsed_s: float) -> Row:
        lat = sorted(self.latencies_ms) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        note = f"{self.errors} errors" if self.errors else ""
        return Row(scenario, target, len(self.latencies_ms) / elapsed_s,
                   statistics.median(lat), p99, note=note)  # fmt: skip


Op = Callable[[httpx.AsyncClient, random.Random], Awaitable[httpx.Response]]


async def drive(
    base_url: str,
    headers: dict[str, str],
    ops: Sequence[tuple[str, float, Op]],
    connections: int,
    duration_s: float,
) -> tuple[dict[str, OpStats], float]:
    """`connections` workers, each sending one request at a time for `duration_s`,
    choosing an operation by weight. Any non-2xx answer counts as an error."""
    names = [name for name, _, _ in ops]
    weights = [weight for _, weight, _ in ops]
    stats = {name: OpStats() for name in names}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    deadline = time.monotonic() + duration_s
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=30, limits=limits
    ) as client:

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                index = rng.choices(range(len(ops)), weights)[0]
                name, _, op = ops[index]
                started = time.perf_counter()
                try:
                    response = await op(client, rng)
                    ok = response.status_code < 300
                except httpx.HTTPError:
                    ok = False
                if ok:
                    stats[name].latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    stats[name].errors += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(connections)))
    return stats, time.monotonic() - started


# -- scenarios ----------------------------------------------------------------------------


def _wrk_or_python(plan: Plan, target: base.Target, connections: int, scenario: str) -> Row:
    if not plan.quick and shutil.which("wrk"):
        with base._progress() as progress:
            base.wrk(target, connections, min(5, plan.duration_s), progress)  # warm-up
            got = base.wrk(target, connections, plan.duration_s, progress)
        return Row(scenario, target.label, got.rps, got.p50_ms, got.p99_ms)
    headers = dict(h.split(": ", 1) for h in target.headers)
    url = httpx.URL(target.url)
    path = url.raw_path.decode()
    body = target.body

    async def op(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        if body is None:
            return await client.get(path)
        sent = {"Content-Type": "application/json"}
        if target.keyed:
            sent["Idempotency-Key"] = uuid.uuid4().hex
        return await client.post(path, content=body, headers=sent)

    origin = f"{url.scheme}://{url.host}:{url.port}"
    stats, elapsed = asyncio.run(
        drive(origin, headers, [(target.label, 1.0, op)], connections, plan.duration_s)
    )
    row = stats[target.label].row(scenario, target.label, elapsed)
    if stats[target.label].errors:
        raise base.BenchError(f"{target.label}: {stats[target.label].errors} failed requests")
    return row


def paired(plan: Plan, scenario: str, full: base.Target, bare: base.Target) -> list[Row]:
    """Bare, full, full, bare: each side measured twice, the order swapped, so drift of
    the shared machine hits both alike; the medians are reported."""
    runs: dict[str, list[Row]] = {"full": [], "bare": []}
    for side, target in (("bare", bare), ("full", full), ("full", full), ("bare", bare)):
        runs[side].append(_wrk_or_python(plan, target, 32, scenario))
    bare_rps = statistics.median(r.rps for r in runs["bare"])
    out = []
    for side in ("full", "bare"):
        rs = runs[side]
        out.append(Row(
            scenario, rs[0].target, statistics.median(r.rps for r in rs),
            statistics.median(r.p50_ms for r in rs), max(r.p99_ms for r in rs),
            bare_rps if side == "full" else None,
        ))  # fmt: skip
    return out


def mixed(plan: Plan, url: str, token: str, customer_ids: list[int]) -> list[Row]:
    async def get(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        return await client.get(f"/v1/customers/{rng.choice(customer_ids)}")

    async def page(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        return await client.get("/v1/customers", params={"limit": 50, "tag": "bench"})

    async def create(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        n = rng.randrange(10**9)
        return await client.post("/v1/customers", json={"name": f"Mixed {n}", "tags": ["mixed"]})

    async def update(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        cid = rng.choice(customer_ids)
        return await client.patch(f"/v1/customers/{cid}", json={"industry": rng.choice(INDUSTRIES)})

    async def tickets(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        return await client.get("/v1/support/tickets", params={"limit": 50})

    ops: list[tuple[str, float, Op]] = [
        ("GET /v1/customers/{id}", 50, get),
        ("GET /v1/customers?tag=bench", 15, page),
        ("POST /v1/customers", 15, create),
        ("PATCH /v1/customers/{id}", 10, update),
        ("GET /v1/support/tickets", 10, tickets),
    ]
    stats, elapsed = asyncio.run(
        drive(url, {"Authorization": f"Bearer {token}"}, ops, 32, plan.duration_s)
    )
    return [s.row("4 mixed workload, 32 workers", name, elapsed) for name, s in stats.items()]


@dataclass
class Scaling:
    """Scenario 5: replica counts of the watched deployments over time under a step load."""

    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    load_window: tuple[float, float] = (0.0, 0.0)
    requests: int = 0
    errors: int = 0
    plot: Path | None = None

    def first_above(self, deployment: str, count: int, after: float) -> float | None:
        return next((t - after for t, c in self.samples
                     if t >= after and c.get(deployment, 0) > count), None)  # fmt: skip

    def back_to(self, deployment: str, count: int, after: float) -> float | None:
        return next((t - after for t, c in self.samples
                     if t >= after and c.get(deployment, 0) <= count), None)  # fmt: skip


WATCHED = ("CustomerService",)


def replica_counts(settings: Settings) -> dict[str, int]:
    """RUNNING replicas per deployment, from the dashboard's Serve API (Ray's token)."""
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    response = httpx.get(f"{settings.dashboard_url}/api/serve/applications/",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
    response.raise_for_status()
    deployments = {
        name: deployment
        for app in response.json()["applications"].values()
        for name, deployment in (app.get("deployments") or {}).items()
    }
    return {
        name: sum(r["state"] == "RUNNING" for r in deployments[name]["replicas"])
        for name in WATCHED
        if name in deployments
    }


def autoscaling(
    plan: Plan, settings: Settings, url: str, token: str, customer_ids: list[int], out_dir: Path
) -> Scaling:
    """Quiet, then a step of heavy load on `GET /v1/customers/{id}`, then quiet again,
    sampling the replica counts every second; every request must succeed."""
    quiet_s, load_s, settle_s = (1, 3, 2) if plan.quick else (10, 60, 180)
    workers = 16 if plan.quick else 256
    scaling = Scaling()
    start = time.monotonic()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                counts = replica_counts(settings)
            except (httpx.HTTPError, KeyError) as exc:
                console.print(f"  [yellow]replica counts unavailable: {exc}")
                counts = {}
            scaling.samples.append((time.monotonic() - start, counts))
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        time.sleep(quiet_s)

        began = time.monotonic() - start
        if not plan.quick and shutil.which("wrk"):
            target = base.Target("step load", f"{url}/v1/customers/{customer_ids[0]}",
                                 (f"Authorization: Bearer {token}",))  # fmt: skip
            try:
                with base._progress() as progress:
                    got = base.wrk(target, workers, load_s, progress)
                scaling.requests = int(got.rps * load_s)
            except base.BenchError as exc:  # wrk saw a failed request
                console.print(f"  [red]{exc}")
                scaling.errors = 1
        else:

            async def get(client: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
                return await client.get(f"/v1/customers/{rng.choice(customer_ids)}")

            stats, _ = asyncio.run(drive(url, {"Authorization": f"Bearer {token}"},
                                         [("get", 1.0, get)], workers, load_s))  # fmt: skip
            scaling.requests = len(stats["get"].latencies_ms)
            scaling.errors = stats["get"].errors
        scaling.load_window = (began, time.monotonic() - start)
        with base._progress() as progress:
            task = progress.add_task("watching replicas after the load", total=settle_s)
            for second in range(settle_s):
                time.sleep(1)
                progress.update(task, completed=second + 1)
                counts = scaling.samples[-1][1] if scaling.samples else {}
                if not plan.quick and counts and all(counts.get(d, 0) <= 1 for d in WATCHED):
                    if scaling.back_to(WATCHED[0], 1, scaling.load_window[1]) is not None:
                        break
    finally:
        done.set()
        sampler.join(timeout=15)
    scaling.plot = _plot(scaling, out_dir / "autoscaling.png")
    return scaling


def _plot(scaling: Scaling, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    times = [t for t, _ in scaling.samples]
    for name in WATCHED:
        ax.step(times, [c.get(name, 0) for _, c in scaling.samples], where="post", label=name)
    ax.axvspan(*scaling.load_window, alpha=0.15, label="step load")
    ax.set_xlabel("seconds")
    ax.set_ylabel("running replicas")
    ax.set_title("Serve autoscaling under a step load (bench/run)")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scaling_lines(scaling: Scaling | None) -> list[str]:
    if scaling is None:
        return ["5 autoscaling: not measured"]
    begin, end = scaling.load_window
    peak = {d: max((c.get(d, 0) for _, c in scaling.samples), default=0) for d in WATCHED}
    up = scaling.first_above(WATCHED[0], 1, begin)
    down = scaling.back_to(WATCHED[0], 1, end) if up is not None else None
    return [
        f"5 autoscaling: {scaling.requests:,} requests in a {end - begin:.0f} s step, "
        f"{scaling.errors} failed; peak replicas "
        + ", ".join(f"{d} {n}" for d, n in peak.items())
        + "; CustomerService scaled up "
        + ("never" if up is None else f"{up:.0f} s after the step began")
        + ("" if up is None else "; back to 1 " + (
            "not within the watch" if down is None else f"{down:.0f} s after it ended"))
        + " (target: up within 60 s, down after the load, no failed request)",
        f"  plot: {scaling.plot}",
    ]  # fmt: skip


def footprint(settings: Settings) -> dict[str, float]:
    """Resident memory (MiB) of the stack's processes by kind: every process (but this
    one) whose environment names the stack's data folder, as everything `nextflow up`
    starts inherits it (PostgreSQL servers and their backends, the Ray head, its
    workers and Serve's replicas and ingress), and the Redis server on its port.

    By kind, each process's proportional set size (PSS: a page shared by n processes
    counts 1/n in each), so the sum is the memory the stack holds; `rss` is the plain
    sum of resident sizes, which counts a shared page once per process that maps it
    (PostgreSQL's shared buffers in every backend, Python and Ray's libraries in every
    worker): about 1.7x the PSS here."""
    marker = f"NEXTFLOW_DATA_DIR={settings.data_dir}".encode()
    total = {"postgres": 0.0, "redis": 0.0, "ray": 0.0, "rss": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            # Redis rewrites its environment for its process title, which names its port.
            ours = marker in (entry / "environ").read_bytes().split(b"\0") or (
                name.startswith("redis-server")
                and f":{settings.redis_port}".encode() in (entry / "cmdline").read_bytes()
            )
            if not ours:
                continue
            status = (entry / "status").read_text()
            rollup = (entry / "smaps_rollup").read_text()
        except OSError:
            continue
        kind = "postgres" if name == "postgres" else "redis" if "redis" in name else "ray"
        total[kind] += _kib(rollup, "Pss:") / 1024
        total["rss"] += _kib(status, "VmRSS:") / 1024
    return total


def _kib(text: str, field: str) -> int:
    """A `field: N kB` line's N (0 when absent)."""
    return next((int(line.split()[1]) for line in text.splitlines()
                 if line.startswith(field)), 0)  # fmt: skip


# -- the run ------------------------------------------------------------------------------


def run(plan: Plan) -> Results:
    results = Results(load=[os.getloadavg()[0]])
    stack: LocalStack | None = None
    root: Path | None = None
    try:
        if plan.reuse:
            get_settings.cache_clear()
            settings = get_settings()
            if plan.email is None or plan.password is None:
                raise base.BenchError("--reuse needs --email and a password (--password-stdin)")
            email, password = plan.email, plan.password
        else:
            root, settings, stack = base.tuned_stack("nfs-")
            console.rule(f"[bold]stack in {root}")
            started = time.monotonic()
            stack.up(RichReporter(console))
            results.footprint["up_s"] = time.monotonic() - started
            email, password = base.ADMIN_EMAIL, secrets.token_urlsafe(16)
            base.create_admin(password)
        url = settings.serve_url
        token = _login(url, email, password)
        me = httpx.get(
            f"{url}/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        if me.status_code != 200:
            raise base.BenchError(f"GET /v1/auth/me: HTTP {me.status_code}")
        owner_id = int(me.json()["id"])
        if not plan.reuse:
            time.sleep(5)  # let start-up work settle before measuring memory
            results.footprint.update(footprint(settings))
            asyncio.run(generate(settings, plan.customers, owner_id, seed=9))
            customer_ids = asyncio.run(_sample_ids(url, token))
        else:
            seed = min(plan.customers, 50 if plan.quick else 200)
            customer_ids = asyncio.run(base.seed_customers(url, token, seed))
        results.driver = "wrk" if (not plan.quick and shutil.which("wrk")) else "python"
        auth = (f"Authorization: Bearer {token}",)
        customer_id = customer_ids[len(customer_ids) // 2]
        dsn = asyncio.run(base.customer_dsn(settings, customer_id))
        body = '{"name": "Bench Create", "email": "create@example.com", "tags": ["bench"]}'
        with base.bare_app(
            dsn, settings.pool_max_size, Path(tempfile.gettempdir()) / "nf-bare.log"
        ) as bare_url:
            console.rule("1 GET customer, full vs bare")
            results.rows += paired(
                plan, "1 GET /v1/customers/{id}, 32 conn",
                base.Target("full stack", f"{url}/v1/customers/{customer_id}", auth),
                base.Target("bare app", f"{bare_url}/v1/customers/{customer_id}"),
            )  # fmt: skip
            console.rule("2 POST customer (each with its Idempotency-Key), full vs bare")
            results.rows += paired(
                plan, "2 POST /v1/customers + Idempotency-Key, 32 conn",
                base.Target("full stack", f"{url}/v1/customers", auth, body, keyed=True),
                base.Target("bare app", f"{bare_url}/v1/customers", (), body),
            )  # fmt: skip
        console.rule("3 first page of the cross-shard list")
        results.rows.append(_wrk_or_python(
            plan, base.Target("GET /v1/customers?limit=50", f"{url}/v1/customers?limit=50",
                              auth), 8,
            "3 cross-shard list, 8 conn",
        ))  # fmt: skip
        console.rule("4 mixed workload")
        results.rows += mixed(plan, url, token, customer_ids)
        console.rule("5 autoscaling under a step load")
        out_dir = (
            base.REPO / "docs" if plan.write_doc else Path(tempfile.mkdtemp(prefix="nfs-plot-"))
        )
        results.scaling = autoscaling(plan, settings, url, token, customer_ids, out_dir)
        results.load.append(os.getloadavg()[0])
        console.print(table(results))
        for line in scaling_lines(results.scaling) + footprint_lines(results.footprint):
            console.print(line)
        if plan.write_doc:
            base.write_doc_section(DOC_BEGIN, DOC_END, markdown(results, plan))
            console.print(f"wrote {base.DOC.relative_to(base.REPO)}")
        return results
    finally:
        if stack is not None:
            with console.status("stopping the stack…"):
                stack.down()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _login(url: str, email: str, password: str) -> str:
    response = httpx.post(f"{url}/v1/auth/login", json={"email": email, "password": password},
                          timeout=60)  # fmt: skip
    if response.status_code != 200:
        raise base.BenchError(f"login as {email}: HTTP {response.status_code}")
    token: str = response.json()["access_token"]
    return token


async def _sample_ids(url: str, token: str) -> list[int]:
    """Ids of generated customers to read and update: the first pages of the list."""
    out: list[int] = []
    params: dict[str, Any] = {"limit": 200, "tag": "bench"}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        for _ in range(5):
            page = (await client.get("/v1/customers", params=params)).json()
            out += [int(c["id"]) for c in page["data"]]
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
    if not out:
        raise base.BenchError("no generated customer is listed")
    return out


# -- report -------------------------------------------------------------------------------


def table(results: Results) -> Table:
    t = Table(title=f"bench/run ({results.driver} load)")
    for column in ("scenario", "target", "req/s", "p50 ms", "p99 ms", "vs baseline"):
        t.add_column(column, justify="right" if column not in ("scenario", "target") else "left")
    for row in results.rows:
        t.add_row(*_cells(row))
    return t


def _cells(row: Row) -> list[str]:
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
    return [row.scenario, row.target + (f" ({row.note})" if row.note else ""),
            f"{row.rps:,.0f}", f"{row.p50_ms:.1f}", f"{row.p99_ms:.1f}", ratio]  # fmt: skip


def footprint_lines(fp: dict[str, float]) -> list[str]:
    if not fp:
        return ["6 footprint: not measured (--reuse)"]
    mib = fp.get("postgres", 0) + fp.get("redis", 0) + fp.get("ray", 0)
    return [
        f"6 footprint: idle stack {mib / 1024:.2f} GiB resident, shared pages counted once "
        f"(PSS; PostgreSQL {fp.get('postgres', 0):,.0f} MiB, Redis {fp.get('redis', 0):,.0f} "
        f"MiB, Ray {fp.get('ray', 0):,.0f} MiB; the plain sum of each process's RSS, which "
        f"counts them once per process: {fp.get('rss', 0) / 1024:.2f} GiB; target <= 4 GiB); "
        f"`up` to ready {fp.get('up_s', 0):.0f} s (target <= 90 s)"
    ]


def markdown(results: Results, plan: Plan) -> str:
    lines = [
        DOC_BEGIN,
        "## The suite (`bench/run`)",
        "",
        f"{plan.customers:,} generated customers (each with a contact; a deal for every "
        "second, a ticket for every fourth) on 2 shard servers with streaming replicas, "
        "10 logical shards; HAProxy ingress, throughput-optimized Serve. "
        f"Load from {results.driver}; {plan.duration_s} s per run; pairs run bare, full, "
        "full, bare and report medians (p99: the worse run).",
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | vs baseline |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *("| " + " | ".join(_cells(row)) + " |" for row in results.rows),
        "",
        *(line for line in scaling_lines(results.scaling) if not line.startswith("  plot:")),
        "",
        "![replicas over time](autoscaling.png)",
        "",
        *footprint_lines(results.footprint),
        "",
        "Targets (issue 9): scenario 1 and 2 at least 0.25 of the bare app; p99 at most "
        "50 ms for 1 and 3; scale-up within 60 s of the step and back down after it with "
        "no failed request; idle stack at most 4 GiB, `up` to ready at most 90 s.",
        "",
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, "
        f"{_memory_gib():.0f} GiB; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        "load average (1 min) " + ", ".join(f"{x:.2f}" for x in results.load)
        + " (start, end): other work shares the cores.",
        "",
        DOC_END,
    ]  # fmt: skip
    return "\n".join(lines)


def _memory_gib() -> float:
    line = next(
        x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
    )
    return int(line.split()[1]) / 2**20


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, seconds of load")
    parser.add_argument("--customers", type=int, default=None)
    parser.add_argument("--duration", type=int, default=None, help="seconds per load run")
    parser.add_argument("--reuse", action="store_true",
                        help="use the stack the NEXTFLOW_* environment names")  # fmt: skip
    parser.add_argument("--email", default=None, help="an admin of the reused stack")
    parser.add_argument("--password-stdin", action="store_true")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    customers = args.customers or (2_000 if args.quick else 1_000_000)
    duration = args.duration or (2 if args.quick else 20)
    if customers < 10 or duration < 1:
        parser.error("--customers must be at least 10 and --duration at least 1")
    if not args.quick and shutil.which("wrk") is None:
        # The Python load generator cannot saturate the bare app, so its ratios flatter
        # the stack (0.47x measured where wrk gives 0.06x): no figures rather than those.
        parser.error("a full run needs wrk (apt-get install -y wrk); --quick runs without it")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    return Plan(
        customers=customers, duration_s=duration, quick=args.quick, reuse=args.reuse,
        email=args.email, password=password,
        write_doc=not (args.quick or args.no_doc or args.reuse),
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    plan = parse_args(argv)
    try:
        run(plan)
    except base.BenchError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
