"""The whole local stack on one machine: PostgreSQL servers, Redis, a Ray head, Serve.

`up` is idempotent (what runs is left alone) and `down` keeps every byte of data.
Every PostgreSQL server is a primary with one streaming standby (`cluster.replication`);
`failover` promotes the standby of a dead primary.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import stat
import sys
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

from cluster import replication
from cluster.monitoring import RULES, PrometheusServer
from cluster.postgres import PG_SYSTEM_USER, PostgresServer, slot_name
from cluster.procs import StackError, port_open, run, system_user
from cluster.ray_head import RayHead, ray_env, ray_executable
from cluster.redis_server import RedisServer
from cluster.replication import CATALOG_SERVER, CatalogView, NodeStatus, ServerNodes, ShardMapRow
from cluster.settings import ServerAddress, Settings, StackSettings

SERVE_CONFIG_NAME = "serve_config.yaml"
_ENV_PREFIX = "NEXTFLOW_"
_SECRET_NAMES = ("pg_password", "jwt_secret", "secrets_key")
_SHARD_SERVER = re.compile(r"^shard([1-9][0-9]*)$")


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


@dataclass(frozen=True)
class AddedServer:
    server: str
    primary: str
    standby: str


@dataclass(frozen=True)
class FailoverResult:
    server: str
    old_primary: str
    new_primary: str
    new_address: str
    stopped_old: bool
    replayed_lsn: str | None
    promote_s: float
    total_s: float
    shard_map: list[ShardMapRow]


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
        elif isinstance(value, (tuple, list, dict)):
            value = json.dumps(value)  # how pydantic-settings reads a complex value back
        env[f"{_ENV_PREFIX}{name.upper()}"] = str(value)
    return env


# HAProxy refuses socket paths over 97 characters and Ray appends a 56-character node
# id to the ones it configures: the folder holding them must have a short path.
_HAPROXY_PATH_MAX = 97 - 56 - len("/metrics.sock")


def _dashboard_env(settings: StackSettings) -> dict[str, str]:
    """The Ray dashboard reads its metrics charts from the stack's Prometheus (running
    when the stack was started with `--monitoring`; the charts are empty otherwise)."""
    return {"RAY_PROMETHEUS_HOST": f"http://{settings.host}:{settings.prometheus_port}"}


def serve_env(settings: StackSettings) -> dict[str, str]:
    """Ray Serve's ingress switches (Ray 2.60 names) for the Ray head and `serve deploy`.
    HAProxy's files live in our Ray temp dir, so stopping our head stops it too."""
    env: dict[str, str] = {
        "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": str(settings.ingress_health_check_period_s),
        "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": str(settings.ingress_health_check_timeout_s),
    }
    if settings.serve_throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    if settings.serve_ingress == "haproxy":
        folder = settings.data_dir.absolute() / "ray" / "hap"
        if len(str(folder)) > _HAPROXY_PATH_MAX:
            raise StackError(
                f"HAProxy ingress needs a short data folder ({folder} is too long); "
                "use a shorter NEXTFLOW_DATA_DIR or NEXTFLOW_SERVE_INGRESS=proxy"
            )
        folder.mkdir(parents=True, exist_ok=True)
        env.update(
            RAY_SERVE_ENABLE_HA_PROXY="1",
            RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(folder / "haproxy.cfg"),
            RAY_SERVE_HAPROXY_SOCKET_PATH=str(folder / "admin.sock"),
            RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH=str(folder / "metrics.sock"),
            RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(folder),
            RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(folder / "server-state"),
            RAY_SERVE_HAPROXY_STATS_PORT=str(settings.haproxy_stats_port),
            RAY_SERVE_HAPROXY_METRICS_PORT=str(settings.haproxy_metrics_port),
            RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S=str(settings.ingress_client_timeout_s),
            # Ray runs this in place of HAProxy; it hardens Ray's config, then execs
            # the real binary (cluster/haproxy_guard.py).
            RAY_SERVE_HAPROXY_BINARY_PATH=str(_guard_binary()),
            NEXTFLOW_HAPROXY_HEADER_TIMEOUT_S=str(settings.ingress_header_timeout_s),
            NEXTFLOW_HAPROXY_ADMIN_HOST=settings.ingress_admin_host,
        )
    return env


def _guard_binary() -> Path:
    """`nextflow-haproxy`, beside this interpreter (the project's console script)."""
    guard = Path(sys.executable).with_name("nextflow-haproxy")
    if not guard.is_file():
        raise StackError(
            f"{guard} is missing: reinstall the project (scripts/setup.sh, or "
            "`pip install -e .`) so that its `nextflow-haproxy` command exists"
        )
    return guard


