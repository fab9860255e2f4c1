"""Benchmark: get one customer over gRPC (`nextflow.v1.CustomerService/GetCustomer`)
against the same read over HTTP (`GET /v1/customers/{id}`), in the same run.

Starts a throwaway stack on free ports (as bench/get_customer.py does), seeds
customers over the API, then loads one customer through each protocol in turn, at 1
and at 32 concurrent requests, alternating which protocol goes first each round.
Both paths end in the same Gateway replica (the same auth, rate limiter, handle call
to CustomerService and SELECT); the difference is the ingress protocol: HTTP/1.1 +
JSON vs HTTP/2 + protobuf. Both clients are Python asyncio clients in this process
(N keep-alive HTTP/1.1 connections; grpc.aio with one HTTP/2 channel),
so neither side gets a faster load generator. Each Serve ingress is measured on a
restarted Ray head: HAProxy (the stack's default) and Serve's proxy actor.

    .venv/bin/python bench/grpc_customer.py            # full run, rewrites its docs section
    .venv/bin/python bench/grpc_customer.py --quick    # smoke run, docs untouched
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_customer as base  # noqa: E402  (bench/ is scripts, not a package)

from cluster.cli import RichReporter  # noqa: E402
from cluster.procs import StackError  # noqa: E402
from cluster.settings import Settings, get_settings  # noqa: E402
from cluster.stack import LocalStack  # noqa: E402
from nextflow.v1 import customers_pb2, customers_pb2_grpc  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/grpc_customer.py: generated, rerun `make bench-grpc` to update -->"
DOC_END = "<!-- END bench/grpc_customer.py -->"
CONCURRENCY = (1, 32)
INGRESSES = ("haproxy", "proxy")
console = base.console


@dataclass(frozen=True)
class Plan:
    duration_s: int
    warmup_s: int
    customers: int
    rounds: int
    ingresses: tuple[str, ...]
    write_doc: bool


@dataclass(frozen=True)
class Stats:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Row:
    ingress: str
    concurrency: int
    round_no: int
    http: Stats
    grpc: Stats


async def _load(call: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> Stats:
    """`concurrency` workers calling `call` back to back for `seconds`."""
    latencies: list[float] = []
    began = time.perf_counter()
    deadline = began + seconds

    async def worker() -> None:
        while (start := time.perf_counter()) < deadline:
            await call()
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    if len(latencies) < 2:
        raise base.BenchError("too few requests completed to measure")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return Stats(len(latencies), len(latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection doing GETs: a minimal client (asyncio
    streams, Content-Length bodies), so HTTP pays no more client-side Python per
    request than grpc.aio's C core does (httpx's pool, in a first version of this
    benchmark, was itself the bottleneck at 32 connections)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def measure_http(
    url: str, token: str, customer_id: int, concurrency: int, seconds: float, warmup: float
) -> Stats:
    host, _, port = url.removeprefix("http://").partition(":")
    request = (
        f"GET /v1/customers/{customer_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    idle = [await HttpConnection.open(host, int(port)) for _ in range(concurrency)]
    try:

        async def call() -> None:
            connection = idle.pop()
            try:
                status, _ = await connection.get(request)
            finally:
                idle.append(connection)
            if status != 200:
                raise base.BenchError(f"GET /v1/customers: HTTP {status}")

        await _load(call, concurrency, warmup)
        return await _load(call, concurrency, seconds)
    finally:
        for connection in idle:
            connection.close()


async def measure_grpc(
    target: str, token: str, customer_id: int, concurrency: int, seconds: float, warmup: float
) -> Stats:
    metadata = (("authorization", f"Bearer {token}"), ("application", "customer"))
    request = customers_pb2.GetCustomerRequest(id=customer_id)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = customers_pb2_grpc.CustomerServiceStub(channel)

        async def call() -> None:
            got = await stub.GetCustomer(request, metadata=metadata, timeout=30)
            if got.id != customer_id:
                raise base.BenchError("GetCustomer returned another customer")

        await _load(call, concurrency, warmup)
        return await _load(call, concurrency, seconds)


def same_customer(settings: Settings, token: str, customer_id: int) -> None:
    """Both protocols must return the same record, or the comparison means nothing."""
    over_http = httpx.get(
        f"{settings.serve_url}/v1/customers/{customer_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if over_http.status_code != 200:
        raise base.BenchError(f"GET /v1/customers: HTTP {over_http.status_code}")
    with grpc.insecure_channel(settings.serve_grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        got = customers_pb2_grpc.CustomerServiceStub(channel).GetCustomer(
            customers_pb2.GetCustomerRequest(id=customer_id),
            metadata=(("authorization", f"Bearer {token}"), ("application", "customer")),
            timeout=30,
        )
    if (str(got.id), got.name) != (over_http.json()["id"], over_http.json()["name"]):
        raise base.BenchError("HTTP and gRPC returned different customers")


def use_ingress(ingress: str) -> Settings:
    os.environ["NEXTFLOW_SERVE_INGRESS"] = ingress
    get_settings.cache_clear()
    return get_settings()


def run(plan: Plan) -> None:
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="nfb-", dir="/tmp"))  # short: HAProxy socket paths
    root.chmod(0o755)
    grpc_port, hap_stats, hap_metrics = base.free_ports(3)
    os.environ.update(base.stack_env(root))
    os.environ.update(
        NEXTFLOW_SERVE_GRPC_PORT=str(grpc_port),
        NEXTFLOW_HAPROXY_STATS_PORT=str(hap_stats),
        NEXTFLOW_HAPROXY_METRICS_PORT=str(hap_metrics),
        NEXTFLOW_SERVE_THROUGHPUT_OPTIMIZED="true",
    )
    settings = use_ingress(plan.ingresses[0])
    stack = LocalStack(settings)
    reporter = RichReporter(console)
    rows: list[Row] = []
    try:
        console.rule(f"[bold]stack in {root}, ingress {plan.ingresses[0]}")
        stack.up(reporter)
        token = base.admin_token(settings.serve_url)
        ids = asyncio.run(base.seed_customers(settings.serve_url, token, plan.customers))
        customer_id = sorted(ids)[len(ids) // 2]
        for index, ingress in enumerate(plan.ingresses):
            if index > 0:
                console.rule(f"[bold]ingress {ingress}")
                with reporter.step("stopping the Ray head"):
                    stack.ray_head().stop()
                settings = use_ingress(ingress)
                stack = LocalStack(settings)
                with reporter.step(f"Ray head, ingress {ingress}"):
                    stack.start_ray()
                with reporter.step("Serve application"):
                    stack.deploy(reporter)
            same_customer(settings, token, customer_id)
            rows += measure_ingress(ingress, settings, token, customer_id, plan)
        console.print(table(rows))
        if plan.write_doc:
            base.write_doc_section(DOC_BEGIN, DOC_END, markdown(rows, plan, load_at_start))
            console.print(f"wrote {base.DOC.relative_to(base.REPO)}")
        console.print(f"[dim]benchmark took {time.monotonic() - started:.0f} s[/]")
    finally:
        with console.status("stopping the stack…"):
            stack.down()
        shutil.rmtree(root, ignore_errors=True)


def measure_ingress(
    ingress: str, settings: Settings, token: str, customer_id: int, plan: Plan
) -> list[Row]:
    rows = []
    # Warm both paths up first (connections, caches, whatever a first request loads),
    # at the highest concurrency.
    top = max(CONCURRENCY)
    asyncio.run(measure_http(settings.serve_url, token, customer_id, top, 1, plan.warmup_s))
    asyncio.run(measure_grpc(settings.serve_grpc_target, token, customer_id, top, 1, plan.warmup_s))
    for concurrency in CONCURRENCY:
        for round_no in range(plan.rounds):
            # Alternate which protocol goes first, so drift hits both alike.
            order = ("http", "grpc") if round_no % 2 == 0 else ("grpc", "http")
            got: dict[str, Stats] = {}
            for protocol in order:
                if protocol == "http":
                    got[protocol] = asyncio.run(
                        measure_http(
                            settings.serve_url, token, customer_id, concurrency,
                            plan.duration_s, plan.warmup_s,
                        )
                    )  # fmt: skip
                else:
                    got[protocol] = asyncio.run(
                        measure_grpc(
                            settings.serve_grpc_target, token, customer_id, concurrency,
                            plan.duration_s, plan.warmup_s,
                        )
                    )  # fmt: skip
            row = Row(ingress, concurrency, round_no + 1, got["http"], got["grpc"])
            console.print(
                f"  {ingress} c={concurrency} round {round_no + 1}: "
                f"HTTP {row.http.rps:,.0f} req/s p50 {row.http.p50_ms:.2f} ms, "
                f"gRPC {row.grpc.rps:,.0f} req/s p50 {row.grpc.p50_ms:.2f} ms"
            )
            rows.append(row)
    return rows


def _cells(row: Row) -> list[str]:
    return [
        row.ingress,
        str(row.concurrency),
        str(row.round_no),
        f"{row.http.rps:,.0f}",
        f"{row.http.p50_ms:.2f}",
        f"{row.http.p99_ms:.2f}",
        f"{row.grpc.rps:,.0f}",
        f"{row.grpc.p50_ms:.2f}",
        f"{row.grpc.p99_ms:.2f}",
        f"{row.grpc.rps / row.http.rps:.2f}x",
    ]


HEADERS = [
    "ingress", "conc", "round", "HTTP req/s", "HTTP p50 ms", "HTTP p99 ms",
    "gRPC req/s", "gRPC p50 ms", "gRPC p99 ms", "gRPC/HTTP",
]  # fmt: skip


def table(rows: Sequence[Row]) -> Table:
    out = Table(title="get one customer: gRPC vs HTTP")
    for header in HEADERS:
        out.add_column(header, justify="left" if header == "ingress" else "right")
    for row in rows:
        out.add_row(*_cells(row))
    return out


def markdown(rows: Sequence[Row], plan: Plan, load_at_start: float) -> str:
    lines = [
        DOC_BEGIN,
        "## Get one customer: gRPC vs HTTP",
        "",
        "The same read, `GetCustomer` over gRPC and `GET /v1/customers/{id}` over HTTP, in",
        "the same run, alternating which goes first. Both end in the same Gateway",
        "replica (JWT check, Redis rate limit, CustomerService handle call, one SELECT);",
        "`gRPC/HTTP` divides the gRPC run's throughput by the HTTP run's beside it.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|---|" + "--:|" * (len(HEADERS) - 1),
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    lines += ["", "Median over the rounds:", ""]
    for ingress in plan.ingresses:
        for concurrency in CONCURRENCY:
            mine = [r for r in rows if (r.ingress, r.concurrency) == (ingress, concurrency)]
            if not mine:
                continue
            http = statistics.median(r.http.rps for r in mine)
            grpc_rps = statistics.median(r.grpc.rps for r in mine)
            lines.append(
                f"- {ingress}, {concurrency} at a time: HTTP {http:,.0f} req/s "
                f"(p50 {statistics.median(r.http.p50_ms for r in mine):.2f} ms), gRPC "
                f"{grpc_rps:,.0f} req/s (p50 {statistics.median(r.grpc.p50_ms for r in mine):.2f}"
                f" ms): gRPC/HTTP {grpc_rps / http:.2f}x"
            )
    lines += [
        "",
        "### Method",
        "",
        f"- Stack: a throwaway `LocalStack` on free ports (as for the section above), "
        f"throughput-optimized mode; {plan.customers} customers created through "
        "`POST /v1/customers`, the benchmark reads one of them.",
        "- Ingress, each on a restarted Ray head: `haproxy` = `RAY_SERVE_ENABLE_HA_PROXY=1`: "
        "HAProxy listens on both the HTTP and the gRPC port and forwards to the Gateway "
        "replica's direct-ingress HTTP and gRPC (h2c) servers; `proxy` = Serve's proxy "
        "actor, which calls the replica over Ray.",
        f"- Load: Python asyncio clients in one process on the same cores as the stack: "
        f"N keep-alive HTTP/1.1 connections (a minimal asyncio-streams client: httpx's "
        f"pool was itself the bottleneck at 32 connections) and grpc.aio (one HTTP/2 "
        f"channel, N concurrent streams); N = {', '.join(map(str, CONCURRENCY))}; "
        f"{plan.warmup_s} s warm-up then {plan.duration_s} s measured per run; p50/p99 "
        "from every request's latency. Any non-OK answer fails the run.",
        "",
        "### Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in machine(load_at_start).items()]
    lines += [
        f"- grpcio: {_version('grpcio')}",
        "",
        "### Rerun",
        "",
        "    make bench-grpc     # .venv/bin/python bench/grpc_customer.py",
        DOC_END,
    ]
    return "\n".join(lines) + "\n"


def machine(load_at_start: float) -> dict[str, str]:
    """bench/get_customer.py's machine facts, without wrk's version (wrk is not used
    here and need not be installed)."""
    meminfo = Path("/proc/meminfo").read_text()
    kib = int(meminfo.split("MemTotal:")[1].split()[0])
    cpu = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPUs": f"{len(os.sched_getaffinity(0))} (nproc), "
        + (cpu[0].split(":", 1)[1].strip() if cpu else "unknown"),
        "memory": f"{kib / 1024 / 1024:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "load average (1 min)": f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
        "at the end (other work on the machine shares the cores)",
        "Python": platform.python_version(),
        "Ray": _version("ray"),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark getting one customer over gRPC against HTTP on a throwaway stack. "
            "A full run rewrites its section of docs/benchmarks.md."
        )
    )
    parser.add_argument("--duration", type=int, default=8, metavar="S", help="seconds per run")
    parser.add_argument("--warmup", type=int, default=2, metavar="S", help="warm-up seconds")
    parser.add_argument("--customers", type=int, default=500, metavar="N")
    parser.add_argument("--rounds", type=int, default=2, metavar="N", help="runs per setting")
    parser.add_argument(
        "--ingress",
        default=",".join(INGRESSES),
        metavar="LIST",
        help=f"Serve ingresses in order, from: {', '.join(INGRESSES)}",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run; docs untouched")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    chosen = tuple(i.strip() for i in args.ingress.split(",") if i.strip())
    if not chosen or set(chosen) - set(INGRESSES):
        parser.error(f"--ingress: choose from {', '.join(INGRESSES)}")
    if min(args.duration, args.warmup, args.customers, args.rounds) < 1:
        parser.error("--duration, --warmup, --customers and --rounds must be at least 1")
    if args.quick:
        return Plan(2, 1, min(args.customers, 50), 1, ("haproxy",), write_doc=False)
    return Plan(args.duration, args.warmup, args.customers, args.rounds, chosen, not args.no_doc)


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    os.environ["RAY_AUTH_MODE"] = "token"  # before Ray is first imported
    try:
        run(plan)
    except (base.BenchError, StackError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
