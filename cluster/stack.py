"""The whole local stack on one machine: PostgreSQL servers, Redis, a Ray head, Serve.

`up` is idempotent (what runs is left alone) and `down` keeps every byte of data.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import yaml
from pydantic import SecretStr

from cluster.postgres import PostgresServer
from cluster.procs import StackError, port_open, run
from cluster.ray_head import RayHead, ray_env, ray_executable
from cluster.redis_server import RedisServer
from cluster.settings import Settings, StackSettings

SERVE_CONFIG_NAME = "serve_config.yaml"
_ENV_PREFIX = "NEXTFLOW_"
_SECRET_NAMES = ("pg_password", "jwt_secret")


class Reporter(Protocol):
    def step(self, title: str) -> AbstractContextManager[None]:
        """Surrounds one long step (a spinner in the CLI)."""

    def note(self, line: str) -> None:
        """A line worth keeping on screen."""

    def update(self, text: str) -> None:
        """Transient progress of the current step."""


class QuietReporter:
    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        yield

    def note(self, line: str) -> None:
        pass

    def update(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class ComponentStatus:
    component: str
    address: str
    state: str
    healthy: bool
    detail: str = ""


def settings_env(settings: StackSettings) -> dict[str, str]:
    """Every setting as a `NEXTFLOW_*` variable, secrets included, for Ray's workers."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            # Workers run in another working directory.
            value = value.absolute()
        env[f"{_ENV_PREFIX}{name.upper()}"] = str(value)
    return env


def find_serve_config(option: Path | None = None) -> Path:
    """`--config`, else ./serve_config.yaml, else the one at the repository root."""
    if option is not None:
        if not option.is_file():
            raise StackError(f"serve config not found: {option}")
        return option
    repo_root = Path(__file__).parents[1]
    for candidate in (Path.cwd() / SERVE_CONFIG_NAME, repo_root / SERVE_CONFIG_NAME):
        if candidate.is_file():
            return candidate
    raise StackError(f"{SERVE_CONFIG_NAME} not found; pass --config PATH")


def render_serve_config(source: Path, target: Path, host: str, port: int) -> list[str]:
    """Copy `source` with http_options.host/port replaced; returns the application names."""
    try:
        config = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        raise StackError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict) or not config.get("applications"):
        raise StackError(f"{source}: not a Serve config (no `applications`)")
    http_options = config.get("http_options") or {}
    http_options.update(host=host, port=port)
    config["http_options"] = http_options
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return [str(app["name"]) for app in config["applications"]]


