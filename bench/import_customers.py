"""Benchmark: bulk CSV import of customers through the import job, against raw asyncpg
`COPY` of the same rows into the same logical shards, in the same run.

Starts a throwaway stack on free ports (PostgreSQL catalog + 2 shard servers with
streaming replicas, Redis, Ray, the Serve app), generates a CSV of N customers (each
with an external id), then:

1. **raw COPY**: reads the CSV with the `csv` module (no validation), places each row
   on `shard_for_key("ext:" + external_id)` (what the job does), makes ids in Python
   (`shards.ids.make_id`, as bench/shard_moves.py) and COPYs batches of 10,000 straight
   into `customers` on each shard server's primary, one connection per server, all
   servers at once while the CSV is read;
2. empties `customers`, `record_changes` and `outbox` again (TRUNCATE), so both start
   equal;
3. **the job**: `POST /v1/integration/imports/customers` (the upload is timed with it), polled until
   it succeeds: validation of every row with `CustomerCreate`, then per logical shard
   through the ShardManagers: look up which keys exist, COPY the new customers and
   their history rows, upsert the others, one `customer.imported` event per batch;
4. **re-import**: the same file again (every row unchanged, nothing written);
5. empties the tables and runs the raw COPY again: the report compares the job with
   the mean of both raw runs, since the shared machine's load drifts over minutes;
6. empties them and runs the raw COPY once more, writing each customer's "created"
   history row beside it in the same transaction: what the job's guarantees write,
   with no validation and no Ray, the most the job could reach on this machine.

    .venv/bin/python bench/import_customers.py            # 1,000,000 rows, rewrites docs
    .venv/bin/python bench/import_customers.py --quick    # 50,000 rows, docs untouched
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import csv  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from importlib.metadata import version  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bench.get_customer import (  # noqa: E402
    BenchError,
    admin_token,
    cpu_delta,
    idle_rate,
    stack_cpu_s,
    stack_env,
    write_doc_section,
)
from bench.shard_moves import DAY_MS, IdMaker, customer_dsn, read_map  # noqa: E402
from cluster.cli import RichReporter  # noqa: E402
from cluster.settings import Settings, get_settings  # noqa: E402
from cluster.stack import LocalStack  # noqa: E402
from shards.routing import ShardMap  # noqa: E402

DOC_BEGIN = (
    "<!-- BEGIN bench/import_customers.py: generated, rerun `make bench-import` to update -->"
)
DOC_END = "<!-- END bench/import_customers.py -->"
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 50_000
RAW_BATCH = 10_000
CSV_COLUMNS = ("name", "email", "phone", "industry", "tags", "external_id")
RAW_COLUMNS = ("id", "name", "email", "phone", "industry", "tags", "owner_id", "external_id")
# The audited fields among RAW_COLUMNS' values after the id, in their order.
HISTORY_FIELDS = ("name", "email", "phone", "industry", "tags", "owner_id")
HISTORY_COLUMNS = ("id", "record_type", "record_id", "action", "changes", "actor_id")
INDUSTRIES = ("software", "retail", "banking", "health", "logistics", "energy", "media")
TAGS = ("vip", "eu", "us", "smb", "enterprise", "partner")
console = Console()


@dataclass
class Results:
    rows: int = 0
    csv_bytes: int = 0
    raw_s: float = 0.0  # the mean of raw_runs
    raw_runs: list[float] = field(default_factory=list)
    # CPU seconds by kind of process (stack_cpu_s) over each raw run and the job.
    raw_cpu_runs: list[dict[str, float]] = field(default_factory=list)
    job_cpu: dict[str, float] = field(default_factory=dict)
    idle_cpu: float = 0.0  # CPU seconds per second the idle stack uses

    @property
    def raw_cpu_s(self) -> float:
        return sum(sum(run.values()) for run in self.raw_cpu_runs) / len(self.raw_cpu_runs)

    @property
    def job_cpu_s(self) -> float:
        return sum(self.job_cpu.values())

    # Raw COPY of the customers and their history rows (`raw_copy(history=True)`).
    history_s: float = 0.0
    history_cpu: dict[str, float] = field(default_factory=dict)
    upload_s: float = 0.0
    job_s: float = 0.0
    reimport_s: float = 0.0
    job_result: dict[str, Any] = field(default_factory=dict)
    reimport_result: dict[str, Any] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)


def bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )  # fmt: skip


def generate(path: Path, rows: int, seed: int) -> int:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f, bar() as progress:
        task = progress.add_task("generate CSV", total=rows)
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for i in range(rows):
            writer.writerow((
                f"Customer {i:07d}", f"c{i}@example.com", f"+49 30 {rng.randrange(10**7):07d}",
                rng.choice(INDUSTRIES), ";".join(rng.sample(TAGS, rng.randrange(3))),
                f"crm-{i:07d}",
            ))  # fmt: skip
            if i % 10_000 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=rows)
    return path.stat().st_size


# -- raw COPY ---------------------------------------------------------------------------------


def read_rows(path: Path, owner_id: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for name, email, phone, industry, tags, ext in reader:
            tag_list = [t for t in tags.split(";") if t]
            yield ext, (name, email or None, phone or None, industry or None, tag_list,
                        owner_id, ext)  # fmt: skip


async def raw_copy(
    settings: Settings, shard_map: ShardMap, path: Path, owner_id: int, history: bool = False
) -> int:
    """COPY every row into its logical shard's server, one connection and one COPY at a
    time per server, all servers at once, reading the CSV meanwhile; rows copied.
    `history`: each batch also COPYs its customers' "created" history rows (what the job
    writes with each new customer: `{field: [null, value]}` of each audited field with a
    value, the customer's id as the row's id), in the same transaction."""
    servers = shard_map.server_names()
    conns = {s: await asyncpg.connect(customer_dsn(settings, shard_map, s)) for s in servers}
    ids = IdMaker(int(time.time() * 1000) - DAY_MS, [0] * shard_map.logical_shards)
    queues: dict[str, asyncio.Queue[list[tuple[Any, ...]] | None]] = {
        s: asyncio.Queue(maxsize=2) for s in servers
    }
    pending: dict[str, list[tuple[Any, ...]]] = {s: [] for s in servers}
    total = 0

    async def copier(server: str) -> None:
        conn = conns[server]
        while (rows := await queues[server].get()) is not None:
            if not history:
                await conn.copy_records_to_table("customers", records=rows, columns=RAW_COLUMNS)
                continue
            changes = [
                (row[0], "customer", row[0], "created", orjson.dumps(
                    {c: [None, v] for c, v in zip(HISTORY_FIELDS, row[1:], strict=False)
                     if v is not None}).decode(), owner_id)
                for row in rows
            ]  # fmt: skip
            async with conn.transaction():
                await conn.copy_records_to_table("customers", records=rows, columns=RAW_COLUMNS)
                await conn.copy_records_to_table(
                    "record_changes", records=changes, columns=HISTORY_COLUMNS
                )

    copiers = [asyncio.create_task(copier(s)) for s in servers]
    try:
        for ext, row in read_rows(path, owner_id):
            shard = shard_map.shard_for_key("ext:" + ext)
            server = shard_map.server_for_shard(shard).name
            pending[server].append((ids.next(shard), *row))
            total += 1
            if len(pending[server]) >= RAW_BATCH:
                await queues[server].put(pending[server])
                pending[server] = []
        for server in servers:
            if pending[server]:
                await queues[server].put(pending[server])
            await queues[server].put(None)
        await asyncio.gather(*copiers)
    finally:
        for task in copiers:
            task.cancel()
        for conn in conns.values():
            await conn.close()
    return total


async def empty(settings: Settings, shard_map: ShardMap) -> None:
    for server in shard_map.server_names():
        conn = await asyncpg.connect(customer_dsn(settings, shard_map, server))
        try:
            await conn.execute("TRUNCATE customers, record_changes, outbox CASCADE")
            await conn.execute("VACUUM ANALYZE customers")
        finally:
            await conn.close()


# -- the job ----------------------------------------------------------------------------------


def run_job(
    base: str, token: str, path: Path, rows: int, label: str
) -> tuple[float, float, dict[str, Any]]:
    """(upload seconds, total seconds, result) of one import job."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=600) as client, bar() as progress:
        task = progress.add_task(label, total=rows)
        started = time.monotonic()
        with path.open("rb") as f:
            answer = client.post("/v1/integration/imports/customers", content=f,
                                 headers={**headers, "Content-Type": "text/csv"})  # fmt: skip
        uploaded = time.monotonic() - started
        if answer.status_code != 202:
            raise BenchError(f"import: HTTP {answer.status_code}: {answer.text[:300]}")
        status_url = answer.json()["status_url"]
        while True:
            job = client.get(status_url, headers=headers).json()
            progress.update(task, completed=job["progress"]["done"])
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - started
    if job["status"] != "succeeded":
        raise BenchError(f"import job {job['status']}: {job.get('error')}")
    return uploaded, elapsed, job["result"]


