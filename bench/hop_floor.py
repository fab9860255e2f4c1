"""Benchmark: what the request path's hops cost with nothing in them.

The stack's read of one customer crosses two Ray hops behind the ingress (the customer
application's ingress, which runs the pipeline and the service → ShardManager →
PostgreSQL); before issue 23 there was one more (Gateway → CustomerService). This measures the
same hops with no work of ours in them (`bench/hop_floor_app.py`: no auth, no rate
limit, no validation, no routing, the row from memory or one SELECT) against a bare
uvicorn + FastAPI app in the same run, on the stack's Serve settings (HAProxy ingress,
throughput-optimized mode, fractional CPUs). What the hops alone reach is the ceiling
of any stack built on them on this machine: `docs/benchmarks.md` compares it with the
full stack's figures and issue 9's targets.

Each target: 2 s of warm-up, then wrk for `--duration` seconds at 32 connections (and
at 1, for latency); the rounds alternate the targets' order; CPU per request by process
from /proc over each run (`bench.get_customer.stack_cpu_s`, the idle rate subtracted).

    .venv/bin/python bench/hop_floor.py            # 2 rounds, rewrites its docs section
    .venv/bin/python bench/hop_floor.py --quick    # 1 round of 3 s, docs untouched
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Token authentication (Ray 2.60's default): read when ray is imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import asyncpg  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from bench.get_customer import (  # noqa: E402
    BenchError,
    Target,
    cpu_delta,
    free_ports,
    idle_rate,
    machine,
    stack_cpu_s,
    tuned_stack,
    uvicorn_app,
    wait_for_200,
    write_doc_section,
    wrk,
)
from cluster.postgres import PostgresServer  # noqa: E402
from cluster.settings import Settings  # noqa: E402

DOC_BEGIN = "<!-- BEGIN bench/hop_floor.py: generated, rerun `make bench-floor` to update -->"
DOC_END = "<!-- END bench/hop_floor.py -->"
console = Console()


@dataclass(frozen=True)
class Route:
    key: str
    path: str
    what: str
    bare: bool = False


ROUTES = (
    Route("bare", "/noop/1", "bare app, the row from memory", bare=True),
    Route("bare db", "/db/1", "bare app, the row by SELECT (issue 9's baseline)", bare=True),
    Route("h0", "/h0/1", "ingress only (HAProxy → ingress replica)"),
    Route("h1", "/h1/1", "ingress → service (a Serve handle call)"),
    Route("h2", "/h2/1", "ingress → service → actor"),
    Route("a1 db", "/a1db/1", "ingress → actor → SELECT (the stack's read path: one Serve hop)"),
    Route("h2 db", "/h2db/1", "ingress → service → actor → SELECT (the earlier two-hop layout)"),
    Route("h2 batched", "/h2b/4/1", "h2, both hops micro-batched, up to 4 batches out"),
    Route("h2 db batched", "/h2bdb/4/1", "h2 db, both hops micro-batched, up to 4 batches out"),
    Route("h2 batched 1", "/h2b/1/1", "h2, both hops micro-batched, 1 batch out at a time"),
    Route("h2 db batched 1", "/h2bdb/1/1", "h2 db, both hops micro-batched, 1 batch out"),
)
LATENCY_KEYS = ("bare db", "h0", "a1 db", "h1", "h2", "h2 db")


@dataclass
class Run:
    key: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: dict[str, float]  # CPU microseconds per request, by process kind


# -- the servers ---------------------------------------------------------------------------


def start_postgres(root: Path, settings: Settings) -> tuple[PostgresServer, str]:
    """A throwaway PostgreSQL server (under the stack's folder, so its CPU counts) with
    the one row every path reads."""
    (port,) = free_ports(1)
    password = settings.pg_password.get_secret_value()
    server = PostgresServer("floor", root / "pg" / "floor", settings.host, port,
                            settings.pg_user, password)  # fmt: skip
    server.init()
    server.start()
    dsn = f"postgresql://{settings.pg_user}:{password}@{settings.host}:{port}/postgres"

    async def table() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS floor (
                       id bigint PRIMARY KEY, name text, email text, phone text,
                       website text, industry text, tags text[], owner_id bigint);
                   INSERT INTO floor VALUES (1, 'Customer 1', 'c1@example.com',
                       '+49 30 1234567', NULL, 'energy', '{vip}', 7)
                   ON CONFLICT DO NOTHING"""
            )
        finally:
            await conn.close()

    asyncio.run(table())
    return server, dsn


