"""A Prometheus server for the local stack (`nextflow up --monitoring`).

It scrapes every Ray node's metrics endpoint, found through the service-discovery
file Ray keeps in its session folder (Serve's series, Ray's, and the project's own
`ray_nextflow_*`), HAProxy's ingress metrics, and itself; and it evaluates
`cluster/prometheus/alerts.yml`. The Ray head is started with `RAY_PROMETHEUS_HOST`
pointing here, so the Ray dashboard's metrics tab shows the same data. Grafana is not
packaged in Debian: import `kuberay/base/grafana-dashboard.json` into any Grafana
pointed at this server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from cluster.procs import StackError, pid_alive, port_open, read_pid, require_executable, run

RULES = Path(__file__).parent / "prometheus" / "alerts.yml"
_HINT = "install the Debian package `prometheus` (scripts/setup.sh --monitoring)"


def prometheus_config(
    ray_temp_dir: Path, rules: Path, haproxy_metrics: str | None, self_address: str
) -> dict[str, Any]:
    """The scrape configuration, as a dict (written as YAML)."""
    discovery = ray_temp_dir / "session_latest" / "prom_metrics_service_discovery.json"
    scrape = [
        {"job_name": "ray", "file_sd_configs": [{"files": [str(discovery)]}]},
        {"job_name": "prometheus", "static_configs": [{"targets": [self_address]}]},
    ]
    if haproxy_metrics:
        scrape.append(
            {"job_name": "serve-haproxy", "static_configs": [{"targets": [haproxy_metrics]}]}
        )
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s"},
        "rule_files": [str(rules)],
        "scrape_configs": scrape,
    }


class PrometheusServer:
    def __init__(
        self,
        data_path: Path,
        host: str,
        port: int,
        ray_temp_dir: Path,
        haproxy_metrics: str | None = None,
        retention: str = "7d",
    ) -> None:
        self.data_path = Path(data_path).absolute()
        self.host = host
        self.port = port
        self.ray_temp_dir = Path(ray_temp_dir).absolute()
        self.haproxy_metrics = haproxy_metrics
        self.retention = retention

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_path / "prometheus.yml"

    @property
    def rules_file(self) -> Path:
        return self.data_path / "alerts.yml"

    @property
    def pid_file(self) -> Path:
        return self.data_path / "prometheus.pid"

    @property
    def log_file(self) -> Path:
        return self.data_path / "prometheus.log"

    def write_config(self) -> Path:
        """The rules (copied, so a running server never reads a half-edited file) and
        the scrape configuration; returns the configuration's path."""
        self.data_path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RULES, self.rules_file)
        config = prometheus_config(
            self.ray_temp_dir, self.rules_file, self.haproxy_metrics, f"{self.host}:{self.port}"
        )
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        return self.config_file

    def check(self) -> None:
        """`promtool check config` (which also checks the rules it names)."""
        promtool = require_executable("promtool", _HINT)
        run([promtool, "check", "config", str(self.write_config())], what="promtool check config")

    def start(self, timeout: float = 60) -> bool:
        """Start the server unless it already runs; True when it was started."""
        if self.is_running():
            return False
        if port_open(self.host, self.port):
            raise StackError(f"prometheus: port {self.port} on {self.host} is already in use")
        binary = require_executable("prometheus", _HINT)
        self.write_config()
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.data_path / 'data'}",
                    f"--storage.tsdb.retention.time={self.retention}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_path,
                start_new_session=True,  # outlives `nextflow up`, like the other servers
            )
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while not self.ready():
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise StackError(f"prometheus exited at start (see {self.log_file})")
            if time.monotonic() > deadline:
                raise StackError(f"prometheus: not ready after {timeout:.0f}s ({self.log_file})")
            time.sleep(0.2)
        return True

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 30) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # flushes its head block, then exits
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

    def _pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        if pid is None or not pid_alive(pid):
            return None
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() != "prometheus":
                return None
        return pid
