"""One PostgreSQL server under a folder of its own, run from the system's binaries.

Layout of `data_path`: `data/` (PGDATA), `postgres.log`, and the unix socket. When we
are root the server runs as the `postgres` system user, since PostgreSQL refuses root.

A node is either made by `initdb` (`init`) or cloned from a running primary by
`pg_basebackup` as a streaming standby (`init_standby`); `promote` turns a standby
into a primary. A primary that lost a failover carries a `DEMOTED` marker and
refuses to start until it is rebuilt as a standby (no split brain).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

from cluster.procs import StackError, pid_alive, port_open, run, system_user, wait_until

PG_SYSTEM_USER = "postgres"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_CONF_NAME = "nextflow.conf"
_DEMOTED_MARKER = "DEMOTED"
REPLICATION_USER = "replicator"
_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


def slot_name(server: str) -> str:
    """The physical replication slot of `server`'s standby: `replica_<server>`."""
    name = "replica_" + re.sub(r"[^a-z0-9_]", "_", server.lower())
    return name[:63]


def find_bin_dir() -> Path:
    """The folder holding initdb/pg_ctl: `pg_config --bindir`, else the newest install."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = Path(run([pg_config, "--bindir"], timeout=10).stdout.strip())
        except StackError:
            bindir = None
        if bindir and (bindir / "initdb").exists():
            return bindir

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if not candidates:
        raise StackError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; run scripts/setup.sh"
        )
    return max(candidates, key=lambda p: version(p / "initdb"))


class PostgresServer:
    def __init__(
        self,
        name: str,
        data_path: Path,
        host: str,
        port: int,
        user: str,
        password: str,
        bin_dir: Path | None = None,
        synchronous_standbys: bool = False,
    ) -> None:
        self.name = name
        self.data_path = Path(data_path).absolute()
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.synchronous_standbys = synchronous_standbys
        self._bin_dir = bin_dir
        self._as_root = os.geteuid() == 0

    @property
    def pgdata(self) -> Path:
        return self.data_path / "data"

    @property
    def log_file(self) -> Path:
        return self.data_path / "postgres.log"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def is_standby(self) -> bool:
        """True when the data folder is a standby's (`standby.signal`, written by -R)."""
        return (self.pgdata / "standby.signal").exists()

    @property
    def demoted_marker(self) -> Path:
        return self.data_path / _DEMOTED_MARKER

    def is_demoted(self) -> bool:
        return self.demoted_marker.exists()

    def mark_demoted(self, reason: str) -> None:
        """Forbid starting this node until it is rebuilt as a standby (after a failover)."""
        if self.data_path.is_dir():
            self.demoted_marker.write_text(reason.rstrip() + "\n")

    def init(self) -> bool:
        """Create the cluster if it does not exist yet; True when it was created."""
        if self.is_initialized():
            return False
        self._prepare_folder()

        fd, pwfile = tempfile.mkstemp(prefix=".pw-", dir=self.data_path)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self.password + "\n")
            self._give_to_owner(Path(pwfile))
            self._pg(
                "initdb",
                "-D",
                str(self.pgdata),
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                self.user,
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                timeout=180,
            )
        finally:
            Path(pwfile).unlink(missing_ok=True)

        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{_CONF_NAME}'\n")
        if self.host not in _LOOPBACK:
            with (self.pgdata / "pg_hba.conf").open("a") as hba:
                hba.write("host    all    all    samenet    scram-sha-256\n")
                hba.write("host    replication    all    samenet    scram-sha-256\n")
        return True

    def init_standby(
        self, primary_host: str, primary_port: int, slot: str, replication_password: str
    ) -> None:
        """Clone a running primary into this (empty) node as a streaming standby.

        `pg_basebackup -R` writes `standby.signal` and a `primary_conninfo` carrying
        the password (from PGPASSWORD, given in the environment, never on a command
        line), so the standby reconnects by itself after any restart; `-C -S` creates
        the physical slot that keeps the primary's WAL until this standby has it.
        """
        if self.is_initialized():
            raise StackError(f"{self.name}: {self.pgdata} already holds a cluster")
        if not _SLOT_NAME.match(slot):
            raise StackError(f"{self.name}: not a valid replication slot name: {slot!r}")
        self._prepare_folder()
        conninfo = (
            f"host={primary_host} port={primary_port} user={REPLICATION_USER} "
            f"application_name={self.name} connect_timeout=10"
        )
        self._pg(
            "pg_basebackup",
            "-d",
            conninfo,
            "-D",
            str(self.pgdata),
            "-R",
            "-X",
            "stream",
            "-C",
            "-S",
            slot,
            "-c",
            "fast",
            "--no-password",
            timeout=1800,
            env={"PGPASSWORD": replication_password},
        )

    def move_aside(self) -> Path:
        """Rename the whole node folder to `<name>.old-<timestamp>`; returns the new path."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.data_path.with_name(f"{self.data_path.name}.old-{stamp}")
        suffix = 1
        while target.exists():
            target = self.data_path.with_name(f"{self.data_path.name}.old-{stamp}-{suffix}")
            suffix += 1
        self.data_path.rename(target)
        return target

    def start(self) -> bool:
        """Start the server unless it already runs; True when it was started."""
        if not self.is_initialized():
            raise StackError(f"{self.name}: not initialised ({self.pgdata})")
        if self.is_running():
            return False
        if self.is_demoted() and not self.is_standby():
            raise StackError(
                f"{self.name}: demoted by a failover ({self.demoted_marker}); it must be "
                "rebuilt as a standby (`nextflow up` does it), never started as a primary"
            )
        if port_open(self.host, self.port):
            raise StackError(f"{self.name}: port {self.port} on {self.host} is already in use")
        # Rewritten on every start: ports and host are configuration, not data.
        self._write_conf()
        self._pg(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "90",
            "start",
            timeout=120,
        )
        wait_until(self.accepts_connections, 30, f"{self.name} to accept connections")
        return True

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server (`fast` shutdown by default) if it runs; True when it was stopped."""
        if not self.is_running():
            return False
        self._pg(
            "pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "90", "stop", timeout=120
        )
        return True

    def kill(self) -> int:
        """Fence a node: SIGKILL every process of it (`processes`). SIGKILL needs no
        cooperation, so a hung (even a stopped) server goes too, and so do backends a
        killed postmaster left behind: none of them can acknowledge another commit or
        keep holding the port. How many were killed; returns once they are gone."""
        victims = self.processes()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(p) for p in victims), 30, f"{self.name} to die")
        return len(victims)

    def processes(self) -> list[int]:
        """The live processes of this node: every PostgreSQL process works in its data
        folder (the postmaster, its children, and orphans of a killed postmaster)."""
        target = str(self.pgdata.resolve())
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "cwd") != target:
                    continue
            except OSError:
                continue
            if pid_alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    def promote(self, timeout: float = 60) -> None:
        """`pg_ctl promote -w`: end recovery; returns once the node accepts writes."""
        self._pg(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            str(int(timeout)),
            "promote",
            timeout=timeout + 30,
        )

    def is_running(self) -> bool:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if not pid_alive(pid):  # a stale file, or a killed postmaster not reaped yet
            return False
        try:
            self._pg("pg_ctl", "-D", str(self.pgdata), "status", timeout=30)
        except StackError:
            return False
        return True

    def accepts_connections(self) -> bool:
        try:
            run(
                [
                    str(self.bin_dir / "pg_isready"),
                    "-q",
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-t",
                    "2",
                ],
                timeout=10,
            )
        except StackError:
            return False
        return True

    def _write_conf(self) -> None:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.data_path),
            "logging_collector": "off",
            "shared_buffers": "64MB",
            "max_connections": "200",
            # Streaming replication now; logical replication later moves shards.
            "wal_level": "logical",
            "max_wal_senders": "20",
            "max_replication_slots": "20",
            # A shard move runs one subscription per sharded database at once, each
            # an apply worker plus table-sync workers; the defaults (4) starve them.
            "max_worker_processes": "48",
            "max_logical_replication_workers": "32",
            "max_sync_workers_per_subscription": "2",
            "wal_keep_size": "256MB",
            "hot_standby": "on",
            "hot_standby_feedback": "on",
        }
        if self.synchronous_standbys:
            # A commit returns once one standby has the WAL (written, not yet flushed);
            # with no standby connected, commits wait.
            settings["synchronous_standby_names"] = "ANY 1 (*)"
            settings["synchronous_commit"] = "remote_write"
        else:
            settings["synchronous_commit"] = "on"
        path = self.pgdata / _CONF_NAME
        path.write_text("".join(f"{key} = '{value}'\n" for key, value in settings.items()))
        self._give_to_owner(path)

    def _give_to_owner(self, path: Path) -> None:
        path.chmod(0o600)
        if self._as_root:
            owner = system_user(PG_SYSTEM_USER)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _prepare_folder(self) -> None:
        socket_path = self.data_path / f".s.PGSQL.{self.port}"
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            raise StackError(
                f"{self.name}: folder path too long for a unix socket ({socket_path}); "
                "use a shorter data directory"
            )
        self.data_path.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            _check_traversable(self.data_path.parent, PG_SYSTEM_USER)
            owner = system_user(PG_SYSTEM_USER)
            os.chown(self.data_path, owner.pw_uid, owner.pw_gid)
        self.data_path.chmod(0o700)

    def _pg(self, tool: str, *args: str, timeout: float, env: dict[str, str] | None = None) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            # runuser without --login keeps the environment (it resets HOME, SHELL,
            # USER and LOGNAME only), so `env` reaches the tool without showing up
            # on a command line.
            command = ["runuser", "-u", PG_SYSTEM_USER, "--", *command]
        full_env = {**os.environ, **env} if env else None
        # cwd: the postgres user may not be allowed into our working directory.
        run(command, env=full_env, cwd=self.data_path, timeout=timeout, what=f"{self.name}: {tool}")


def _check_traversable(folder: Path, user: str) -> None:
    """Raise unless `user` can enter `folder` and every folder above it."""
    account = system_user(user)
    groups = set(os.getgrouplist(user, account.pw_gid))
    for path in [folder, *folder.parents]:
        info = path.stat()
        if info.st_uid == account.pw_uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid in groups:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            raise StackError(
                f"PostgreSQL runs as the `{user}` user, which cannot enter {path} "
                f"(mode {stat.filemode(info.st_mode)}); choose a NEXTFLOW_DATA_DIR it can "
                f"reach, or `chmod o+x {path}`"
            )