def worker_pool_env(settings: StackSettings) -> dict[str, str]:
    """Ray's worker pool for the head (read by its raylet at start): idle task workers
    kept `ray_idle_worker_keep_s`, not Ray's 1 s (cluster/settings.py says why)."""
    keep_ms = round(settings.ray_idle_worker_keep_s * 1000)
    return {"RAY_idle_worker_killing_time_threshold_ms": str(keep_ms)}


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


def render_serve_config(
    source: Path, target: Path, host: str, port: int, grpc_port: int | None = None
) -> list[str]:
    """Copy `source` with http_options.host/port (and grpc_options.port, when it has
    gRPC servicers) replaced; returns the application names."""
    try:
        config = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        raise StackError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict) or not config.get("applications"):
        raise StackError(f"{source}: not a Serve config (no `applications`)")
    http_options = config.get("http_options") or {}
    http_options.update(host=host, port=port)
    config["http_options"] = http_options
    grpc_options = config.get("grpc_options") or {}
    if grpc_port is not None and grpc_options.get("grpc_servicer_functions"):
        grpc_options["port"] = grpc_port
        config["grpc_options"] = grpc_options
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
        """Write secrets.env (mode 0600) on first use; True when it was created. A file
        from an earlier version gets the secrets it lacks (never a new password)."""
        if self.secrets_file.exists():
            self._add_missing_secrets()
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

    def close_data_dir(self) -> None:
        """Close the data folder to other local users. Ray makes its temp folders
        world-writable (0777, again at every start) and our secrets, sockets and logs
        live below it too: as root the folder becomes root:postgres 0750 (PostgreSQL,
        running as `postgres`, enters through its group), else 0700. A folder that is
        not ours alone (not owned by us, or sticky like /tmp) is left as it is."""
        folder = self.settings.data_dir
        folder.mkdir(parents=True, exist_ok=True)
        info = folder.stat()
        if info.st_uid != os.geteuid() or info.st_mode & stat.S_ISVTX:
            return
        if os.geteuid() == 0:
            os.chown(folder, 0, system_user(PG_SYSTEM_USER).pw_gid)
            folder.chmod(0o750)
        else:
            folder.chmod(0o700)

    def _add_missing_secrets(self) -> None:
        text = self.secrets_file.read_text()
        present = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line}
        missing = [
            f"{_ENV_PREFIX}{name.upper()}"
            for name in _SECRET_NAMES
            if name != "pg_password" and f"{_ENV_PREFIX}{name.upper()}" not in present
        ]
        if missing:
            with self.secrets_file.open("a") as handle:
                prefix = "" if not text or text.endswith("\n") else "\n"
                handle.write(prefix + "".join(
                    f"{key}={os.environ.get(key) or secrets.token_urlsafe(48)}\n" for key in missing
                ))  # fmt: skip

    # -- components -----------------------------------------------------------------

    def postgres_servers(self) -> list[PostgresServer]:
        """Every PostgreSQL node: each server's home node, then its replica node."""
        return [node for group in self.server_nodes() for node in group.nodes]

    def server_nodes(self, view: CatalogView | None = None) -> list[ServerNodes]:
        """Each server's two nodes; the primary is the one the catalog (`view`) names,
        else the home node (the address in settings). The catalog is always home."""
        s = self.settings
        groups = []
        for address in [s.catalog_address(), *self.shard_addresses(view)]:
            other = s.replica_address(address)
            home = self._node(address.name, address.host, address.port)
            replica = self._node(other.name, other.host, other.port)
            primary = home
            named = view.primaries.get(address.name) if view else None
            if named is not None and address.name != CATALOG_SERVER:
                found = next((n for n in (home, replica) if (n.host, n.port) == named), None)
                if found is None:
                    raise StackError(
                        f"the catalog names {named[0]}:{named[1]} as {address.name}'s primary, "
                        f"which is neither of its nodes ({home.address}, {replica.address})"
                    )
                primary = found
            groups.append(ServerNodes(address.name, home, replica, primary))
        return groups

    def shard_addresses(self, view: CatalogView | None = None) -> list[ServerAddress]:
        """The shard servers: those of the settings, plus any the catalog (`view`)
        registers or this data folder holds (`shards add-server` made them). Server
        `shardN`'s home node listens on shard_base_port + N - 1, like the settings'."""
        s = self.settings
        found = {a.name: a for a in s.shard_server_addresses()}
        names = set(view.primaries) if view else set()
        pg = s.data_dir / "pg"
        if pg.is_dir():
            names |= {p.name for p in pg.iterdir() if p.is_dir()}
        for name in names:
            match = _SHARD_SERVER.match(name)
            if match and name not in found:
                found[name] = ServerAddress(name, s.host, s.shard_base_port + int(match[1]) - 1)
        return sorted(found.values(), key=lambda a: int(a.name[len("shard") :]))

    def _node(self, name: str, host: str, port: int) -> PostgresServer:
        s = self.settings
        password = self._app_settings.pg_password.get_secret_value() if self._app_settings else ""
        return PostgresServer(
            name,
            s.data_dir / "pg" / name,
            host,
            port,
            s.pg_user,
            password,
            synchronous_standbys=s.synchronous_replicas,
        )

    def _dsn(self, node: PostgresServer, database: str = "postgres") -> str:
        return self.app_settings().dsn_for(node.host, node.port, database)

    def read_catalog(self) -> CatalogView | None:
        """The catalog's topology (None before the first migration)."""
        catalog = self.server_nodes()[0].home
        return asyncio.run(replication.read_catalog(self._dsn(catalog, "catalog")))

    def redis(self) -> RedisServer:
        return RedisServer(
            self.settings.data_dir / "redis", self.settings.host, self.settings.redis_port
        )

    def prometheus(self) -> PrometheusServer:
        s = self.settings
        haproxy = f"{s.host}:{s.haproxy_metrics_port}" if s.serve_ingress == "haproxy" else None
        return PrometheusServer(
            s.data_dir / "prometheus", s.host, s.prometheus_port, s.data_dir / "ray", haproxy
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

    def up(
        self, reporter: Reporter | None = None, deploy: bool = True, monitoring: bool = False
    ) -> None:
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
            reporter.note(
                f"serve: {self.settings.serve_url} (gRPC {self.settings.serve_grpc_target})"
            )
        with reporter.step("failover watchdog"):
            reporter.note(self.start_watchdog())
        if monitoring:
            with reporter.step("Prometheus"):
                started = self.start_monitoring()
                reporter.note(
                    f"prometheus: {'started' if started else 'already running'} on "
                    f"{self.prometheus().url} (alerts: {RULES})"
                )

    def down(self, reporter: Reporter | None = None) -> None:
        reporter = reporter or QuietReporter()
        prometheus = self.prometheus()
        if prometheus.is_running():
            with reporter.step("Prometheus"):
                prometheus.stop()
                reporter.note("prometheus: stopped")
        with reporter.step("Ray head"):
            stopped = self.ray_head().stop()
            reporter.note(f"ray: {'stopped' if stopped else 'not running'}")
        with reporter.step("Redis"):
            stopped = self.redis().stop()
            reporter.note(f"redis: {'stopped' if stopped else 'not running'}")
        with reporter.step("PostgreSQL servers"):
            nodes = self.postgres_servers()
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                for node, stopped in zip(nodes, pool.map(lambda n: n.stop(), nodes), strict=True):
                    reporter.note(f"{node.name}: {'stopped' if stopped else 'not running'}")

    def start_databases(self, reporter: Reporter | None = None) -> None:
        """Every server's primary, then its streaming standby (created by pg_basebackup
        the first time; a demoted ex-primary is rebuilt as a standby, never started).

        Standbys come up before migrations so that with synchronous replicas on, the
        migrations' commits have a standby to wait for."""
        reporter = reporter or QuietReporter()
        settings = self.app_settings(create_secrets=True)
        self.close_data_dir()
        catalog = self.server_nodes()[0]
        # The catalog first: it says which node of every other server is the primary.
        reporter.note(_bring_up_primary(catalog))
        view = self.read_catalog()
        groups = self.server_nodes(view)
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            for line in pool.map(_bring_up_primary, groups[1:]):
                reporter.note(line)

        password = settings.pg_password.get_secret_value()

        async def roles() -> None:
            await asyncio.gather(
                *(
                    replication.ensure_replication_role(self._dsn(g.primary), password)
                    for g in groups
                    if not g.primary.is_standby()
                )
            )

        asyncio.run(roles())
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            futures = [pool.submit(self._bring_up_standby, g, view, password) for g in groups]
            for future in as_completed(futures):
                reporter.note(future.result())

    def _bring_up_standby(self, group: ServerNodes, view: CatalogView | None, password: str) -> str:
        node, primary = group.standby, group.primary
        notes = []
        rebuilt = False
        if node.is_initialized() and not node.is_standby():
            # A primary the catalog no longer names (a failover happened): starting it
            # would give two primaries. Its data is kept aside; it comes back as a
            # standby of the current primary.
            if view is None:
                raise StackError(
                    f"{node.name}: holds a primary's data but the catalog cannot say which "
                    f"node of {group.server} is primary; refusing to touch it"
                )
            if node.stop(mode="fast"):
                notes.append("stopped")
            if node.kill():  # what a killed postmaster left behind holds its port
                notes.append("leftover processes killed")
            moved = node.move_aside()
            notes.append(f"demoted ex-primary moved aside to {moved.name}")
            rebuilt = True
        if not node.is_initialized():
            slot = slot_name(group.server)
            asyncio.run(replication.drop_idle_slot(self._dsn(primary), slot))
            began = time.monotonic()
            node.init_standby(primary.host, primary.port, slot, password)
            notes.append(
                f"cloned from {primary.name} by pg_basebackup in {time.monotonic() - began:.1f}s"
            )
        started = node.start()
        if rebuilt and view is not None:
            catalog = self.server_nodes()[0].home
            asyncio.run(
                replication.register_standby(self._dsn(catalog, "catalog"), group.server, node)
            )
            notes.append("registered in shard_replicas")
        what = "started" if started else "running"
        detail = f" ({'; '.join(notes)})" if notes else ""
        return f"{node.name}: {what} on {node.address} as standby of {primary.name}{detail}"

    def rebuild_standby(self, server: str) -> str:
        """Bring `server`'s standby up (after a failover: the demoted ex-primary, cloned
        again from the new primary and registered); what was done, as one line."""
        view = self.read_catalog()
        group = next((g for g in self.server_nodes(view) if g.server == server), None)
        if group is None:
            raise StackError(f"{server} is not a server of this local stack")
        password = self.app_settings().pg_password.get_secret_value()
        return self._bring_up_standby(group, view, password)

    def migrate(self, reporter: Reporter | None = None) -> None:
        """Migrate every server's current primary (standbys follow by streaming) and
        register servers and standbys in the catalog (only those not registered yet)."""
        from shards.migrate import MigrationError, migrate_all

        reporter = reporter or QuietReporter()
        settings = self.app_settings()
        try:
            groups = self.server_nodes(self.read_catalog())
            catalog, shards = groups[0], groups[1:]
            asyncio.run(
                migrate_all(
                    settings.dsn_for,
                    catalog=(catalog.server, catalog.primary.host, catalog.primary.port),
                    shard_servers=[(g.server, g.primary.host, g.primary.port) for g in shards],
                    logical_shards=settings.logical_shards,
                    progress=reporter.note,
                    replicas=[
                        (g.standby.name, g.server, g.standby.host, g.standby.port)
                        for g in groups
                        # a demoted ex-primary is registered once it is rebuilt
                        if not g.standby.is_initialized() or g.standby.is_standby()
                    ],
                )
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, MigrationError) as exc:
            raise StackError(f"migrate: {exc}") from exc

    def add_server(self, reporter: Reporter | None = None) -> AddedServer:
        """A new shard server `shardN` (N after the last), primary and streaming
        standby, migrated, then registered in the catalog (so managers never see a
        server without its schema). It owns no logical shard yet."""
        from shards.databases import SHARDED_BASE, SHARDED_DATABASES
        from shards.migrate import apply, ensure_database

        reporter = reporter or QuietReporter()
        settings = self.app_settings()
        view = self.read_catalog()
        if view is None:
            raise StackError("the catalog is not migrated yet; run `nextflow up` first")
        address = self.shard_addresses(view)[-1]
        registered = address.name in view.primaries
        if registered:
            index = int(address.name[len("shard") :]) + 1
            address = ServerAddress(f"shard{index}", address.host, address.port + 1)
        other = self.settings.replica_address(address)
        home = self._node(address.name, address.host, address.port)
        replica = self._node(other.name, other.host, other.port)
        for node in (home, replica):
            if not node.is_initialized() and port_open(node.host, node.port):
                raise StackError(
                    f"{address.name}: port {node.port} on {node.host} is in use by something "
                    "else; free it and try again"
                )
        group = ServerNodes(address.name, home, replica, home)
        reporter.note(_bring_up_primary(group))
        password = settings.pg_password.get_secret_value()
        asyncio.run(replication.ensure_replication_role(self._dsn(home), password))
        reporter.note(self._bring_up_standby(group, view, password))

        async def migrate() -> None:
            for database in SHARDED_DATABASES:
                created = await ensure_database(self._dsn(home), database)
                conn = await replication.connect(self._dsn(home, database))
                try:
                    done = await apply(conn, (SHARDED_BASE, database))
                finally:
                    await conn.close()
                what = ", ".join(done) if done else "up to date"
                reporter.note(f"{address.name}/{database}: {'created, ' if created else ''}{what}")

        asyncio.run(migrate())
        catalog = self.server_nodes()[0].home
        asyncio.run(
            replication.register_server(self._dsn(catalog, "catalog"), address.name, home, replica)
        )
        reporter.note(f"catalog: {address.name} registered with its standby {replica.name}")
        return AddedServer(address.name, home.address, replica.address)

    # -- replication ----------------------------------------------------------------

    def replication_status(
        self, view: CatalogView | None = None
    ) -> tuple[CatalogView | None, list[NodeStatus]]:
        """Every node: the role the catalog gives it, what it is, its replication lag."""
        if view is None:
            try:
                view = self.read_catalog()
            except StackError:
                view = None  # catalog down: show the configured layout
        groups = self.server_nodes(view)
        nodes = [node for group in groups for node in group.nodes]
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            running = dict(
                zip(
                    (n.name for n in nodes),
                    pool.map(lambda n: n.is_running() and n.accepts_connections(), nodes),
                    strict=True,
                )
            )
        try:
            self.app_settings()
            have_password = True
        except StackError:
            have_password = False

        async def probe_all() -> dict[str, replication.NodeProbe | None]:
            async def one(node: PostgresServer) -> replication.NodeProbe | None:
                if not running[node.name] or not have_password:
                    return None
                try:
                    return await replication.probe(self._dsn(node))
                except (StackError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    return None

            found = await asyncio.gather(*(one(n) for n in nodes))
            return {n.name: p for n, p in zip(nodes, found, strict=True)}

        probes = asyncio.run(probe_all())
        return view, replication.node_statuses(groups, probes, running)

    def failover(
        self, server: str, force: bool = False, reporter: Reporter | None = None
    ) -> FailoverResult:
        """Promote `server`'s standby and point the catalog at it.

        Refused, with nothing changed: the catalog server, an unknown server, a server
        with no registered replica or no running standby, a primary that still
        accepts connections (unless `force`: it is stopped first)."""
        reporter = reporter or QuietReporter()
        began = time.monotonic()
        if server == CATALOG_SERVER:
            raise StackError(
                "the catalog server cannot be failed over by this command: its address is "
                "configuration (NEXTFLOW_CATALOG_PORT), not catalog data; see the README, "
                "'Replication and durability', for the manual procedure"
            )
        view = self.read_catalog()
        if view is None:
            raise StackError("the catalog is not migrated yet; run `nextflow up` first")
        if server not in view.primaries:
            known = ", ".join(sorted(n for n in view.primaries if n != CATALOG_SERVER))
            raise StackError(f"unknown server {server!r} (known: {known})")
        registered = view.replicas.get(server) or []
        if not registered:
            raise StackError(f"{server} has no registered replica to promote")
        group = next((g for g in self.server_nodes(view) if g.server == server), None)
        if group is None:
            raise StackError(f"{server} is in the catalog but not a server of this local stack")
        old = group.primary
        target = registered[0]
        new = group.node_at(target.host, target.port)
        if new is None or new is old:
            raise StackError(
                f"{server}'s registered replica {target.name} ({target.host}:{target.port}) "
                "is not a node of this local stack"
            )
        answering = old.accepts_connections()
        if answering and not force:
            raise StackError(
                f"{server}'s primary {old.name} ({old.address}) is healthy (accepts "
                "connections); refusing to fail over (use --force to stop it and promote "
                f"{new.name})"
            )
        if not (new.is_running() and new.accepts_connections()):
            raise StackError(
                f"{server}'s replica {new.name} ({new.address}) is not running; nothing to promote"
            )
        state = asyncio.run(replication.probe(self._dsn(new)))

        # Fence the old primary first: once the standby is promoted it must never
        # accept writes again (the marker stops any later start until it is rebuilt).
        # One that answers (--force) is stopped cleanly; one that runs but does not
        # answer (hung) is killed: a clean stop would wait for it in vain.
        stopped_old = False
        if old.is_running():
            if answering:
                try:
                    stopped_old = old.stop(mode="fast")
                except StackError:  # stuck meanwhile: make sure nothing of it survives
                    stopped_old = old.kill() > 0
            else:
                stopped_old = old.kill() > 0
            if stopped_old:
                reporter.note(f"{old.name}: {'stopped' if answering else 'killed (hung)'}")
        # A killed postmaster's backends may linger, still holding its port.
        if leftovers := old.kill():
            reporter.note(f"{old.name}: {leftovers} leftover processes killed")
        old.mark_demoted(
            f"{server} failed over to {new.name} ({new.address}) at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}; `nextflow up` rebuilds this node "
            "as a standby"
        )

        promote_began = time.monotonic()
        if state.in_recovery:
            new.promote()
            reporter.note(f"{new.name}: promoted (replayed up to {state.replay_lsn})")
        else:
            reporter.note(f"{new.name}: already out of recovery (promoted earlier)")
        after = asyncio.run(replication.probe(self._dsn(new)))
        if after.in_recovery:
            raise StackError(f"{new.name}: still in recovery after promotion")
        promote_s = time.monotonic() - promote_began

        catalog = self.server_nodes()[0].home
        shard_map = asyncio.run(
            replication.record_failover(self._dsn(catalog, "catalog"), server, new, target.name)
        )
        reporter.note(
            f"catalog: {server} -> {new.address}; {len(shard_map)} logical shards re-versioned"
        )
        return FailoverResult(
            server=server,
            old_primary=old.name,
            new_primary=new.name,
            new_address=new.address,
            stopped_old=stopped_old,
            replayed_lsn=state.replay_lsn,
            promote_s=promote_s,
            total_s=time.monotonic() - began,
            shard_map=shard_map,
        )

    def start_redis(self) -> bool:
        return self.redis().start()

    def start_ray(self) -> bool:
        settings = self.app_settings()
        env = {
            **settings_env(settings), **serve_env(settings), **_dashboard_env(settings),
            **worker_pool_env(settings),
        }  # fmt: skip
        return self.ray_head(env=env).start()

    def start_watchdog(self) -> str:
        """The automatic failover watchdog (cluster/watchdog.py), a detached Ray actor,
        unless `failover_after_s` is 0; what it is doing, as one line."""
        settings = self.app_settings()
        if settings.failover_after_s <= 0:
            return "failover watchdog: off (NEXTFLOW_FAILOVER_AFTER_S=0)"
        # A process of its own attaches to Ray to create the actor: token auth must be
        # on before Ray is first imported, and this one may have imported it already.
        done = run(
            [sys.executable, "-m", "cluster.watchdog"],
            env=ray_env(settings_env(settings)),
            timeout=180,
            what="failover watchdog",
        )
        return done.stdout.strip().splitlines()[-1]

    def start_monitoring(self) -> bool:
        """Prometheus scraping this stack's Ray nodes, with the alert rules loaded."""
        return self.prometheus().start()

    def deploy(self, reporter: Reporter | None = None, timeout: float = 300) -> None:
        reporter = reporter or QuietReporter()
        source = find_serve_config(self.serve_config)
        apps = render_serve_config(
            source,
            self.rendered_serve_config,
            self.settings.host,
            self.settings.serve_http_port,
            self.settings.serve_grpc_port,
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
        rows = [
            ComponentStatus(f"postgres {n.node}", n.address, n.state, n.healthy, n.detail)
            for n in self.replication_status()[1]
        ]
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
        grpc_up = ray_up and port_open(s.host, s.serve_grpc_port)
        rows.append(
            ComponentStatus("serve grpc", s.serve_grpc_target, "up" if grpc_up else "down", grpc_up)
        )
        prometheus = self.prometheus()
        if prometheus.is_running():  # optional: only started by `up --monitoring`
            ready = prometheus.ready()
            state = "up" if ready else "not answering"
            rows.append(ComponentStatus("prometheus", prometheus.url, state, ready))
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


def _bring_up_primary(group: ServerNodes) -> str:
    node = group.primary
    if not node.is_initialized():
        if node is not group.home:
            raise StackError(
                f"the catalog names {node.name} ({node.address}) as {group.server}'s "
                f"primary but {node.pgdata} holds no data"
            )
        created = node.init()
    else:
        created = False
    started = node.start()
    what = "initialised, started" if created else "started" if started else "running"
    warning = " (WARNING: it is a standby; fail it over)" if node.is_standby() else ""
    return f"{node.name}: {what} on {node.address} as primary of {group.server}{warning}"


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
