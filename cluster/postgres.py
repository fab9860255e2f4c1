"""One PostgreSQL server under a folder of its own, run from the system's binaries.

Layout of `data_path`: `data/` (PGDATA), `postgres.log`, and the unix socket. When we
are root the server runs as the `postgres` system user, since PostgreSQL refuses root.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from cluster.procs import StackError, port_open, run, system_user, wait_until

PG_SYSTEM_USER = "postgres"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_CONF_NAME = "nextflow.conf"


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
    ) -> None:
        self.name = name
        self.data_path = Path(data_path).absolute()
        self.host = host
        self.port = port
        self.user = user
        self.password = password
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

    def is_initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> bool:
        """Create the cluster if it does not exist yet; True when it was created."""
        if self.is_initialized():
            return False
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
        return True

    def start(self) -> bool:
        """Start the server unless it already runs; True when it was started."""
        if not self.is_initialized():
            raise StackError(f"{self.name}: not initialised ({self.pgdata})")
        if self.is_running():
            return False
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

    def stop(self) -> bool:
        """Stop the server (fast shutdown) if it runs; True when it was stopped."""
        if not self.is_running():
            return False
        self._pg(
            "pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "90", "stop", timeout=120
        )
        return True

    def is_running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
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
            "wal_level": "replica",
            "max_wal_senders": "10",
        }
        path = self.pgdata / _CONF_NAME
        path.write_text("".join(f"{key} = '{value}'\n" for key, value in settings.items()))
        self._give_to_owner(path)

    def _give_to_owner(self, path: Path) -> None:
        path.chmod(0o600)
        if self._as_root:
            owner = system_user(PG_SYSTEM_USER)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _pg(self, tool: str, *args: str, timeout: float) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", PG_SYSTEM_USER, "--", *command]
        # cwd: the postgres user may not be allowed into our working directory.
        run(command, cwd=self.data_path, timeout=timeout, what=f"{self.name}: {tool}")


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