# -- report -----------------------------------------------------------------------------------


def cpu_text(kinds: dict[str, float], rows: int) -> str:
    """`kind us/row` for the kinds that used at least 0.1 us per row, largest first."""
    per_row = sorted(((v * 1e6 / rows, k) for k, v in kinds.items()), reverse=True)
    return ", ".join(f"{k} {us:.1f}" for us, k in per_row if us >= 0.1)


def markdown(r: Results, quick: bool) -> str:
    raw_rate = r.rows / r.raw_s
    raw_cpu = r.raw_cpu_s
    job_rate = r.rows / r.job_s
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    res = r.job_result
    again = r.reimport_result
    return "\n".join([
        DOC_BEGIN,
        "## Bulk CSV import of customers (`bench/import_customers.py`)",
        "",
        f"{r.rows:,} customers from one CSV ({r.csv_bytes / 1e6:.0f} MB), each with an external "
        "id, onto 2 shard servers (10 logical shards, streaming replicas on). Both loads put "
        "the same rows on the same logical shards (`ext:` + external id); the tables are "
        "emptied between them.",
        "",
        "| load | seconds | rows/s | vs raw COPY |",
        "| --- | ---: | ---: | ---: |",
        f"| raw asyncpg `COPY` into `customers` (CSV read, no validation, ids made in Python; "
        f"mean of the runs before and after the job: "
        f"{', '.join(f'{x:.1f}' for x in r.raw_runs)} s) "
        f"| {r.raw_s:.1f} | {raw_rate:,.0f} | 1.00 |",
        f"| raw asyncpg `COPY` into `customers` and `record_changes`: the same, with each "
        f"customer's \"created\" history row as the job writes it, in the same transaction "
        f"(what the job's guarantees write, with nothing else) "
        f"| {r.history_s:.1f} | {r.rows / r.history_s:,.0f} | {r.raw_s / r.history_s:.2f} |",
        f"| import job: upload + validate + look up keys + COPY new rows and their history "
        f"| {r.job_s:.1f} | {job_rate:,.0f} | **{job_rate / raw_rate:.2f}** |",
        f"| the same file again (all unchanged) | {r.reimport_s:.1f} "
        f"| {r.rows / r.reimport_s:,.0f} | {r.rows / r.reimport_s / raw_rate:.2f} |",
        "",
        "CPU time, which the shared machine's load does not change (every process of the "
        "stack and the benchmark's own, from /proc, less what the idle stack uses in the "
        f"same time: {r.idle_cpu:.2f} CPU seconds per second): raw COPY "
        f"{raw_cpu * 1e6 / r.rows:.1f} us per row, the job {r.job_cpu_s * 1e6 / r.rows:.1f} "
        f"us per row: the job needs **{r.job_cpu_s / raw_cpu:.2f}x** the CPU of raw COPY "
        f"(a CPU-bound 2-core machine would run it at about {raw_cpu / r.job_cpu_s:.2f}x "
        "raw COPY's rate); raw COPY with the history rows "
        f"{sum(r.history_cpu.values()) * 1e6 / r.rows:.1f} us per row "
        f"({sum(r.history_cpu.values()) / raw_cpu:.2f}x). Per row, in us, by process: raw "
        f"COPY {cpu_text(r.raw_cpu_runs[-1], r.rows)}; raw COPY with history rows "
        f"{cpu_text(r.history_cpu, r.rows)}; the job {cpu_text(r.job_cpu, r.rows)}. "
        "PostgreSQL by what its processes do: `pg backends` run the queries, `pg replay` "
        "applies WAL on the standbys, `pg wal stream` sends and receives it, `pg writes` "
        "are the checkpointer and background writers, and `pg postmaster` holds the CPU of "
        "children that exited (the raw COPY's own connections, autovacuum workers).",
        "",
        "While the job runs, the search index and the duplicate keys wait (docs/ai.md, "
        "docs/api.md: their backlogs take an import's records after it; this benchmark's "
        "stack leaves both off, since a million rows' embeddings and keys take far longer "
        "on 2 cores than the import, and would run into the raw COPY measured after it).",
        "",
        f"The job: upload {r.upload_s:.1f} s; created {res.get('created', 0):,}, "
        f"updated {res.get('updated', 0):,}, failed {res.get('failed', 0):,}. "
        f"Re-import: created {again.get('created', 0):,}, updated {again.get('updated', 0):,}, "
        f"unchanged {again.get('unchanged', 0):,}. Target: the job at least 0.5x raw COPY.",
        "",
        f"Machine: {len(os.sched_getaffinity(0))} CPUs ({cpu}), Python "
        f"{platform.python_version()}, Ray {version('ray')}, asyncpg {version('asyncpg')}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) "
        + ", ".join(f"{x:.2f}" for x in r.load)
        + " (start, after the first raw COPY, after the re-import): other work shares "
        "the cores."
        + (" Quick run." if quick else ""),
        "",
        DOC_END,
    ])  # fmt: skip


