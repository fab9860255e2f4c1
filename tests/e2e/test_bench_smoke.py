"""`bench/run --quick` against the session's stack, so the performance suite cannot rot:
every scenario runs (seconds of load, tiny data) and prints its row."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cluster.settings import Settings
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_the_suite_runs_every_scenario(serve_app: Settings) -> None:
    done = subprocess.run(
        [str(REPO / "bench" / "run"), "--quick", "--duration", "1", "--reuse",
         "--email", ADMIN_EMAIL, "--password-stdin"],
        input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200"}, cwd=REPO,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for scenario in ("1 GET /v1/customers/{id}", "2 POST /v1/customers", "3 cross-shard list",
                     "4 mixed workload", "5 autoscaling", "6 footprint"):  # fmt: skip
        assert scenario in out, out[-3000:]
    assert "errors" not in out.split("bench/run")[-1], out[-3000:]
    plot = Path(out.split("plot: ")[-1].split()[0])  # the replica counts over time
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", out[-3000:]
