"""What an operator sees: the project's own series on Ray's metrics endpoint."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from cluster.settings import Settings

pytestmark = pytest.mark.e2e


def _scrape(settings: Settings) -> str:
    return httpx.get(f"http://{settings.host}:{settings.ray_metrics_port}/metrics", timeout=10).text


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line.rsplit("} ", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_requests_queries_and_replicas_are_measured(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    created = http.post("/customers", headers=admin, json={"name": "Metered"})
    assert created.status_code == 201
    cid = created.json()["id"]
    for _ in range(5):
        assert http.get(f"/customers/{cid}", headers=admin).status_code == 200
    assert http.get("/customers/1", headers=admin).status_code == 404

    route = "/customers/{customer_id}"
    deadline = time.monotonic() + 60  # Ray exports worker metrics every few seconds
    while True:
        text = _scrape(serve_app)
        ok = _value(
            text, "ray_nextflow_http_requests_total", route=route, method="GET", status="200"
        )
        missing = _value(
            text, "ray_nextflow_http_requests_total", route=route, method="GET", status="404"
        )
        reads = _value(text, "ray_nextflow_shard_query_duration_ms_count", kind="read")
        writes = _value(
            text, "ray_nextflow_shard_query_duration_ms_count", kind="write", database="customer"
        )
        if ok >= 5 and missing >= 1 and reads >= 5 and writes >= 1:
            break
        names = sorted({line.split("{")[0] for line in text.splitlines() if "nextflow" in line})
        assert time.monotonic() < deadline, (ok, missing, reads, writes, names)
        time.sleep(2)

    # Labels name the route template and the deployment, never a record id.
    assert f'route="/customers/{cid}"' not in text
    assert _value(text, "ray_nextflow_http_request_duration_ms_count", route=route) >= 6
    assert 'deployment="Gateway"' in text
    assert _value(text, "ray_nextflow_shard_manager_up") >= 1
    assert "ray_nextflow_replica_lag_seconds{" in text
    assert _value(text, "ray_nextflow_pool_connections", state="open") >= 1
