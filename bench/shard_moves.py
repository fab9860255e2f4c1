"""Benchmark: bulk load of the sharded `customer` database and one online logical-shard
move under a concurrent write load.

Starts a throwaway stack on free ports (PostgreSQL catalog + 2 shard servers, each a
primary with a streaming replica, 10 logical shards; no Redis, no Ray), then:

1. loads N customers with one contact each (2N rows) by `COPY` straight into each
   shard server's `customer` database, ids made in Python (`shards.ids.make_id`) with
   timestamps from one day ago, so they can never meet an id `nextflow_id()` makes now;
   each customer lands on a uniformly random logical shard (`Shards.place()` without
   a key), its contact on the same one;
2. reports the spread over logical shards and servers;
3. moves one logical shard to the other server with `shards.moves.move_shard`, driven
   through in-process ShardManagers (as tests/integration/test_moves.py does) while
   writers insert and update that shard's customers through a `Shards` client, checks
   every acknowledged write afterwards, and moves the shard back.

    .venv/bin/python bench/shard_moves.py                 # 1,000,000 customers, rewrites docs
    .venv/bin/python bench/shard_moves.py --quick         # 50,000 customers, docs untouched
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for `bench.get_customer`, run as a script
# Ray reads these when first imported (shards.manager imports it); nothing here may
# start or join a Ray cluster.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from importlib.metadata import version  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table  # noqa: E402

from bench.get_customer import BenchError, stack_env  # noqa: E402
from cluster.cli import RichReporter  # noqa: E402
from cluster.procs import StackError  # noqa: E402
from cluster.settings import Settings, get_settings  # noqa: E402
from cluster.stack import LocalStack  # noqa: E402
from shards import ids  # noqa: E402
from shards.routing import ShardMap  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
DOC_BEGIN = "<!-- BEGIN bench/shard_moves.py: generated, rerun `make bench-shards` to update -->"
DOC_END = "<!-- END bench/shard_moves.py -->"

LOGICAL_SHARDS = 10
DEFAULT_CUSTOMERS = 1_000_000
QUICK_CUSTOMERS = 50_000
BATCH = 10_000  # customers per COPY batch (and as many contacts)
MOVED_SHARD = 3  # on shard1 in the default layout (0-4 on shard1, 5-9 on shard2)
WRITERS = 4
DAY_MS = 86_400_000
_SEQ = 1 << ids.SEQUENCE_BITS
CUSTOMER_COLUMNS = ("id", "name", "email", "industry", "tags", "custom_fields")
CONTACT_COLUMNS = ("id", "customer_id", "first_name", "last_name", "email")
INDUSTRIES = ("software", "retail", "banking", "health", "logistics", "energy", "media")
console = Console()


@dataclass(frozen=True)
class Plan:
    customers: int
    writers: int
    shard: int
    seed: int
    write_doc: bool
    quick: bool


# -- the stack --------------------------------------------------------------------------


def start_stack(root: Path) -> tuple[LocalStack, Settings]:
    env = stack_env(root)
    env["NEXTFLOW_LOGICAL_SHARDS"] = str(LOGICAL_SHARDS)
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    stack = LocalStack(settings)
    reporter = RichReporter(console)
    with reporter.step("PostgreSQL servers (primaries + streaming replicas)"):
        stack.start_databases(reporter)
    with reporter.step("migrations"):
        stack.migrate(reporter)
    return stack, settings


async def read_map(settings: Settings) -> ShardMap:
    from shards.client import read_shard_map  # imports ray: after the env is set

    return await read_shard_map(settings)


def customer_dsn(settings: Settings, shard_map: ShardMap, server: str) -> str:
    spec = shard_map.servers[server]
    return settings.dsn_for(spec.host, spec.port, "customer")


# -- the load ---------------------------------------------------------------------------


@dataclass
class IdMaker:
    """Ids of each logical shard from one day ago on: one millisecond per 4096 ids, so
    none can meet an id that `nextflow_id()` makes now (its timestamp is the clock's)."""

    base_ms: int
    counters: list[int]

    def next(self, shard: int) -> int:
        n = self.counters[shard]
        self.counters[shard] = n + 1
        return ids.make_id(self.base_ms + n // _SEQ, shard, n % _SEQ)


Batch = dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]  # server -> rows


def make_batch(
    first: int, count: int, rng: random.Random, maker: IdMaker, owner: Sequence[str]
) -> tuple[Batch, list[int]]:
    """Customers `first`..`first+count-1`, each with one contact, by server; and how
    many customers each logical shard got."""
    batch: Batch = {name: ([], []) for name in sorted(set(owner))}
    per_shard = [0] * len(owner)
    shards = len(owner)
    for n in range(first, first + count):
        shard = rng.randrange(shards)  # Shards.place() without a key: uniform
        per_shard[shard] += 1
        customers, contacts = batch[owner[shard]]
        cid = maker.next(shard)
        customers.append(
            (
                cid,
                f"Customer {n:07d}",
                f"customer{n}@example.com",
                INDUSTRIES[n % len(INDUSTRIES)],
                ["bench", f"cohort-{n % 10}"],
                f'{{"n": {n}, "tier": "{"gold" if n % 7 == 0 else "standard"}"}}',
            )
        )
        contacts.append(
            (maker.next(shard), cid, f"First{n}", f"Last{n}", f"contact{n}@example.com")
        )
    return batch, per_shard


@dataclass
class LoadResult:
    customers: int
    rows: int
    seconds: float
    per_shard: list[int]  # customers per logical shard, as generated

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


async def load(settings: Settings, shard_map: ShardMap, plan: Plan) -> LoadResult:
    """COPY in batches, one connection per server, the servers in parallel; the next
    batch is generated (in a thread) while the current one is copied."""
    owner = shard_map.shard_to_server
    rng = random.Random(plan.seed)
    maker = IdMaker(int(time.time() * 1000) - DAY_MS, [0] * len(owner))
    servers = sorted(set(owner))
    conns = {
        name: await asyncpg.connect(customer_dsn(settings, shard_map, name)) for name in servers
    }
    per_shard = [0] * len(owner)
    rate = "rows/s"
    try:
        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("COPY customers + contacts", total=2 * plan.customers, rate="")
            began = time.monotonic()

            async def copy(server: str, customers: list[Any], contacts: list[Any]) -> None:
                conn = conns[server]
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "customers", records=customers, columns=CUSTOMER_COLUMNS
                    )
                    await conn.copy_records_to_table(
                        "contacts", records=contacts, columns=CONTACT_COLUMNS
                    )
                progress.advance(task, len(customers) + len(contacts))
                done = progress.tasks[task].completed
                progress.update(task, rate=f"{done / (time.monotonic() - began):,.0f} {rate}")

            def generate(first: int) -> tuple[Batch, list[int]]:
                count = min(BATCH, plan.customers - first)
                return make_batch(first, count, rng, maker, owner)

            pending = asyncio.create_task(asyncio.to_thread(generate, 0))
            for first in range(0, plan.customers, BATCH):
                batch, counts = await pending
                per_shard = [a + b for a, b in zip(per_shard, counts, strict=True)]
                nxt = first + BATCH
                if nxt < plan.customers:
                    pending = asyncio.create_task(asyncio.to_thread(generate, nxt))
                await asyncio.gather(*(copy(name, *rows) for name, rows in batch.items()))
            seconds = time.monotonic() - began
    finally:
        for conn in conns.values():
            await conn.close()
    with console.status("ANALYZE"):
        for name in servers:
            conn = await asyncpg.connect(customer_dsn(settings, shard_map, name))
            try:
                await conn.execute("ANALYZE customers; ANALYZE contacts")
            finally:
                await conn.close()
    return LoadResult(plan.customers, 2 * plan.customers, seconds, per_shard)


