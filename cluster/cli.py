"""`nextflow`: start, stop and inspect the local stack; deploy; create the first admin."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import asyncpg
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.status import Status
from rich.table import Table

from cluster.procs import StackError
from cluster.replication import format_bytes
from cluster.settings import Settings, StackSettings
from cluster.stack import LocalStack

if TYPE_CHECKING:
    from shards.moves import MoveProgress, MoveResult

app = typer.Typer(
    help="NextFlow local stack: PostgreSQL shards, Redis, Ray head and the Serve app.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
shards_app = typer.Typer(
    help="The PostgreSQL servers behind the shards: map, replicas, failover, moves.",
    no_args_is_help=True,
)
app.add_typer(shards_app, name="shards")
kuberay_app = typer.Typer(
    help="The Kubernetes deployment (kuberay/): render serveConfigV2, check the manifests.",
    no_args_is_help=True,
)
app.add_typer(kuberay_app, name="kuberay")
console = Console()
err_console = Console(stderr=True)

MIN_PASSWORD = 12  # as for every user (deployments/auth/schemas.py)
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Serve config (default: ./serve_config.yaml, else the repo's)."),
]


class RichReporter:
    """Shows each step with a spinner, then a tick or a cross."""

    def __init__(self, out: Console) -> None:
        self._console = out
        self._status: Status | None = None
        self._title = ""

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self._title = title
        with self._console.status(f"{escape(title)}…") as status:
            self._status = status
            try:
                yield
            except BaseException:
                self._console.print(f"[red]✗[/] {escape(title)}")
                raise
            finally:
                self._status = None
        self._console.print(f"[green]✓[/] {escape(title)}")

    def note(self, line: str) -> None:
        self._console.print(f"  [dim]{escape(line)}[/]")

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(f"{escape(self._title)}: {escape(text)}")


def _fail(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def _errors() -> Iterator[None]:
    """Expected failures become one line on stderr and exit code 1, never a traceback."""
    try:
        yield
    except StackError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        fields = ", ".join(
            f"NEXTFLOW_{'_'.join(str(p) for p in e['loc']).upper()} ({e['msg']})"
            for e in exc.errors()
        )
        _fail(f"invalid settings: {fields}")
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _fail(f"database: {exc}")
    except subprocess.SubprocessError as exc:
        _fail(str(exc))
    except yaml.YAMLError as exc:
        _fail(f"YAML: {exc}")
    except OSError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


class WatchdogAction(StrEnum):
    status = "status"
    pause = "pause"
    resume = "resume"


def _stack(config: Path | None = None) -> LocalStack:
    return LocalStack(StackSettings(), serve_config=config)


@app.command()
def up(
    config: ConfigOption = None,
    no_deploy: Annotated[bool, typer.Option("--no-deploy", help="Skip serve deploy.")] = False,
    monitoring: Annotated[
        bool,
        typer.Option(
            "--monitoring", help="Also start Prometheus (scrapes Ray, loads the alert rules)."
        ),
    ] = False,
) -> None:
    """Start PostgreSQL, migrate, start Redis and the Ray head, deploy the Serve app."""
    with _errors():
        _stack(config).up(RichReporter(console), deploy=not no_deploy, monitoring=monitoring)


@app.command()
def down() -> None:
    """Stop the Ray head, Redis and PostgreSQL (data is kept)."""
    with _errors():
        _stack().down(RichReporter(console))


@app.command()
def status() -> None:
    """Show every component; exit code 0 only when all are healthy."""
    with _errors():
        rows = _stack().status()
    table = Table(show_edge=False)
    for column in ("component", "address", "state", "detail"):
        table.add_column(column)
    for row in rows:
        colour = "green" if row.healthy else "red"
        table.add_row(
            row.component, row.address, f"[{colour}]{escape(row.state)}[/]", escape(row.detail)
        )
    console.print(table)
    raise typer.Exit(0 if all(row.healthy for row in rows) else 1)


@app.command()
def migrate() -> None:
    """Create databases and apply migrations on the running PostgreSQL servers."""
    with _errors():
        stack = _stack()
        reporter = RichReporter(console)
        with reporter.step("migrations"):
            stack.migrate(reporter)


@app.command()
def deploy(config: ConfigOption = None) -> None:
    """Render the Serve config for this stack, deploy it and wait until it runs."""
    with _errors():
        stack = _stack(config)
        reporter = RichReporter(console)
        with reporter.step("Serve application"):
            stack.deploy(reporter)


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option("--email", help="The admin's e-mail (login).")],
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Create the first admin user directly in the `auth` database."""
    email = email.strip()
    if "@" not in email:
        _fail(f"not an e-mail address: {email!r}")
    with _errors():
        settings = _stack().app_settings()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        _fail(f"the password needs at least {MIN_PASSWORD} characters")
    with _errors():
        user_id = asyncio.run(_insert_admin(settings, email, name, password))
    console.print(f"created admin {escape(email)} (id {user_id})")


