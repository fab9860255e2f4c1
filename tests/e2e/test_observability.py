"""What an operator sees: the project's own series on Ray's metrics endpoint."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.settings import Settings
from cluster.stack import LocalStack

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
    created = http.post("/v1/customers", headers=admin, json={"name": "Metered"})
    assert created.status_code == 201
    cid = created.json()["id"]
    for _ in range(5):
        assert http.get(f"/v1/customers/{cid}", headers=admin).status_code == 200
    assert http.get("/v1/customers/1", headers=admin).status_code == 404

    route = "/v1/customers/{customer_id}"
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
    assert f'route="/v1/customers/{cid}"' not in text
    assert _value(text, "ray_nextflow_http_request_duration_ms_count", route=route) >= 6
    assert 'application="customer",deployment="CustomerService"' in text
    assert _value(text, "ray_nextflow_shard_manager_up") >= 1
    assert "ray_nextflow_replica_lag_seconds{" in text
    assert _value(text, "ray_nextflow_pool_connections", state="open") >= 1


DASHBOARD = Path(__file__).resolve().parents[2] / "kuberay" / "base" / "grafana-dashboard.json"
# Series only a Kubernetes deployment has (KubeRay's autoscaler), not the local stack.
_CLUSTER_ONLY = ("autoscaler_",)


def test_every_dashboard_panel_names_a_series_the_stack_exports(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    wanted = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"\b((?:ray_|autoscaler_)[a-z_]+)\b(?!\s*[=!~])", expr)
        if not name.startswith(_CLUSTER_ONLY)
    }
    # Traffic that makes every series exist: reads, a cached read, a duplicate (a
    # query error with its SQLSTATE), and the rest comes from the running stack.
    sku = f"OBS-{time.time_ns()}"
    product = http.post("/v1/products", headers=admin, json={"sku": sku, "name": "o"})
    assert product.status_code == 201
    for _ in range(2):  # a cache miss, then a hit
        assert http.get(f"/v1/products/{product.json()['id']}", headers=admin).status_code == 200
    # A public capture form used past its (low, in tests) limit: a 429.
    form = http.post("/v1/marketing/forms", headers=admin, json={"name": "Metered"}).json()
    client = {"X-Forwarded-For": "198.51.100.77"}
    answers = [
        http.post(
            f"/v1/marketing/capture/{form['form_key']}",
            headers=client,
            json={"email": f"m{i}@a.co"},
        )
        for i in range(12)
    ]
    assert 429 in {a.status_code for a in answers}
    assert (
        http.post("/v1/products", headers=admin, json={"sku": sku, "name": "o"}).status_code == 409
    )
    deadline = time.monotonic() + 60
    while True:
        text = _scrape(serve_app)
        exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines()}
        exported |= {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported}
        missing = sorted(wanted - exported)
        if not missing:
            break
        assert time.monotonic() < deadline, f"dashboard series never exported: {missing}"
        time.sleep(2)


def test_prometheus_scrapes_the_stack_and_loads_the_alerts(
    stack: LocalStack, http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    prometheus = stack.prometheus()
    assert prometheus.start()
    try:
        assert http.get("/v1/customers?limit=1", headers=admin).status_code == 200
        deadline = time.monotonic() + 60
        while True:
            found = httpx.get(
                f"{prometheus.url}/api/v1/query",
                params={"query": "sum(ray_nextflow_http_requests_total)"},
                timeout=10,
            ).json()["data"]["result"]
            if found and float(found[0]["value"][1]) > 0:
                break
            assert time.monotonic() < deadline, "Prometheus never scraped the gateway's series"
            time.sleep(2)
        rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert {"nextflow-http", "nextflow-data"} <= {group["name"] for group in rules}
        targets = httpx.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()["data"]
        ray_targets = [t for t in targets["activeTargets"] if t["labels"]["job"] == "ray"]
        # The node's metrics export port is up (Ray also lists its dashboard's own port,
        # which answers only while the dashboard exports anything).
        up = [t["scrapeUrl"] for t in ray_targets if t["health"] == "up"]
        assert f":{serve_app.ray_metrics_port}/metrics" in " ".join(up), ray_targets
        # `nextflow status` lists it while it runs.
        assert any(row.component == "prometheus" and row.healthy for row in stack.status())
    finally:
        assert prometheus.stop()


def _spans(settings: Settings, trace_id: str) -> list[dict[str, Any]]:
    assert settings.otel_spans_dir is not None
    found = []
    for path in settings.otel_spans_dir.glob("spans-*.jsonl"):
        for line in path.read_text().splitlines():
            if trace_id in line:
                with contextlib.suppress(json.JSONDecodeError):  # a line being written
                    found.append(json.loads(line))
    return found


def test_one_request_is_one_trace_from_the_gateway_to_each_statement(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    trace_id, caller_span = os.urandom(16).hex(), os.urandom(8).hex()
    traced = {**admin, "traceparent": f"00-{trace_id}-{caller_span}-01"}
    created = http.post("/v1/customers", headers=traced, json={"name": "Traced"})
    assert created.status_code == 201

    def by_name(spans: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
        return next((s for s in spans if s["name"].startswith(prefix)), None)

    wanted = (
        "POST /v1/customers",
        "CustomerService.create",
        "ShardManager.run customer",
        "transaction customer",
        "INSERT",
    )
    deadline = time.monotonic() + 30
    while True:
        spans = _spans(serve_app, trace_id)
        made = any("INSERT INTO customers" in s["attributes"].get("db.query.text", "")
                   for s in spans)  # fmt: skip
        if made and all(by_name(spans, name) for name in wanted):
            break
        assert time.monotonic() < deadline, sorted(s["name"] for s in spans)
        time.sleep(1)

    # Each span descends from the one before it (FastAPI adds its own spans between
    # the request and its handler, e.g. for resolving dependencies). The trace also
    # holds what the write's events made elsewhere (the duplicate keys' transaction,
    # carried by the event): the chain is the customer's INSERT and its ancestors.
    parents = {s["context"]["span_id"]: s["parent_id"] for s in spans}

    def ancestors(span_id: str) -> list[str]:
        found = []
        while span_id in parents and parents[span_id] is not None:
            span_id = parents[span_id]
            found.append(span_id)
        return found

    insert = next(s for s in spans if "INSERT INTO customers" in s["attributes"].get(
        "db.query.text", ""))  # fmt: skip
    above = set(ancestors(insert["context"]["span_id"]))
    chain = [
        next((s for s in spans if s["name"].startswith(name)
              and s["context"]["span_id"] in above), None)  # fmt: skip
        for name in wanted[:-1]
    ] + [insert]
    assert all(s is not None and s["context"]["trace_id"] == f"0x{trace_id}" for s in chain)

    assert chain[0] is not None and chain[0]["parent_id"] == f"0x{caller_span}"
    for above, below in itertools.pairwise(chain):
        assert above is not None and below is not None
        tree = [(s["name"], s["context"]["span_id"], s["parent_id"]) for s in spans]
        assert above["context"]["span_id"] in ancestors(below["context"]["span_id"]), (
            below["name"],
            tree,
        )
    gateway, service, manager, transaction, insert = chain
    # The customer application's root route, under its prefix.
    assert gateway is not None and gateway["attributes"]["http.route"] == "/v1/customers/"
    assert gateway["attributes"]["http.response.status_code"] == 201
    assert gateway["attributes"]["nextflow.request_id"] == created.headers["x-request-id"]
    assert insert is not None and "INSERT INTO customers" in insert["attributes"]["db.query.text"]
    # Two processes (the customer application's ingress replica, which runs the
    # pipeline and the service; the shard manager), one trace.
    assert len({s["resource"]["attributes"]["process.pid"] for s in spans}) >= 2