# -- the spread -------------------------------------------------------------------------


@dataclass
class Spread:
    rows_per_shard: list[int]
    rows_per_server: dict[str, int]

    @property
    def max_deviation_pct(self) -> float:
        mean = statistics.fmean(self.rows_per_shard)
        return max(abs(n - mean) for n in self.rows_per_shard) / mean * 100


async def spread(settings: Settings, shard_map: ShardMap) -> Spread:
    """Counted in the databases, not taken from the generator."""
    rows = [0] * shard_map.logical_shards
    per_server: dict[str, int] = {}
    for name in shard_map.server_names():
        conn = await asyncpg.connect(customer_dsn(settings, shard_map, name))
        try:
            total = 0
            for table in ("customers", "contacts"):
                for r in await conn.fetch(
                    f"SELECT {ids.shard_sql()} AS shard, count(*) AS n FROM {table} GROUP BY 1"
                ):
                    rows[r["shard"]] += r["n"]
                    total += r["n"]
            per_server[name] = total
        finally:
            await conn.close()
    return Spread(rows, per_server)


# -- the move under load ----------------------------------------------------------------


@dataclass
class Writers:
    """Writers on one logical shard through a `Shards` client (which retries once on
    StaleShardMap/ShardMoved, as the services do); remembers every acknowledged write
    and when each write started and ended."""

    shards: Any  # shards.client.Shards
    shard: int
    names: dict[int, str] = field(default_factory=dict)  # customer -> last acked name
    contacts: set[int] = field(default_factory=set)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) monotonic
    errors: list[BaseException] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _timed(self, coro: Any) -> Any:
        began = time.monotonic()
        result = await coro
        self.spans.append((began, time.monotonic()))
        return result

    async def one(self, worker: int) -> None:
        from deployments.customer import repo
        from deployments.customer.schemas import ContactCreate, CustomerCreate

        mine: list[int] = []
        rng = random.Random(worker)
        step = 0
        while not self.stop.is_set():
            step += 1
            try:
                if not mine or rng.random() < 0.4:
                    name = f"w{worker}-{step}"
                    row = await self._timed(
                        self.shards.write(
                            self.shard, repo.create_customer, self.shard,
                            CustomerCreate(name=name), None, None,
                        )
                    )  # fmt: skip
                    mine.append(row.id)
                    self.names[row.id] = name
                elif rng.random() < 0.2:
                    cid = rng.choice(mine)
                    contact = await self._timed(
                        self.shards.write(
                            self.shard, repo.create_contact, self.shard, cid,
                            ContactCreate(first_name=f"c{step}"), None,
                        )
                    )  # fmt: skip
                    self.contacts.add(contact.id)
                else:
                    cid = rng.choice(mine)
                    name = f"w{worker}-{step}-upd"
                    await self._timed(
                        self.shards.write(
                            self.shard, repo.update_customer, cid, {"name": name}, None, None
                        )
                    )
                    self.names[cid] = name
            except Exception as exc:
                self.errors.append(exc)
                return
            await asyncio.sleep(0.002)

    def start(self, count: int) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.one(i)) for i in range(count)]

    def longest_ms(self, since: float, until: float) -> float:
        """The longest write that overlapped [since, until]."""
        inside = [end - start for start, end in self.spans if end >= since and start <= until]
        return max(inside, default=0.0) * 1e3

    def p50_ms(self, since: float, until: float) -> float:
        outside = [end - start for start, end in self.spans if end < since or start > until]
        return statistics.median(outside) * 1e3 if outside else 0.0


