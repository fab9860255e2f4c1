"""The `nextflow` CLI against the session's running stack, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.settings import Settings
from tests.e2e.conftest import ADMIN_EMAIL

pytestmark = pytest.mark.e2e
NEXTFLOW = str(Path(sys.executable).with_name("nextflow"))


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEXTFLOW, *args], input=stdin, text=True, capture_output=True, timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_status_shows_every_piece(serve_app: Settings) -> None:
    result = _run("status")
    assert result.returncode == 0, result.stdout + result.stderr
    for piece in ("catalog", "shard1", "shard2", "redis", "ray", "customer", "CustomerService"):
        assert piece in result.stdout


def test_bad_input_is_one_line_not_a_traceback(serve_app: Settings) -> None:
    duplicate = _run("create-admin", "--email", ADMIN_EMAIL.upper(), "--password-stdin",
                     stdin="another-long-password\n")  # fmt: skip
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr
    assert "Traceback" not in duplicate.stderr + duplicate.stdout

    short = _run("create-admin", "--email", "x@example.com", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 12" in short.stderr

    bad_config = _run("deploy", "--config", "/nonexistent/serve_config.yaml")
    assert bad_config.returncode == 1
    assert len(bad_config.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad_config.stderr