async def _insert_admin(settings: Settings, email: str, name: str, password: str) -> int:
    # Imported here: only this command needs argon2 and the auth package.
    from deployments.auth import repo
    from deployments.auth.passwords import hash_password

    catalog = settings.catalog_address()
    conn = await asyncpg.connect(settings.dsn_for(catalog.host, catalog.port, "auth"))
    try:
        async with conn.transaction():
            user = await repo.create_user(
                conn, email, name, hash_password(password), "admin", team_id=None
            )
        if isinstance(user, repo.TeamProblem):
            raise StackError(user.message)
        return user.id
    except asyncpg.UniqueViolationError:
        raise StackError(f"a user with e-mail {email} already exists") from None
    finally:
        await conn.close()


@shards_app.command("status")
def shards_status() -> None:
    """The shard map, and each server's primary and standby with replication lag."""
    with _errors():
        stack = _stack()
        view = stack.read_catalog()
        if view is None:
            _fail("the catalog is not migrated yet; run `nextflow up` first")
        _, nodes = stack.replication_status(view)
    shard_table = Table(title="shard map", show_edge=False)
    for column in ("logical shard", "server", "primary", "version"):
        shard_table.add_column(column)
    for row in view.shard_map:
        host, port = view.primaries.get(row.server, ("?", 0))
        shard_table.add_row(row.shard_key, row.server, f"{host}:{port}", str(row.version))
    console.print(shard_table)
    node_table = Table(title="servers", show_edge=False)
    for column in ("server", "node", "address", "role", "state", "lag", "detail"):
        node_table.add_column(column)
    for n in nodes:
        colour = "green" if n.healthy else "red"
        lag = "" if n.lag_bytes is None else format_bytes(n.lag_bytes)
        node_table.add_row(
            n.server,
            n.node,
            n.address,
            n.role,
            f"[{colour}]{escape(n.state)}[/]",
            lag,
            escape(n.detail),
        )
    console.print(node_table)
    raise typer.Exit(0 if all(n.healthy for n in nodes) else 1)


@shards_app.command("failover")
def shards_failover(
    server: Annotated[str, typer.Argument(help="The server whose primary is lost, e.g. shard2.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Fail over even though the primary still answers (stops it)."),
    ] = False,
) -> None:
    """Promote SERVER's streaming replica, point the catalog at it, refresh its manager."""
    with _errors():
        stack = _stack()
        result = stack.failover(server, force=force, reporter=RichReporter(console))
    versions = sorted({row.version for row in result.shard_map})
    console.print(
        f"{escape(result.server)}: failed over from {escape(result.old_primary)} to "
        f"{escape(result.new_primary)} ({escape(result.new_address)}) in {result.total_s:.1f}s "
        f"(promotion {result.promote_s:.1f}s); {len(result.shard_map)} logical shards now at "
        f"version {', '.join(map(str, versions)) or '-'}"
    )
    console.print(_refresh_manager(stack, result.server))
    console.print(
        f"{escape(result.old_primary)} is fenced (DEMOTED); `nextflow up` rebuilds it as the "
        "new standby"
    )


@shards_app.command("watchdog")
def shards_watchdog(
    action: Annotated[
        WatchdogAction, typer.Argument(help="status, pause (for maintenance) or resume.")
    ] = WatchdogAction.status,
) -> None:
    """Automatic failover (`failover_after_s`): what the watchdog sees and has done.
    Paused, it keeps watching and reporting but fails nothing over."""
    with _errors():
        stack = _stack()
        settings = stack.app_settings()
        if action is not WatchdogAction.status:
            _set_watchdog_paused(settings, action is WatchdogAction.pause)
            console.print(f"automatic failover: {action.value}d")
        if settings.failover_after_s <= 0:
            console.print("the failover watchdog is off (NEXTFLOW_FAILOVER_AFTER_S=0)")
            return
        state = _watchdog_status(stack)
    if state is None:
        console.print("the failover watchdog is not running (`nextflow up` starts it)")
        raise typer.Exit(1)
    mode = "paused" if state["paused"] else "on"
    console.print(
        f"failover watchdog: {mode}; a primary silent for {state['after_s']:g}s is failed "
        f"over ({'synchronous' if state['synchronous_replicas'] else 'asynchronous'} replicas)"
    )
    table = Table("server", "primary", "silent", "state")
    for row in state["servers"]:
        silent = f"{row['unanswered_s']:.1f}s" if row["unanswered_s"] else "-"
        note = row["note"] + ("; standby rebuild pending" if row["rebuild_pending"] else "")
        table.add_row(row["server"], row["primary"], silent, escape(note))
    console.print(table)
    for event in state["failovers"]:
        outcome = (
            f"failed: {event['error']}"
            if event["error"]
            else f"{event['old_primary']} -> {event['new_primary']} in {event['took_s']}s; "
            f"standby: {event['standby'] or 'rebuild pending'}"
        )
        console.print(
            f"{event['at']} {event['server']}: silent {event['silent_s']}s, {escape(outcome)}"
        )