@dataclass
class MoveFigures:
    label: str
    source: str
    target: str
    rows: int
    total_s: float
    copy_s: float
    pause_ms: float
    held: int
    deleted: int
    catch_up_s: float
    cleanup_s: float
    longest_write_ms: float
    p50_write_ms: float
    writes: int
    writes_during: int
    customers_acked: int
    contacts_acked: int
    warnings: list[str]


class MoveBar:
    """One progress bar through the move's phases (copy, catch-up, pause, cleanup)."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label
        self.task: TaskID = progress.add_task(f"{label}: starting", total=1)
        self.first: dict[str, float] = {}  # phase -> when it was first reported

    def __call__(self, step: Any) -> None:  # shards.moves.MoveProgress
        self.first.setdefault(step.phase, time.monotonic())
        detail = f" ({step.detail})" if step.detail else ""
        self.progress.update(
            self.task,
            description=f"{self.label}: {step.phase}{detail}",
            completed=step.done,
            total=max(step.total, 1),
        )


async def move_under_load(
    settings: Settings, plan: Plan, expected: dict[str, int]
) -> list[MoveFigures]:
    """The shard away and back, writers on it throughout; checks after each move."""
    from shards.client import InProcess, Shards
    from shards.manager import ShardManager
    from shards.moves import LocalControls, move_shard

    async def loader() -> ShardMap:
        return await read_map(settings)

    first = await loader()
    managers = {name: ShardManager(spec) for name, spec in first.servers.items()}
    for manager in managers.values():
        await manager.refresh()
    client = Shards(
        "customer", first, manager_for=lambda spec: InProcess(managers[spec.name]), loader=loader
    )
    source = first.shard_to_server[plan.shard]
    target = next(name for name in first.server_names() if name != source)
    figures: list[MoveFigures] = []
    writers = Writers(client, plan.shard)
    try:
        for label, to in (("move", target), ("move back", source)):
            tasks = writers.start(plan.writers)
            await asyncio.sleep(1.0)  # writes before the copy starts
            with Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                began_writes = len(writers.spans)
                began = time.monotonic()
                bar = MoveBar(progress, f"{label} shard {plan.shard} → {to}")
                result = await move_shard(
                    settings, plan.shard, to, LocalControls(managers), progress=bar
                )
                ended = time.monotonic()
                copied = began + result.copy_s
                paused = bar.first.get("pause", copied)
                during = len(writers.spans) - began_writes
            await asyncio.sleep(1.0)  # writes go on, on the new owner
            writers.stop.set()
            await asyncio.gather(*tasks)
            writers.stop.clear()
            if writers.errors:
                raise BenchError(f"a writer failed during the {label}: {writers.errors[0]!r}")
            with console.status("checking every acknowledged write"):
                await check(settings, first, plan.shard, to, writers, expected)
            console.print(
                f"[green]✓[/] {label}: {sum(result.rows.values()):,} rows {result.source} → "
                f"{result.target} in {result.total_s:.1f} s, pause {result.pause_ms:.0f} ms; "
                f"{len(writers.names):,} customers and {len(writers.contacts):,} contacts "
                "written so far, all present once, on the new owner only"
            )
            figures.append(
                MoveFigures(
                    label=label,
                    source=result.source,
                    target=result.target,
                    rows=sum(result.rows.values()),
                    total_s=result.total_s,
                    copy_s=result.copy_s,
                    pause_ms=result.pause_ms,
                    held=result.held_writes,
                    deleted=result.deleted,
                    catch_up_s=paused - copied,
                    cleanup_s=ended - bar.first.get("cleanup", ended),
                    longest_write_ms=writers.longest_ms(began, ended),
                    p50_write_ms=writers.p50_ms(began, ended),
                    writes=len(writers.spans),
                    writes_during=during,
                    customers_acked=len(writers.names),
                    contacts_acked=len(writers.contacts),
                    warnings=result.warnings,
                )
            )
    finally:
        writers.stop.set()
        for manager in managers.values():
            await manager.close()
    return figures


async def check(
    settings: Settings,
    shard_map: ShardMap,
    shard: int,
    owner: str,
    writers: Writers,
    expected: dict[str, int],
) -> None:
    """Every acknowledged write exactly once, on the owner only, as last acknowledged;
    and the shard's row counts are the load's plus the writers' inserts, no more."""
    from shards.moves import shard_filter

    where = shard_filter(shard)
    for name in shard_map.server_names():
        conn = await asyncpg.connect(customer_dsn(settings, shard_map, name))
        try:
            customers = {
                r["id"]: r["name"]
                for r in await conn.fetch(f"SELECT id, name FROM customers WHERE {where}")
            }
            contacts = {r["id"] for r in await conn.fetch(f"SELECT id FROM contacts WHERE {where}")}
        finally:
            await conn.close()
        if name != owner:
            if customers or contacts:
                raise BenchError(
                    f"{name} still holds {len(customers)} customers and {len(contacts)} "
                    f"contacts of logical shard {shard}"
                )
            continue
        wrong = [cid for cid, last in writers.names.items() if customers.get(cid) != last]
        if wrong:
            raise BenchError(f"{len(wrong)} acknowledged customer writes missing or stale")
        if not writers.contacts <= contacts:
            raise BenchError(f"{len(writers.contacts - contacts)} acknowledged contacts missing")
        want = (
            expected["customers"] + len(writers.names),
            expected["contacts"] + len(writers.contacts),
        )
        if (len(customers), len(contacts)) != want:
            raise BenchError(
                f"logical shard {shard} on {owner}: {len(customers)} customers and "
                f"{len(contacts)} contacts, expected {want[0]} and {want[1]}"
            )


