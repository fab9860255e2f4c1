"""The Ray head node of the local stack, with token authentication on.

`ray stop` in Ray 2.60 cannot be scoped: it kills every Ray process on the machine
by name. We stop only our own head instead. `ray start` is launched in a new
session whose id we record, and every daemon and worker it spawns stays in that
session; we also match processes naming our temp dir and their descendants.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cluster.procs import StackError, pid_alive, port_open, read_pid, run, wait_until

AUTH_ENV = {"RAY_AUTH_MODE": "token"}


def ray_executable(name: str = "ray") -> str:
    """`ray`/`serve` from this interpreter's environment (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"`{name}` not found; install the project (scripts/setup.sh)")
    return found


def ray_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for any ray/serve command: ours plus `extra`, token auth on."""
    return {**os.environ, **(extra or {}), **AUTH_ENV}


@dataclass(frozen=True)
class RayProcess:
    pid: int
    ppid: int
    sid: int
    comm: str
    args: tuple[str, ...]


class RayHead:
    def __init__(
        self,
        temp_dir: Path,
        host: str,
        *,
        gcs_port: int,
        dashboard_port: int,
        client_port: int,
        dashboard_agent_port: int,
        metrics_port: int,
        resources: Mapping[str, float] | None = None,
        num_cpus: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.temp_dir = Path(temp_dir).absolute()
        self.host = host
        self.gcs_port = gcs_port
        self.dashboard_port = dashboard_port
        self.client_port = client_port
        self.dashboard_agent_port = dashboard_agent_port
        self.metrics_port = metrics_port
        self.resources = dict(resources or {})
        self.num_cpus = num_cpus
        self.env = dict(env or {})

    @property
    def address(self) -> str:
        return f"{self.host}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"

    @property
    def _sid_file(self) -> Path:
        return self.temp_dir / "nextflow-head.sid"

    @property
    def _start_log(self) -> Path:
        return self.temp_dir / "nextflow-ray-start.log"

    def init(self) -> bool:
        """Create the temp dir and make sure a Ray auth token exists."""
        created = not self.temp_dir.exists()
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        # `ray start` refuses token auth without a token and does not create one itself
        # (Ray 2.60); this writes ~/.ray/auth_token unless RAY_AUTH_TOKEN(_PATH) is set.
        run(
            [ray_executable(), "get-auth-token", "--generate"],
            env=ray_env(self.env),
            timeout=60,
            what="ray get-auth-token",
        )
        return created

    def start(self, timeout: float = 180) -> bool:
        """Start the head unless ours already runs; True when it was started."""
        if self.is_running():
            return False
        if port_open(self.host, self.gcs_port):
            raise StackError(f"ray: GCS port {self.gcs_port} is already in use")
        if port_open("127.0.0.1", self.dashboard_port):
            raise StackError(f"ray: dashboard port {self.dashboard_port} is already in use")
        self.init()
        args = [
            ray_executable(),
            "start",
            "--head",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--dashboard-agent-listen-port={self.dashboard_agent_port}",
            f"--metrics-export-port={self.metrics_port}",
            f"--node-ip-address={self.host}",
            f"--temp-dir={self.temp_dir}",
            f"--resources={json.dumps(self.resources)}",
            "--disable-usage-stats",
        ]
        if self.num_cpus is not None:
            args.append(f"--num-cpus={self.num_cpus}")
        with self._start_log.open("w") as log:
            process = subprocess.Popen(
                args,
                env=ray_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._sid_file.write_text(f"{process.pid}\n")
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                self.stop()
                raise StackError(f"ray start: no answer after {timeout:.0f}s") from None
        if code != 0:
            self.stop()
            lines = self._start_log.read_text(errors="replace").strip().splitlines()
            raise StackError(f"ray start failed (exit {code}): {' | '.join(lines[-3:])}")
        wait_until(lambda: port_open("127.0.0.1", self.dashboard_port), 60, "the Ray dashboard")
        return True

    def stop(self, grace_period: float = 15) -> bool:
        """Stop our head's processes (raylet, then the rest, then GCS); True if any ran."""
        found = self.processes()
        if not found:
            self._sid_file.unlink(missing_ok=True)
            return False
        raylet = [p for p in found if p.comm == "raylet"]
        gcs = [p for p in found if p.comm == "gcs_server"]
        rest = [p for p in found if p not in raylet and p not in gcs]
        for bucket in (raylet, rest, gcs):
            _terminate(bucket, grace_period / 3)
        left = self.processes()
        if left:
            # Workers started while we were stopping the others.
            _terminate(left, 2)
        left = self.processes()
        if left:
            pids = ", ".join(str(p.pid) for p in left)
            raise StackError(f"ray: processes still running after stop: {pids}")
        self._sid_file.unlink(missing_ok=True)
        return True

    def is_running(self) -> bool:
        ours = self.processes()
        return any(p.comm == "gcs_server" for p in ours) and port_open(self.host, self.gcs_port)

    def processes(self) -> list[RayProcess]:
        """Every live process of our head: its session, our temp dir, and their children."""
        table = _scan_processes()
        sid = read_pid(self._sid_file)
        marker = str(self.temp_dir)

        def ours(proc: RayProcess) -> bool:
            if sid is not None and proc.sid == sid and any("ray" in a for a in proc.args):
                return True
            return any(
                arg == marker or arg.endswith("=" + marker) or marker + "/" in arg
                for arg in proc.args
            )

        selected = {pid for pid, proc in table.items() if ours(proc)}
        children: dict[int, list[int]] = {}
        for proc in table.values():
            children.setdefault(proc.ppid, []).append(proc.pid)
        stack = list(selected)
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in selected:
                    selected.add(child)
                    stack.append(child)
        selected -= _self_and_ancestors(table)
        return [table[pid] for pid in sorted(selected)]


def _scan_processes() -> dict[int, RayProcess]:
    table: dict[int, RayProcess] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw_args = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # comm may contain spaces and parentheses; it ends at the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        args = tuple(a.decode(errors="replace") for a in raw_args.split(b"\0") if a)
        pid = int(entry.name)
        table[pid] = RayProcess(pid, int(fields[1]), int(fields[3]), comm, args)
    return table


def _self_and_ancestors(table: Mapping[int, RayProcess]) -> set[int]:
    pids = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        pid = table[pid].ppid if pid in table else 0
    return pids


def _terminate(procs: Iterable[RayProcess], grace_period: float) -> None:
    """SIGTERM, wait up to `grace_period`, then SIGKILL whatever is left."""
    pids = [p.pid for p in procs]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace_period if sig == signal.SIGTERM else 5)
        while (pids := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pids:
            return
