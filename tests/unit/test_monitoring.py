"""The local Prometheus: its configuration and the alert rules (checked by promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster.monitoring import RULES, PrometheusServer, prometheus_config

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (scripts/setup.sh does it)"
)


def test_config_scrapes_ray_through_its_discovery_file(tmp_path: Path) -> None:
    config = prometheus_config(tmp_path / "ray", RULES, "127.0.0.1:9101", "127.0.0.1:9090")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ray"]["file_sd_configs"] == [
        {"files": [str(tmp_path / "ray/session_latest/prom_metrics_service_discovery.json")]}
    ]
    assert jobs["serve-haproxy"]["static_configs"] == [{"targets": ["127.0.0.1:9101"]}]
    assert config["rule_files"] == [str(RULES)]
    assert "serve-haproxy" not in {
        j["job_name"] for j in prometheus_config(tmp_path, RULES, None, "x:1")["scrape_configs"]
    }


def test_every_alert_has_a_severity_and_a_summary() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    # What an operator must hear about (issue 7): errors, latency, lag, a manager down.
    assert {
        "NextFlowHighErrorRatio",
        "NextFlowSlowRoute",
        "NextFlowReplicaLagging",
        "NextFlowShardManagerDown",
        "NextFlowNoUsableStandby",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


@needs_promtool
def test_promtool_accepts_the_rules_and_the_config(tmp_path: Path) -> None:
    subprocess.run(["promtool", "check", "rules", str(RULES)], check=True, capture_output=True)
    server = PrometheusServer(tmp_path / "prom", "127.0.0.1", 9, tmp_path / "ray", "127.0.0.1:8")
    server.check()  # `promtool check config`, which also loads the rules it names


@needs_promtool
def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: sum(rate(x[5m]) > 1\n")
    done = subprocess.run(["promtool", "check", "rules", str(broken)], capture_output=True)
    assert done.returncode != 0