# -- report -----------------------------------------------------------------------------


@dataclass
class Results:
    plan: Plan
    load_at_start: float
    started: str
    load: LoadResult | None = None
    spread: Spread | None = None
    moves: list[MoveFigures] = field(default_factory=list)
    load_at_end: float = 0.0
    took_s: float = 0.0


def summary_rows(results: Results) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if results.load is not None:
        ld = results.load
        rows += [
            ("customers + contacts loaded", f"{ld.customers:,} + {ld.customers:,}"),
            ("load time (COPY)", f"{ld.seconds:.1f} s"),
            ("load throughput", f"{ld.rows_per_s:,.0f} rows/s"),
        ]
    if results.spread is not None:
        sp = results.spread
        rows += [(f"rows on {name}", f"{count:,}") for name, count in sp.rows_per_server.items()]
        shards = ", ".join(f"{n}: {c:,}" for n, c in enumerate(sp.rows_per_shard))
        rows.append(("rows per logical shard", shards))
        rows.append(("max deviation from even", f"±{sp.max_deviation_pct:.2f} %"))
    if results.moves:
        last = results.moves[-1]
        rows.append(
            (
                "writes acknowledged, all checked",
                f"{last.writes:,} ({last.customers_acked:,} customers, "
                f"{last.contacts_acked:,} contacts)",
            )
        )
    return rows


