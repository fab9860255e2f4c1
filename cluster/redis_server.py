"""One Redis server under a folder of its own; the append-only file keeps data across restarts."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from cluster.procs import (
    StackError,
    pid_alive,
    port_open,
    read_pid,
    require_executable,
    run,
    wait_until,
)

_HINT = "install redis-server (scripts/setup.sh)"


class RedisServer:
    def __init__(self, data_path: Path, host: str, port: int) -> None:
        self.data_path = Path(data_path).absolute()
        self.host = host
        self.port = port

    @property
    def pid_file(self) -> Path:
        return self.data_path / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.data_path / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def init(self) -> bool:
        if self.data_path.is_dir():
            return False
        self.data_path.mkdir(parents=True)
        return True

    def start(self) -> bool:
        """Start the server unless it already runs; True when it was started."""
        if self.is_running():
            return False
        if port_open(self.host, self.port):
            raise StackError(f"redis: port {self.port} on {self.host} is already in use")
        self.init()
        run(
            [
                require_executable("redis-server", _HINT),
                "--port", str(self.port),
                "--bind", self.host,
                "--daemonize", "yes",
                "--dir", str(self.data_path),
                "--pidfile", str(self.pid_file),
                "--logfile", str(self.log_file),
                "--appendonly", "yes",
                "--save", "",
            ],
            cwd=self.data_path,
            what="redis-server",
        )  # fmt: skip
        wait_until(self.ping, 30, f"redis on port {self.port} (see {self.log_file})")
        return True

    def stop(self, timeout: float = 30) -> bool:
        """Shut the server down (flushing its append-only file); True when it was running."""
        pid = self._pid()
        if pid is None:
            return False
        try:
            run(
                [
                    require_executable("redis-cli", _HINT),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "shutdown",
                ],
                timeout=timeout,
                what="redis-cli shutdown",
            )
        except StackError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def is_running(self) -> bool:
        return self._pid() is not None

    def ping(self) -> bool:
        try:
            done = run(
                [
                    require_executable("redis-cli", _HINT),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "ping",
                ],
                timeout=5,
            )
        except StackError:
            return False
        return done.stdout.strip() == "PONG"

    def _pid(self) -> int | None:
        """Our server's pid, if the pid file names a live redis-server process."""
        pid = read_pid(self.pid_file)
        if pid is None or not pid_alive(pid):
            return None
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        return pid if comm.startswith("redis-server") else None
