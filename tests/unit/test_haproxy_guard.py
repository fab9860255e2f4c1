"""`nextflow-haproxy` (cluster/haproxy_guard.py): what it changes in the HAProxy
configuration Ray 2.60 renders (the lines of Ray's template it touches; the file a
running stack's HAProxy reads is checked in tests/e2e/test_hardening.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from cluster.haproxy_guard import harden, harden_file

# The parts of Ray's template (ray/serve/_private/haproxy_templates.py) it touches.
RAY_CONFIG = """global
    log 127.0.0.1:514 local0 info
    stats socket /tmp/hap/n1/admin.sock mode 666 level admin expose-fd listeners
    stats timeout 30s
    maxconn 4096
defaults
    mode http
    option log-health-checks
    timeout connect 5s
    timeout client 60s
    timeout http-keep-alive 90s
    log global
frontend prometheus
    bind :56385
    mode http
    http-request use-service prometheus-exporter if { path /metrics }
    no log
frontend http_frontend
    bind 127.0.0.1:8000
    acl is_api path_beg /
    default_backend default_backend
backend default_backend
    http-request return status 404 content-type text/plain lf-string "Path \'%[path]\' not found."
listen stats
  bind *:56384
  stats enable
  stats uri /stats
"""
ROUTED = RAY_CONFIG.replace(
    "    default_backend default_backend",
    "    use_backend api if is_api\n    default_backend default_backend",
).replace("listen stats", "backend api\n    server r1 127.0.0.1:30001\nlisten stats")


def test_it_adds_a_header_timeout_and_closes_the_admin_doors() -> None:
    hardened = harden(RAY_CONFIG, 10, "127.0.0.1")
    lines = hardened.splitlines()
    socket = "    stats socket /tmp/hap/n1/admin.sock mode 600 level admin expose-fd listeners"
    assert socket in lines
    assert lines[lines.index("defaults") + 1 : lines.index("defaults") + 3] == [
        "    mode http", "    timeout http-request 10s",
    ]  # fmt: skip
    assert "    bind 127.0.0.1:56385" in lines  # the Prometheus exporter
    assert "  bind 127.0.0.1:56384" in lines  # the stats page
    assert "    bind 127.0.0.1:8000" in lines  # the API: as Serve's http_options say
    assert "    timeout client 60s" in lines  # Ray's own, from RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S
    assert harden(hardened, 10, "127.0.0.1") == hardened  # a reload hardens it again
    assert "timeout http-request 4s" in harden(hardened, 4, "127.0.0.1")
    assert harden(hardened, 4, "127.0.0.1").count("timeout http-request") == 1
    opened = harden(RAY_CONFIG, 10, "0.0.0.0")  # on Kubernetes, for a pod-level scrape
    assert "    bind 0.0.0.0:56385" in opened.splitlines()


def test_until_routes_are_loaded_the_ingress_says_503_not_404() -> None:
    loading = harden(RAY_CONFIG, 10, "127.0.0.1")
    assert "status 404" not in loading
    assert 'status 503 content-type text/plain string "the API is starting;' in loading
    assert loading.rstrip().count("hdr Retry-After 1") == 1
    routed = harden(ROUTED, 10, "127.0.0.1")  # a path no application has: a real 404
    assert "status 404" in routed and "status 503" not in routed


def test_the_real_haproxy_takes_the_hardened_configuration(tmp_path: Path) -> None:
    from cluster.haproxy_guard import real_binary

    for text in (RAY_CONFIG, ROUTED):
        config = tmp_path / "haproxy.cfg"
        config.write_text(harden(text.replace("/tmp/hap/n1", str(tmp_path)), 10, "127.0.0.1"))
        checked = subprocess.run([real_binary(), "-c", "-f", str(config)],
                                 capture_output=True, text=True)  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_file_is_hardened_under_rays_lock_and_haproxy_runs(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_CONFIG)
    harden_file(config, 7, "127.0.0.1")
    assert "timeout http-request 7s" in config.read_text()
    # The command: hardens, then becomes the binary it names, with Ray's arguments.
    config.write_text(RAY_CONFIG)
    fake = tmp_path / "haproxy"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {
        **os.environ,
        "NEXTFLOW_HAPROXY_BINARY": str(fake),
        "NEXTFLOW_HAPROXY_HEADER_TIMEOUT_S": "3",
        "NEXTFLOW_HAPROXY_ADMIN_HOST": "127.0.0.1",
    }
    ran = subprocess.run(
        [sys.executable, "-m", "cluster.haproxy_guard", "-db", "-f", str(config), "-sf", "42"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert ran.stdout.split() == ["-db", "-f", str(config), "-sf", "42"]
    assert "timeout http-request 3s" in config.read_text()
    assert "mode 600" in config.read_text()