MOVE_MEASURES: tuple[tuple[str, Callable[[MoveFigures], str]], ...] = (
    ("rows moved (customers + contacts)", lambda m: f"{m.rows:,}"),
    ("total move time", lambda m: f"{m.total_s:.1f} s"),
    ("initial copy", lambda m: f"{m.copy_s:.1f} s"),
    ("catch-up before the freeze", lambda m: f"{m.catch_up_s:.1f} s"),
    ("write pause (freeze → thaw)", lambda m: f"{m.pause_ms:,.0f} ms"),
    ("writes held by the freeze", lambda m: f"{m.held}"),
    ("cleanup (drop replication, delete on source)", lambda m: f"{m.cleanup_s:.1f} s"),
    ("rows deleted from the source", lambda m: f"{m.deleted:,}"),
    ("longest write overlapping the move", lambda m: f"{m.longest_write_ms:,.0f} ms"),
    ("median write outside the move", lambda m: f"{m.p50_write_ms:.1f} ms"),
    ("writes acknowledged during the move", lambda m: f"{m.writes_during:,}"),
)


def move_header(mv: MoveFigures) -> str:
    return f"{mv.label} ({mv.source} → {mv.target})"


def results_tables(results: Results) -> list[Table]:
    summary = Table(title=f"Sharded load, {results.plan.customers:,} customers")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    for name, value in summary_rows(results):
        summary.add_row(name, value)
    moves = Table(
        title=f"Logical shard {results.plan.shard} moved under {results.plan.writers} writers"
    )
    moves.add_column("measure")
    for mv in results.moves:
        moves.add_column(move_header(mv), justify="right")
    for name, cell in MOVE_MEASURES:
        moves.add_row(name, *(cell(mv) for mv in results.moves))
    return [summary, moves]


def machine(results: Results) -> list[tuple[str, str]]:
    meminfo = Path("/proc/meminfo").read_text()
    found = re.search(r"MemTotal:\s+(\d+)", meminfo)
    kib = int(found.group(1)) if found else 0
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    pg = shutil.which("postgres") or "postgres"
    return [
        ("date", results.started),
        ("CPUs", f"{len(os.sched_getaffinity(0))} (nproc), {cpu.group(1) if cpu else 'unknown'}"),
        ("memory", f"{kib / 1024 / 1024:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        (
            "load average (1 min)",
            f"{results.load_at_start:.2f} at the start, {results.load_at_end:.2f} at the end",
        ),
        ("Python / asyncpg", f"{platform.python_version()} / {version('asyncpg')}"),
        ("PostgreSQL", _pg_version(pg)),
    ]