def _set_watchdog_paused(settings: Settings, paused: bool) -> None:
    import redis
    from redis.exceptions import RedisError

    from cluster.watchdog import PAUSED_KEY

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        if paused:
            client.set(PAUSED_KEY, "1")
        else:
            client.delete(PAUSED_KEY)
    except RedisError as exc:
        where = f"{settings.redis_host or settings.host}:{settings.redis_port}"
        raise StackError(f"redis at {where}: {exc}") from None
    finally:
        client.close()


def _watchdog_status(stack: LocalStack) -> dict[str, Any] | None:
    """What the running watchdog says (None: Ray or the watchdog not running)."""
    if not _attach_ray(stack):
        return None
    import ray
    from ray.exceptions import RayError

    from cluster.watchdog import NAME, NAMESPACE

    try:
        try:
            actor = ray.get_actor(NAME, namespace=NAMESPACE)
        except ValueError:
            return None
        try:
            state: Any = ray.get(actor.status.remote(), timeout=30)
        except RayError as exc:
            raise StackError(f"the failover watchdog does not answer: {_gist(exc)}") from None
        return cast(dict[str, Any], state)
    finally:
        ray.shutdown()


@shards_app.command("move")
def shards_move(
    logical: Annotated[int, typer.Argument(help="The logical shard to move, e.g. 3.")],
    to: Annotated[str, typer.Option("--to", help="The server to move it to, e.g. shard2.")],
) -> None:
    """Move one logical shard to another server while writes go on (a short pause of
    that shard's writes at the switch)."""
    _run_moves([(logical, to)])


@shards_app.command("rebalance")
def shards_rebalance(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show the moves it would make.")
    ] = False,
) -> None:
    """Spread the logical shards evenly over every shard server (at most one apart),
    one online move after another."""
    from shards.moves import plan_rebalance

    with _errors():
        view = _stack().read_catalog()
        if view is None:
            _fail("the catalog is not migrated yet; run `nextflow up` first")
    owner = {int(row.shard_key): row.server for row in view.shard_map}
    servers = sorted(n for n in view.primaries if n != "catalog")
    plan = plan_rebalance(owner, servers)
    if not plan:
        console.print(f"balanced: {len(owner)} logical shards over {len(servers)} servers")
        return
    table = Table(title="planned moves", show_edge=False)
    for column in ("logical shard", "from", "to"):
        table.add_column(column)
    for shard, source, target in plan:
        table.add_row(str(shard), source, target)
    console.print(table)
    if dry_run:
        return
    _run_moves([(shard, target) for shard, _, target in plan])


def _run_moves(moves: list[tuple[int, str]]) -> None:
    """Run moves one after another with progress; stop at the first that fails."""
    with _errors():
        stack = _stack()
        settings = stack.app_settings()
        view = stack.read_catalog()
        if view is None:
            _fail("the catalog is not migrated yet; run `nextflow up` first")
        try:
            attached = _attach_ray(stack)
        except StackError as exc:
            raise StackError(
                f"{exc}; without it no shard manager can hold writes, so nothing was moved"
            ) from None
    from shards.moves import MoveError, NoManagers, RayControls, move_shard
    from shards.routing import ServerSpec

    controls: Any = NoManagers()
    if attached:
        controls = RayControls(
            {name: ServerSpec(name, h, p) for name, (h, p) in view.primaries.items()}
        )
    else:
        console.print("[dim]ray head not running: no shard manager holds writes[/]")
    try:
        for shard, target in moves:
            with _errors(), _MoveBar(console, shard, target) as bar:
                try:
                    result = asyncio.run(move_shard(settings, shard, target, controls, bar.update))
                except MoveError as exc:
                    bar.stop()
                    _fail(str(exc))
            _report_move(result)
    finally:
        if attached:
            import ray

            ray.shutdown()