class LocalStack:
    def __init__(self, settings: StackSettings, serve_config: Path | None = None) -> None:
        self.settings = settings
        self.serve_config = serve_config
        self._app_settings = settings if isinstance(settings, Settings) else None

    @property
    def secrets_file(self) -> Path:
        return self.settings.secrets_file

    @property
    def rendered_serve_config(self) -> Path:
        return self.settings.data_dir / "serve_config.rendered.yaml"

    # -- settings and secrets -------------------------------------------------------

    def app_settings(self, create_secrets: bool = False) -> Settings:
        """The full settings, secrets read from secrets.env (real env vars win)."""
        if self._app_settings is None:
            if create_secrets:
                self.ensure_secrets()
            elif not self.secrets_file.exists() and not _secrets_in_env():
                raise StackError(f"{self.secrets_file} not found; run `nextflow up` first")
            self._app_settings = Settings(_env_file=self.secrets_file)  # type: ignore[call-arg]
        return self._app_settings

    def ensure_secrets(self) -> bool:
        """Write secrets.env (mode 0600) on first use; True when it was created."""
        if self.secrets_file.exists():
            return False
        existing = [s.name for s in self.postgres_servers() if s.is_initialized()]
        if existing and "NEXTFLOW_PG_PASSWORD" not in os.environ:
            raise StackError(
                f"{self.secrets_file} is missing but PostgreSQL data exists for "
                f"{', '.join(existing)}; restore the file or remove {self.settings.data_dir}/pg"
            )
        values = {}
        for name in _SECRET_NAMES:
            key = f"{_ENV_PREFIX}{name.upper()}"
            # A value given in the environment becomes the stored one, so the servers
            # are initialised with the password the application will use.
            values[key] = os.environ.get(key) or secrets.token_urlsafe(48)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{key}={value}\n" for key, value in values.items()))
        return True

    # -- components -----------------------------------------------------------------

    def postgres_servers(self) -> list[PostgresServer]:
        s = self.settings
        password = self._app_settings.pg_password.get_secret_value() if self._app_settings else ""
        return [
            PostgresServer(a.name, s.data_dir / "pg" / a.name, a.host, a.port, s.pg_user, password)
            for a in [s.catalog_address(), *s.shard_server_addresses()]
        ]

    def redis(self) -> RedisServer:
        return RedisServer(
            self.settings.data_dir / "redis", self.settings.host, self.settings.redis_port
        )

    def ray_head(self, env: dict[str, str] | None = None) -> RayHead:
        s = self.settings
        return RayHead(
            s.data_dir / "ray",
            s.host,
            gcs_port=s.ray_gcs_port,
            dashboard_port=s.ray_dashboard_port,
            client_port=s.ray_client_port,
            dashboard_agent_port=s.ray_dashboard_agent_port,
            metrics_port=s.ray_metrics_port,
            resources={"ai": s.ai_resource},
            num_cpus=s.ray_num_cpus,
            env=env,
        )

    # -- up / down --------------------------------------------------------------------

    def up(self, reporter: Reporter | None = None, deploy: bool = True) -> None:
        reporter = reporter or QuietReporter()
        with reporter.step("secrets"):
            # Settings handed in whole (tests) carry their own secrets: no file then.
            if self._app_settings is None and self.ensure_secrets():
                reporter.note(f"secrets: generated {self.secrets_file}")
            self.app_settings()
        with reporter.step("PostgreSQL servers"):
            self.start_databases(reporter)
        with reporter.step("migrations"):
            self.migrate(reporter)
        with reporter.step("Redis"):
            started = self.start_redis()
            reporter.note(
                f"redis: {'started' if started else 'already running'} on {self.settings.redis_url}"
            )
        with reporter.step("Ray head"):
            started = self.start_ray()
            reporter.note(
                f"ray: {'started' if started else 'already running'}; dashboard "
                f"{self.settings.dashboard_url}"
            )
        if deploy:
            with reporter.step("Serve application"):
                self.deploy(reporter)
            reporter.note(f"serve: {self.settings.serve_url}")

    def down(self, reporter: Reporter | None = None) -> None:
        reporter = reporter or QuietReporter()
        with reporter.step("Ray head"):
            stopped = self.ray_head().stop()
            reporter.note(f"ray: {'stopped' if stopped else 'not running'}")
        with reporter.step("Redis"):
            stopped = self.redis().stop()
            reporter.note(f"redis: {'stopped' if stopped else 'not running'}")
        with reporter.step("PostgreSQL servers"):
            for server in self.postgres_servers():
                stopped = server.stop()
                reporter.note(f"{server.name}: {'stopped' if stopped else 'not running'}")

    def start_databases(self, reporter: Reporter | None = None) -> None:
        reporter = reporter or QuietReporter()
        self.app_settings(create_secrets=True)
        servers = self.postgres_servers()

        def bring_up(server: PostgresServer) -> str:
            created = server.init()
            started = server.start()
            what = "initialised, started" if created else "started" if started else "running"
            return f"{server.name}: {what} on {server.host}:{server.port}"

        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            futures = [pool.submit(bring_up, server) for server in servers]
            for future in as_completed(futures):
                reporter.note(future.result())

    def migrate(self, reporter: Reporter | None = None) -> None:
        from shards.migrate import MigrationError, migrate_all

        reporter = reporter or QuietReporter()
        settings = self.app_settings()
        catalog = settings.catalog_address()
        try:
            asyncio.run(
                migrate_all(
                    settings.dsn_for,
                    catalog=(catalog.name, catalog.host, catalog.port),
                    shard_servers=[
                        (a.name, a.host, a.port) for a in settings.shard_server_addresses()
                    ],
                    logical_shards=settings.logical_shards,
                    progress=reporter.note,
                )
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, MigrationError) as exc:
            raise StackError(f"migrate: {exc}") from exc

    def start_redis(self) -> bool:
        return self.redis().start()

    def start_ray(self) -> bool:
        return self.ray_head(env=settings_env(self.app_settings())).start()

    def deploy(self, reporter: Reporter | None = None, timeout: float = 300) -> None:
        reporter = reporter or QuietReporter()
        source = find_serve_config(self.serve_config)
        apps = render_serve_config(
            source, self.rendered_serve_config, self.settings.host, self.settings.serve_http_port
        )
        run(
            [
                ray_executable("serve"),
                "deploy",
                str(self.rendered_serve_config),
                "--address",
                self.settings.dashboard_url,
            ],
            env=ray_env(),
            timeout=120,
            what="serve deploy",
        )
        reporter.note(f"serve: deployed {source} ({', '.join(apps)})")
        deadline = time.monotonic() + timeout
        while True:
            states = self.serve_status().get("applications") or {}
            pending = []
            for name in apps:
                app = states.get(name) or {}
                status = app.get("status", "NOT_STARTED")
                if status == "DEPLOY_FAILED":
                    raise StackError(
                        f"serve application `{name}` failed: {_failure(app)} "
                        f"(logs: {self.settings.data_dir / 'ray/session_latest/logs/serve'})"
                    )
                if status != "RUNNING":
                    pending.append(f"{name} {status} ({_app_progress(app)})")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackError(f"serve: not RUNNING after {timeout:.0f}s: {'; '.join(pending)}")
            reporter.update("; ".join(pending))
            time.sleep(2)

    def serve_status(self) -> dict[str, Any]:
        done = run(
            [ray_executable("serve"), "status", "--address", self.settings.dashboard_url],
            env=ray_env(),
            timeout=60,
            what="serve status",
        )
        try:
            status = yaml.safe_load(done.stdout)
        except yaml.YAMLError as exc:
            raise StackError(f"serve status: unreadable output: {exc}") from exc
        return status if isinstance(status, dict) else {}

    # -- status -----------------------------------------------------------------------

    def status(self) -> list[ComponentStatus]:
        s = self.settings
        rows = []
        for server in self.postgres_servers():
            running = server.is_running()
            accepting = running and server.accepts_connections()
            state = "stopped" if not running else "accepting" if accepting else "not accepting"
            rows.append(
                ComponentStatus(
                    f"postgres {server.name}", f"{server.host}:{server.port}", state, accepting
                )
            )
        redis = self.redis()
        running = redis.is_running()
        answering = running and redis.ping()
        state = "stopped" if not running else "running" if answering else "not answering"
        rows.append(ComponentStatus("redis", f"{s.host}:{s.redis_port}", state, answering))

        ray_up = self.ray_head().is_running()
        rows.append(
            ComponentStatus("ray head", s.ray_address, "running" if ray_up else "stopped", ray_up)
        )
        dashboard_up = ray_up and port_open("127.0.0.1", s.ray_dashboard_port)
        rows.append(
            ComponentStatus(
                "ray dashboard", s.dashboard_url, "up" if dashboard_up else "down", dashboard_up
            )
        )
        rows += self._serve_rows(dashboard_up)
        http_up = ray_up and port_open(s.host, s.serve_http_port)
        rows.append(
            ComponentStatus("serve http", s.serve_url, "up" if http_up else "down", http_up)
        )
        return rows

    def _serve_rows(self, reachable: bool) -> list[ComponentStatus]:
        if not reachable:
            return [ComponentStatus("serve app", "-", "unknown", False, "Ray is not running")]
        try:
            apps = self.serve_status().get("applications") or {}
        except StackError as exc:
            return [ComponentStatus("serve app", "-", "unknown", False, str(exc))]
        names = list(apps)
        if not names:
            return [ComponentStatus("serve app", "-", "NOT_STARTED", False, "nothing deployed")]
        rows = []
        for name in names:
            app = apps[name] or {}
            status = str(app.get("status", "UNKNOWN"))
            rows.append(
                ComponentStatus(
                    f"serve app {name}",
                    "-",
                    status,
                    status == "RUNNING",
                    _gist(app.get("message")),
                )
            )
            for deployment, info in (app.get("deployments") or {}).items():
                info = info or {}
                dstatus = str(info.get("status", "UNKNOWN"))
                detail = _replica_counts(info)
                if info.get("message"):
                    detail += f"; {_gist(info['message'])}"
                rows.append(
                    ComponentStatus(f"  {deployment}", "-", dstatus, dstatus == "HEALTHY", detail)
                )
        return rows


def _replica_counts(deployment: dict[str, Any]) -> str:
    states = deployment.get("replica_states") or {}
    return ", ".join(f"{state} {count}" for state, count in states.items()) or "no replicas"


def _app_progress(app: dict[str, Any]) -> str:
    deployments = app.get("deployments") or {}
    return (
        "; ".join(f"{name}: {_replica_counts(info or {})}" for name, info in deployments.items())
        or "no deployments yet"
    )


def _gist(message: object) -> str:
    """The last line of a Serve message; they carry whole tracebacks."""
    lines = str(message or "").strip().splitlines()
    return lines[-1] if lines else ""


def _failure(app: dict[str, Any]) -> str:
    gists = [_gist(app.get("message"))]
    for name, info in (app.get("deployments") or {}).items():
        info = info or {}
        if info.get("status") != "HEALTHY" and info.get("message"):
            gists.append(f"{name}: {_gist(info['message'])}")
    return "; ".join(g for g in gists if g) or "no message"


def _secrets_in_env() -> bool:
    return all(f"{_ENV_PREFIX}{name.upper()}" in os.environ for name in _SECRET_NAMES)