def _pg_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def markdown(results: Results) -> str:
    plan = results.plan
    ld, sp = results.load, results.spread
    assert ld is not None
    assert sp is not None
    quick = " (a `--quick` run)" if plan.quick else ""
    lines = [
        DOC_BEGIN,
        "## Sharded bulk load and an online logical-shard move",
        "",
        f"{plan.customers:,} customers with one contact each{quick} loaded into the "
        f"`customer` database of 2 shard servers ({LOGICAL_SHARDS} logical shards), then "
        f"logical shard {plan.shard} moved to the other server and back while "
        f"{plan.writers} writers insert and update its customers.",
        "",
        "| measure | value |",
        "|---|--:|",
        *(f"| {name} | {value} |" for name, value in summary_rows(results)),
        "",
        "| measure | " + " | ".join(move_header(mv) for mv in results.moves) + " |",
        "|---|" + "--:|" * len(results.moves),
        *(
            f"| {name} | " + " | ".join(cell(mv) for mv in results.moves) + " |"
            for name, cell in MOVE_MEASURES
        ),
        "",
    ]
    if plan.customers < DEFAULT_CUSTOMERS and not plan.quick:
        lines += [
            f"Run with {plan.customers:,} customers, not the default "
            f"{DEFAULT_CUSTOMERS:,}: the load would fit (see the throughput), but the "
            "move's cleanup would not. It deletes the shard's customers on the source, "
            "and each deleted customer fires the contacts→customers foreign-key check "
            "(`SELECT 1 FROM contacts WHERE customer_id = $1 FOR KEY SHARE`), which "
            "cannot use the only index on `contacts.customer_id` because that index is "
            "partial (`WHERE deleted_at IS NULL`): one sequential scan of the source's "
            "contacts per deleted customer, so cleanup grows with the square of the "
            "data size (see the cleanup row).",
            "",
        ]
    for mv in results.moves:
        if mv.warnings:
            lines.append(f"Warnings from the {mv.label}: {'; '.join(mv.warnings)}.")
            lines.append("")
    lines += [
        "### Method",
        "",
        "- Stack: a throwaway `LocalStack` on free ports with PostgreSQL only: a catalog "
        "and 2 shard servers, each a primary with an asynchronous streaming replica "
        "(`wal_level=logical`), migrated as `nextflow up` does. Default layout: logical "
        "shards 0-4 on shard1, 5-9 on shard2. No Redis, no Ray.",
        f"- Load: binary `COPY` (asyncpg `copy_records_to_table`) straight into each "
        f"server's `customer` database, {BATCH:,} customers and their {BATCH:,} contacts "
        "per batch and server in one transaction, both servers at once, the next batch "
        "generated in a thread meanwhile. Each customer goes to a uniformly random "
        "logical shard (what `Shards.place()` does without a key; seeded), its contact "
        "to the same one. Ids are made in Python with `shards.ids.make_id`, timestamps "
        "starting one day back and advancing 1 ms every 4096 ids of a shard, so they "
        "cannot meet ids `nextflow_id()` makes now. Every index, the contacts→customers "
        "foreign key and the streaming replicas are live during the load. Throughput is "
        "rows (customers + contacts) per second of COPY, ANALYZE excluded.",
        "- Spread: rows (customers + contacts) per logical shard counted in the "
        "databases; deviation is the largest |rows − mean| / mean.",
        f"- Move: `shards.moves.move_shard` with in-process ShardManagers "
        f"(`LocalControls`), as tests/integration/test_moves.py drives it. {plan.writers} "
        "asyncio writers loop on the moving shard through a `Shards` client with "
        "in-process managers (it reloads the map and retries once on "
        "`StaleShardMap`/`ShardMoved`): 40 % new customers, of the rest 20 % new "
        "contacts and 80 % renames, 2 ms apart. **Total** is `move_shard` from start "
        "to end (cleanup included); **initial copy** is start to the end of the "
        "logical-replication table sync; **catch-up** is from there to the freeze "
        "(the stream reaching the source's WAL position); **pause** is freeze → thaw "
        "as the move reports it (final catch-up, row count + md5 checksum of the "
        "shard's rows on both sides, the catalog flip, managers' refresh); **cleanup** "
        "drops the subscription, slot and publication and deletes the shard's rows "
        "from the source in batches; **longest write** is the slowest write "
        "that overlapped the move, as the writer saw it (retries included). After "
        "each move every acknowledged write is checked: present on the new owner with "
        "its last acknowledged name, absent from the old one, and the shard's row "
        "count equals the loaded rows plus the acknowledged inserts.",
        "",
        "### Machine",
        "",
        *(f"- {name}: {value}" for name, value in machine(results)),
        f"- the whole run took {results.took_s / 60:.1f} min",
        "",
        "### Rerun",
        "",
        "`make bench-shards` (or `.venv/bin/python bench/shard_moves.py`; `--help` for "
        "`--customers`, `--writers`, `--shard`, `--quick` (50,000 customers, docs "
        "untouched) and `--no-doc`).",
        DOC_END,
    ]
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md (or add it at the end),
    keeping everything else byte for byte."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    start, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if start != -1 and end != -1:
        text = text[:start] + section.rstrip("\n") + text[end + len(DOC_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


# -- the run ----------------------------------------------------------------------------


def run(plan: Plan) -> None:
    began = time.monotonic()
    results = Results(plan, os.getloadavg()[0], datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    root = Path(tempfile.mkdtemp(prefix="nfs-", dir="/tmp"))
    # PostgreSQL runs as `postgres` when we are root: the folder must be enterable.
    root.chmod(0o755)
    stack: LocalStack | None = None
    try:
        console.rule(f"[bold]stack in {root}")
        stack, settings = start_stack(root)
        shard_map = asyncio.run(read_map(settings))
        console.rule(f"[bold]load: {plan.customers:,} customers + {plan.customers:,} contacts")
        results.load = asyncio.run(load(settings, shard_map, plan))
        console.print(
            f"[green]✓[/] loaded {results.load.rows:,} rows in {results.load.seconds:.1f} s, "
            f"{results.load.rows_per_s:,.0f} rows/s"
        )
        results.spread = asyncio.run(spread(settings, shard_map))
        if sum(results.spread.rows_per_shard) != results.load.rows:
            raise BenchError("the databases do not hold the rows the load sent")
        console.print(
            f"[green]✓[/] spread: max deviation {results.spread.max_deviation_pct:.2f} % "
            f"from even; {results.spread.rows_per_server}"
        )
        loaded = results.load.per_shard[plan.shard]
        expected = {"customers": loaded, "contacts": loaded}
        console.rule(f"[bold]move logical shard {plan.shard} under {plan.writers} writers")
        results.moves = asyncio.run(move_under_load(settings, plan, expected))
        results.load_at_end = os.getloadavg()[0]
        results.took_s = time.monotonic() - began
        for table in results_tables(results):
            console.print(table)
        if plan.write_doc:
            write_doc(markdown(results))
            console.print(f"wrote {DOC.relative_to(REPO)}")
        console.print(f"[dim]benchmark took {results.took_s:.0f} s[/]")
    finally:
        if stack is not None:
            with console.status("stopping the stack…"):
                stack.down()
        shutil.rmtree(root, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark the sharded customer database on a throwaway PostgreSQL stack "
            "(catalog + 2 shard servers with streaming replicas, 10 logical shards): COPY "
            "N customers with one contact each, report the spread, then move one logical "
            "shard to the other server and back under concurrent writes. A full run "
            "rewrites its section of docs/benchmarks.md."
        )
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=DEFAULT_CUSTOMERS,
        metavar="N",
        help=f"customers to load, each with one contact ({DEFAULT_CUSTOMERS:,})",
    )
    parser.add_argument(
        "--writers", type=int, default=WRITERS, metavar="W", help=f"concurrent writers ({WRITERS})"
    )
    parser.add_argument(
        "--shard",
        type=int,
        default=MOVED_SHARD,
        metavar="L",
        help=f"logical shard to move, 0-{LOGICAL_SHARDS - 1} ({MOVED_SHARD})",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the placement (1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_CUSTOMERS:,} customers; docs untouched",
    )
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.customers < LOGICAL_SHARDS or args.writers < 1:
        parser.error(f"--customers must be at least {LOGICAL_SHARDS}, --writers at least 1")
    if not 0 <= args.shard < LOGICAL_SHARDS:
        parser.error(f"--shard must be 0-{LOGICAL_SHARDS - 1}")
    customers = QUICK_CUSTOMERS if args.quick else args.customers
    write = not (args.quick or args.no_doc)
    return Plan(customers, args.writers, args.shard, args.seed, write, args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
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
