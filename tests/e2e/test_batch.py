"""Batch writes of customers (`POST /v1/customers/batch`) against the session's stack:
each item's own result in order, one transaction per logical shard with items apart,
exactly once per item under one `Idempotency-Key`."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from shards import ids

pytestmark = pytest.mark.e2e


def _tagged(http: httpx.Client, headers: dict[str, str], tag: str) -> list[dict[str, Any]]:
    page = http.get("/v1/customers", headers=headers, params={"tag": tag, "limit": 200})
    assert page.status_code == 200, page.text
    data: list[dict[str, Any]] = page.json()["data"]
    return data


def test_a_batch_answers_each_item_in_order_and_one_failure_leaves_the_others(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = "bat" + os.urandom(3).hex()
    kept = http.post("/v1/customers", headers=admin, json={"name": "Kept", "tags": [tag]}).json()
    gone = http.post("/v1/customers", headers=admin, json={"name": "Gone", "tags": [tag]}).json()
    items: list[dict[str, Any]] = [
        {"op": "create", "data": {"name": f"New {i}", "tags": [tag]}} for i in range(12)
    ]
    items += [
        {"op": "update", "id": kept["id"], "if_match": kept["version"],
         "data": {"industry": "batch"}},
        {"op": "update", "id": kept["id"], "if_match": kept["version"],  # stale by then
         "data": {"industry": "late"}},
        {"op": "delete", "id": gone["id"]},
        {"op": "update", "id": "1", "data": {"name": "nobody"}},  # no such customer
        {"op": "create", "data": {"name": "Nul\u0000", "tags": [tag]}},
    ]  # fmt: skip
    answer = http.post("/v1/customers/batch", headers=admin, json={"items": items})
    assert answer.status_code == 200, answer.text
    assert answer.headers.get("nextflow-read-after")
    body = answer.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results[:12]] == [201] * 12
    assert {r["data"]["name"] for r in results[:12]} == {f"New {i}" for i in range(12)}
    # Placed as single creates are: more than one logical shard, one transaction each.
    assert len({ids.shard_of(int(r["id"])) for r in results[:12]}) > 1
    updated, stale, deleted, missing, refused = results[12:]
    assert updated["status"] == 200 and updated["data"]["industry"] == "batch"
    assert updated["data"]["version"] == kept["version"] + 1
    assert stale["status"] == 412 and stale["problem"]["type"] == "/errors/stale-version"
    assert deleted["status"] == 200 and deleted["data"]["id"] == gone["id"]
    assert http.get(f"/v1/customers/{gone['id']}", headers=admin).status_code == 404
    assert missing["status"] == 404 and missing["problem"]["status"] == 404
    assert refused["status"] == 422 and "NUL" in refused["problem"]["detail"]
    assert (body["succeeded"], body["failed"]) == (14, 3)

    listed = {c["name"]: c for c in _tagged(http, admin, tag)}
    assert set(listed) == {"Kept", *(f"New {i}" for i in range(12))}
    assert listed["Kept"]["industry"] == "batch"


def test_one_key_makes_each_item_once(http: httpx.Client, admin: dict[str, str]) -> None:
    tag = "bak" + os.urandom(3).hex()
    body = {"items": [{"op": "create", "data": {"name": f"K {i}", "tags": [tag]}}
                      for i in range(5)]}  # fmt: skip
    headers = {**admin, "Idempotency-Key": f"batch-{tag}"}
    first = http.post("/v1/customers/batch", headers=headers, json=body)
    again = http.post("/v1/customers/batch", headers=headers, json=body)
    assert first.status_code == again.status_code == 200, again.text
    made = [r["id"] for r in first.json()["results"]]
    assert [r["id"] for r in again.json()["results"]] == made
    assert again.headers.get("idempotent-replayed") == "true"
    assert sorted(c["id"] for c in _tagged(http, admin, tag)) == sorted(made)
    # The same key with another batch: the items whose key held other content say so.
    other = {"items": [{"op": "create", "data": {"name": "Other", "tags": [tag]}}]}
    reused = http.post("/v1/customers/batch", headers=headers, json=other)
    assert reused.status_code == 200
    assert reused.json()["results"][0]["problem"]["type"] == "/errors/idempotency-key-reused"
    assert len(_tagged(http, admin, tag)) == 5


def test_permissions_and_bad_batches(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    item = {"op": "create", "data": {"name": "Viewer's"}}
    refused = http.post("/v1/customers/batch", headers=viewer, json={"items": [item, item]})
    assert refused.status_code == 200
    assert [r["status"] for r in refused.json()["results"]] == [403, 403]
    for bad in ({"items": []}, {"items": [item] * 101}, {"items": [{"op": "merge", "id": "1"}]},
                {"items": [{"op": "update", "id": "0", "data": {}}]}):  # fmt: skip
        answer = http.post("/v1/customers/batch", headers=admin, json=bad)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