@contextmanager
def bare_app(dsn: str, log: Path) -> Iterator[str]:
    """`hop_floor_app:bare` under uvicorn, as the other benchmarks run their bare app."""
    env = {"FLOOR_DSN": dsn, "PYTHONPATH": str(REPO)}
    with uvicorn_app("hop_floor_app:bare", env, log) as url:
        yield url


def deploy(settings: Settings, dsn: str) -> None:
    """The floor app on the stack's Ray head, HTTP on the stack's Serve port."""
    import ray
    from ray import serve

    from bench.hop_floor_app import build

    ray.init(address=f"{settings.host}:{settings.ray_gcs_port}", namespace="floor",
             logging_level="ERROR", log_to_driver=False)  # fmt: skip
    serve.start(http_options={"host": settings.host, "port": settings.serve_http_port})
    serve.run(build(dsn), name="floor", route_prefix="/")


# -- measuring -----------------------------------------------------------------------------


def measure(
    target: Target, connections: int, seconds: int, root: Path, idle: dict[str, float],
    progress: Progress,
) -> tuple[float, float, float, dict[str, float]]:  # fmt: skip
    before, started = stack_cpu_s(root), time.monotonic()
    stats = wrk(target, connections, seconds, progress)
    used = cpu_delta(before, stack_cpu_s(root), idle, time.monotonic() - started)
    requests = stats.rps * seconds
    cpu = {k: 1e6 * v / requests for k, v in used.items() if k != "bench" and v > 0}
    return stats.rps, stats.p50_ms, stats.p99_ms, cpu


def kind(name: str) -> str:
    """Process kinds as the table shows them."""
    if name in ("Ingress", "Service", "Store", "postgres"):
        return name
    return "other"


def run(paths: Sequence[Route], rounds: int, seconds: int, write: bool) -> list[Run]:
    load = os.getloadavg()[0]
    root, settings, stack = tuned_stack("nff-")
    runs: list[Run] = []
    server: PostgresServer | None = None
    try:
        with console.status("PostgreSQL"):
            server, dsn = start_postgres(root, settings)
        with console.status("Ray head (HAProxy ingress, throughput-optimized)"):
            stack.start_ray()
        with console.status("Serve: the floor app"):
            deploy(settings, dsn)
        serve_url = f"http://{settings.host}:{settings.serve_http_port}"
        with bare_app(dsn, root / "bare.log") as bare_url:
            targets = {
                p.key: Target(p.key, (bare_url if p.bare else serve_url) + p.path) for p in paths
            }
            for t in targets.values():
                wait_for_200(t, 60)
            with console.status("idle CPU (10 s)"):
                idle = idle_rate(root)
            with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                          console=console) as progress:  # fmt: skip
                for r in range(rounds):
                    order = list(paths) if r % 2 == 0 else list(reversed(paths))
                    for p in order:
                        wrk(targets[p.key], 32, 2, progress)  # warm-up
                        rps, p50, p99, cpu = measure(targets[p.key], 32, seconds, root, idle,
                                                     progress)  # fmt: skip
                        runs.append(Run(p.key, 32, rps, p50, p99, cpu))
                        shares = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(
                            cpu.items(), key=lambda kv: -kv[1])[:5])  # fmt: skip
                        print(f"round {r + 1} {p.key:>15} 32 conn: {rps:8.0f} req/s "
                              f"p50 {p50:7.2f} p99 {p99:7.2f} ms; CPU us/req: "
                              f"{sum(cpu.values()):,.0f} ({shares})")  # fmt: skip
                for key in (k for k in LATENCY_KEYS if k in targets):
                    rps, p50, p99, cpu = measure(targets[key], 1, seconds, root, idle, progress)
                    runs.append(Run(key, 1, rps, p50, p99, cpu))
                    console.print(f"{key:>14} 1 conn: p50 {p50:.2f} ms")
        if write:
            write_doc_section(DOC_BEGIN, DOC_END, markdown(runs, rounds, seconds, load))
        return runs
    finally:
        with console.status("stopping"):
            try:
                import ray

                if ray.is_initialized():
                    ray.shutdown()
            finally:
                stack.ray_head().stop()
                if server is not None:
                    server.stop("immediate")
                shutil.rmtree(root, ignore_errors=True)