def run(rows: int, seed: int, write_doc: bool) -> Results:
    r = Results(rows=rows, load=[os.getloadavg()[0]])
    root = Path(tempfile.mkdtemp(prefix="nfi-", dir="/tmp"))
    root.chmod(0o755)
    stack: LocalStack | None = None
    try:
        os.environ.update(stack_env(root))
        # The search backlog indexes imported records after the import (not during
        # it, docs/ai.md); on 2 cores embedding a million rows takes far longer than
        # the import, and would run into the raw COPY measured after the job.
        os.environ["NEXTFLOW_AI_EMBED_BACKLOG_INTERVAL_S"] = "0"
        # Likewise the duplicate keys of the imported customers (docs/api.md "Likely
        # duplicates"), written after the import.
        os.environ["NEXTFLOW_DUPLICATE_KEYS_BACKLOG_INTERVAL_S"] = "0"
        get_settings.cache_clear()
        settings = get_settings()
        stack = LocalStack(settings)
        console.rule(f"[bold]stack in {root}")
        stack.up(RichReporter(console))
        token = admin_token(settings.serve_url)
        me = httpx.get(f"{settings.serve_url}/v1/auth/me",
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
        owner_id = int(me.json()["id"]) if me.status_code == 200 else None
        if owner_id is None:
            raise BenchError(f"GET /v1/auth/me: HTTP {me.status_code}")

        path = root / "customers.csv"
        r.csv_bytes = generate(path, rows, seed)
        shard_map = asyncio.run(read_map(settings))

        def raw(history: bool = False) -> float:
            what = "raw COPY with history rows" if history else "raw COPY"
            with console.status(f"{what}…"):
                started, cpu = time.monotonic(), stack_cpu_s(root, True)
                copied = asyncio.run(raw_copy(settings, shard_map, path, owner_id, history))
                elapsed = time.monotonic() - started
                used = cpu_delta(cpu, stack_cpu_s(root, True), idle, elapsed)
            if history:
                r.history_cpu = used
            else:
                r.raw_cpu_runs.append(used)
            console.print(f"{what}: {copied:,} rows in {elapsed:.1f} s "
                          f"({copied / elapsed:,.0f} rows/s)")  # fmt: skip
            with console.status("emptying the tables…"):
                asyncio.run(empty(settings, shard_map))
            return elapsed

        with console.status("measuring the idle stack's CPU use (10 s)…"):
            idle = idle_rate(root, pg_roles=True)
        r.idle_cpu = sum(idle.values())
        # Raw COPY before and after the job, the tables emptied after each: the machine
        # is shared, and its load drifts over minutes.
        r.raw_runs.append(raw())
        r.load.append(os.getloadavg()[0])
        cpu = stack_cpu_s(root, True)
        r.upload_s, r.job_s, r.job_result = run_job(
            settings.serve_url, token, path, rows, "import job"
        )
        r.job_cpu = cpu_delta(cpu, stack_cpu_s(root, True), idle, r.job_s)
        console.print(f"job: {rows:,} rows in {r.job_s:.1f} s ({rows / r.job_s:,.0f} rows/s), "
                      f"{r.job_result}")  # fmt: skip
        _, r.reimport_s, r.reimport_result = run_job(
            settings.serve_url, token, path, rows, "re-import"
        )
        console.print(f"re-import: {r.reimport_s:.1f} s, {r.reimport_result}")
        r.load.append(os.getloadavg()[0])
        with console.status("emptying the tables…"):
            asyncio.run(empty(settings, shard_map))
        r.raw_runs.append(raw())
        r.raw_s = sum(r.raw_runs) / len(r.raw_runs)
        # What the job's guarantees write, with nothing else: no validation, no Ray.
        r.history_s = raw(history=True)
        console.print(
            f"job vs raw COPY (mean of {len(r.raw_runs)}): {r.raw_s / r.job_s:.2f}x; "
            f"CPU seconds: raw {r.raw_cpu_s:.1f}, job {r.job_cpu_s:.1f}; the job's by process: "
            + cpu_text(r.job_cpu, r.rows)
            + "; the last raw COPY's: "
            + cpu_text(r.raw_cpu_runs[-1], r.rows)
            + f"; raw COPY with history rows {r.raw_s / r.history_s:.2f}x, CPU "
            + f"{sum(r.history_cpu.values()):.1f} s: "
            + cpu_text(r.history_cpu, r.rows)
        )
        r.load.append(os.getloadavg()[0])
        if write_doc:
            write_doc_section(DOC_BEGIN, DOC_END, markdown(r, rows < DEFAULT_ROWS))
            console.print("wrote docs/benchmarks.md")
        return r
    finally:
        if stack is not None:
            with console.status("stopping the stack…"):
                stack.down()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows, no docs")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    try:
        run(rows, args.seed, write_doc=not (args.quick or args.no_doc))
    except BenchError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