def _report_move(r: MoveResult) -> None:
    rows = sum(r.rows.values())
    console.print(
        f"logical shard {r.shard}: {escape(r.source)} -> {escape(r.target)} (move {r.move_id}, "
        f"map version {r.version}): {rows} rows copied in {r.copy_s:.1f}s; writes paused "
        f"{r.pause_ms:.0f} ms ({r.held_writes} held); {r.deleted} rows deleted from "
        f"{escape(r.source)}; {r.total_s:.1f}s in all"
    )
    for warning in r.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")


class _MoveBar:
    """A rich progress bar per phase of one move: rows copied of rows to copy, WAL
    caught up, rows deleted from the source."""

    _TITLES = {
        "copy": "copy rows",
        "catch-up": "catch up",
        "pause": "switch",
        "cleanup": "delete from source",
    }

    def __init__(self, out: Console, shard: int, target: str) -> None:
        self._progress = Progress(
            TextColumn(f"shard {shard} -> {escape(target)}: {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _MoveBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def stop(self) -> None:
        self._progress.stop()

    def update(self, event: MoveProgress) -> None:
        task = self._tasks.get(event.phase)
        title = self._TITLES.get(event.phase, event.phase)
        if task is None:
            task = self._progress.add_task(title, total=event.total, detail="")
            self._tasks[event.phase] = task
        self._progress.update(
            task, completed=event.done, total=event.total, detail=escape(event.detail)
        )


def _attach_ray(stack: LocalStack) -> bool:
    """Connect this process to the stack's Ray head, if it runs (False when not)."""
    if not stack.ray_head().is_running():
        return False
    os.environ["RAY_AUTH_MODE"] = "token"  # before ray is imported
    import ray

    try:
        ray.init(
            address=stack.settings.ray_address,
            namespace="nextflow",
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except Exception as exc:
        raise StackError(
            f"the Ray head runs but this process cannot attach to it ({_gist(exc)})"
        ) from None
    return True


def _gist(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


@shards_app.command("add-server")
def shards_add_server() -> None:
    """Add a shard server (a primary and its streaming replica) to the local stack,
    migrate it and register it in the catalog; it holds no logical shard until
    `shards move` or `shards rebalance` gives it some."""
    with _errors():
        stack = _stack()
        reporter = RichReporter(console)
        with reporter.step("new shard server"):
            added = stack.add_server(reporter)
    console.print(
        f"{escape(added.server)}: primary {escape(added.primary)}, standby "
        f"{escape(added.standby)}; no logical shards yet (`nextflow shards rebalance`)"
    )


def _refresh_manager(stack: LocalStack, server: str) -> str:
    """Ask `server`'s ShardManager actor to re-read its addresses, if Ray runs."""
    name = f"shard-manager:{server}"
    try:
        if not _attach_ray(stack):
            return "ray head not running: no shard manager to refresh"
    except StackError as exc:  # the failover is done; the manager finds out by itself
        return f"warning: could not refresh {name}: {exc}"
    import ray
    from ray.exceptions import RayError

    try:
        try:
            actor = ray.get_actor(name, namespace="nextflow")
        except ValueError:
            return f"{name}: no such actor yet (it will read the catalog when it starts)"
        try:
            ray.get(actor.refresh.remote(), timeout=30)
        except (AttributeError, RayError) as exc:
            return f"warning: {name}.refresh() failed: {_gist(exc)}"
        return f"{name}: refreshed"
    finally:
        ray.shutdown()


@kuberay_app.command("render")
def kuberay_render(config: ConfigOption = None) -> None:
    """Write serve_config.yaml, rendered for the cluster, into the RayService's
    serveConfigV2 (kuberay/base/rayservice.yaml)."""
    from cluster import kuberay
    from cluster.stack import find_serve_config

    with _errors():
        source = find_serve_config(config)
        try:
            changed = kuberay.render(source)
        except kuberay.KubeRayError as exc:
            _fail(str(exc))
    where = kuberay.RAYSERVICE_FILE.relative_to(kuberay.REPO_ROOT)
    console.print(f"{where}: {'rendered' if changed else 'already up to date'}")


@kuberay_app.command("check")
def kuberay_check(config: ConfigOption = None) -> None:
    """Check without a cluster: serveConfigV2 equals the rendered serve_config.yaml,
    the worker groups can hold every deployment at max_replicas, and the Ray image is
    the Ray and Python of pyproject.toml. Exit code 1 on any problem."""
    from cluster import kuberay
    from cluster.stack import find_serve_config

    with _errors():
        try:
            problems = kuberay.check(find_serve_config(config))
        except kuberay.KubeRayError as exc:
            _fail(str(exc))
    for problem in problems:
        err_console.print(f"[red]✗[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    console.print("[green]✓[/] kuberay: serveConfigV2, capacity and image pins agree")


# -- bulk data through the running API ---------------------------------------------------
UrlOption = Annotated[
    str | None, typer.Option("--url", help="API base URL (default: the local stack's).")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="NEXTFLOW_TOKEN", help="Access token or API key.")
]
EmailOption = Annotated[str | None, typer.Option("--email", help="Sign in as this user.")]
PasswordOption = Annotated[
    str | None, typer.Option("--password", envvar="NEXTFLOW_PASSWORD", help="Their password.")
]


def _client(url: str | None, token: str | None, email: str | None, password: str | None) -> Any:
    from cluster import transfer

    if email and not password and token is None:
        password = typer.prompt("Password", hide_input=True)
    base = url or StackSettings().serve_url
    return transfer.Client(base, token=token, email=email, password=password)


@app.command("import")
def import_customers(
    file: Annotated[Path, typer.Argument(help="A CSV of customers (header row first).")],
    url: UrlOption = None,
    token: TokenOption = None,
    email: EmailOption = None,
    password: PasswordOption = None,
) -> None:
    """Import customers from CSV as a job, with a progress bar; then the counts."""
    from cluster import transfer

    try:
        client = _client(url, token, email, password)
        try:
            with console.status("uploading"):
                accepted = transfer.upload(client, file)
            job = _follow(client, accepted, "import")
            result = job.get("result") or {}
            counts = ", ".join(
                f"{k} {result[k]}" for k in ("created", "updated", "unchanged", "refused", "failed")
                if k in result
            )  # fmt: skip
            if job["status"] != "succeeded":
                _fail(f"import {job['status']}: {job.get('error') or ''} {counts}".strip())
            console.print(f"[green]✓[/] imported {file}: {counts}")
            if result.get("failed"):
                dest = file.with_name(file.stem + f".errors-{accepted['job_id']}.csv")
                transfer.download(client, f"/v1/integration/jobs/{accepted['job_id']}/errors", dest)
                console.print(f"rows not imported, with line and reason: {dest}")
        finally:
            client.close()
    except transfer.TransferError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        _interrupted()


@app.command("export")
def export_records(
    kind: Annotated[str, typer.Argument(help="What to export: customers.")],
    out: Annotated[Path, typer.Argument(help="The CSV file to write.")],
    url: UrlOption = None,
    token: TokenOption = None,
    email: EmailOption = None,
    password: PasswordOption = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="A list filter as key=value, e.g. tag=vip (repeatable)."),
    ] = None,
) -> None:
    """Export records as CSV, as a job with a progress bar (formula-like cells
    neutralised); then download its file."""
    from cluster import transfer

    if kind != "customers":
        _fail(f"cannot export {kind!r}: only customers")
    params = {}
    for item in filters or []:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"--filter {item!r}: use key=value")
        params[key] = value
    try:
        client = _client(url, token, email, password)
        try:
            accepted = transfer.start_export(client, params)
            job = _follow(client, accepted, "export")
            if job["status"] != "succeeded":
                _fail(f"export {job['status']}: {job.get('error') or ''}".strip())
            with console.status("downloading"):
                size = transfer.download(client, job["result"]["file_url"], out)
        finally:
            client.close()
    except transfer.TransferError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        _interrupted()
    rows = job["result"]["rows"]
    console.print(f"[green]✓[/] {rows:,} {kind} written to {out} ({format_bytes(size)})")


def _follow(client: Any, accepted: dict[str, Any], what: str) -> dict[str, Any]:
    """Poll a job with a progress bar until it ends; its last state."""
    from cluster import transfer

    with Progress(
        TextColumn(f"{what} job {accepted['job_id']}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=False,
    ) as bar:  # fmt: skip
        task = bar.add_task(what, total=None)

        def show(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return transfer.wait(client, accepted["status_url"], show)


def _interrupted() -> NoReturn:
    err_console.print(
        "interrupted (the job goes on; cancel it with POST /v1/integration/jobs/{id}/cancel)"
    )
    raise typer.Exit(130)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