# -- report --------------------------------------------------------------------------------


def _median(runs: Sequence[Run], key: str, conns: int, field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs if r.key == key
                             and r.connections == conns)  # fmt: skip


def _cpu(runs: Sequence[Run], key: str) -> dict[str, float]:
    mine = [r for r in runs if r.key == key and r.connections == 32]
    kinds: dict[str, list[float]] = {}
    for r in mine:
        totals: dict[str, float] = {}
        for name, us in r.cpu_us.items():
            totals[kind(name)] = totals.get(kind(name), 0.0) + us
        for name, us in totals.items():
            kinds.setdefault(name, []).append(us)
    return {k: statistics.median(v) for k, v in kinds.items()}


def markdown(runs: Sequence[Run], rounds: int, seconds: int, load: float) -> str:
    bare = _median(runs, "bare", 32, "rps")
    bare_db = _median(runs, "bare db", 32, "rps")
    lines = [
        DOC_BEGIN,
        "## The hops alone: the ceiling of the request path (`bench/hop_floor.py`)",
        "",
        "The read path's hops with no work of ours in them (`bench/hop_floor_app.py`: no "
        "auth, no rate limit, no validation, no routing) against a bare uvicorn + FastAPI "
        "app, on the stack's Serve settings (HAProxy ingress, throughput-optimized, 0.1 CPU "
        "a replica), in the same run. Median of "
        f"{rounds} round(s) of {seconds} s at 32 connections (targets' order alternated); "
        "`vs bare db` divides by the bare app reading the row by SELECT (issue 9's "
        "baseline), `vs bare` by the bare app answering from memory.",
        "",
        "| path | what | req/s | p50 ms | p99 ms | vs bare db | vs bare | CPU us/req "
        "(ingress / service / actor / postgres / other) |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for p in ROUTES:
        rps = _median(runs, p.key, 32, "rps")
        cpu = _cpu(runs, p.key)
        total = sum(cpu.values())
        parts = " / ".join(f"{cpu.get(k, 0.0):,.0f}" for k in ("Ingress", "Service", "Store",
                                                               "postgres", "other"))  # fmt: skip
        lines.append(
            f"| {p.key} | {p.what} | {rps:,.0f} | {_median(runs, p.key, 32, 'p50_ms'):.1f} | "
            f"{_median(runs, p.key, 32, 'p99_ms'):.1f} | {rps / bare_db:.2f}x | "
            f"{rps / bare:.2f}x | {total:,.0f} ({parts}) |"
        )
    lines += ["", "At 1 connection (one run each, p50 ms): " + ", ".join(
        f"{r.key} {r.p50_ms:.2f}" for r in runs if r.connections == 1) + ".", ""]  # fmt: skip
    facts = machine(load)
    lines.append("Machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()))
    lines.append(DOC_END)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s, docs untouched")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--paths", default="", help="comma-separated keys (default: all)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="for the Ray head, e.g. RAY_SERVE_USE_GRPC_BY_DEFAULT=0 (the "
                        "stack's settings choose the ingress and throughput mode)")  # fmt: skip
    args = parser.parse_args(argv)
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    keys = [k.strip() for k in args.paths.split(",") if k.strip()]
    unknown = sorted(set(keys) - {p.key for p in ROUTES})
    if unknown:
        console.print(f"hop_floor: unknown path(s) {', '.join(unknown)}")
        return 2
    if shutil.which("wrk") is None:
        console.print("wrk not found: apt-get install -y wrk")
        return 2
    rounds, seconds = (1, 3) if args.quick else (args.rounds, args.duration)
    try:
        chosen = [p for p in ROUTES if not keys or p.key in keys]
        run(chosen, rounds, seconds, not (args.quick or args.no_doc or keys or args.env))
    except BenchError as exc:
        console.print(f"hop_floor: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
