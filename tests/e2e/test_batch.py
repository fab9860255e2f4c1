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


def test_contacts_go_to_their_customers_shard(http: httpx.Client, admin: dict[str, str]) -> None:
    tag = "bac" + os.urandom(3).hex()
    customers = [
        http.post("/v1/customers", headers=admin, json={"name": f"C{i}", "tags": [tag]}).json()
        for i in range(3)
    ]
    items: list[dict[str, Any]] = [
        {"op": "create", "customer_id": c["id"], "data": {"first_name": f"P{i}"}}
        for i, c in enumerate(customers)
    ]
    items.append({"op": "create", "customer_id": "1", "data": {"first_name": "Orphan"}})
    answer = http.post("/v1/customers/contacts/batch", headers=admin, json={"items": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 201, 404]
    for made, customer in zip(results, customers, strict=False):
        assert made["data"]["customer_id"] == customer["id"]
        assert ids.shard_of(int(made["id"])) == ids.shard_of(int(customer["id"]))
    first = results[0]["data"]
    changes = [
        {"op": "update", "id": first["id"], "if_match": first["version"],
         "data": {"title": "CTO"}},
        {"op": "delete", "id": results[1]["id"]},
    ]  # fmt: skip
    done = http.post("/v1/customers/contacts/batch", headers=admin, json={"items": changes})
    assert [r["status"] for r in done.json()["results"]] == [200, 200]
    assert http.get(f"/v1/customers/contacts/{first['id']}", headers=admin).json()["title"] == "CTO"
    assert http.get(f"/v1/customers/contacts/{results[1]['id']}", headers=admin).status_code == 404


def test_lead_batches_refuse_a_duplicate_email_and_keep_the_rest(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    word = os.urandom(3).hex()
    taken = http.post("/v1/marketing/leads", headers=admin,
                      json={"email": f"taken-{word}@example.com"}).json()  # fmt: skip
    items = [
        {"op": "create", "data": {"email": f"new-{word}-{i}@example.com", "company": "Acme"}}
        for i in range(4)
    ]
    items.append({"op": "create", "data": {"email": f"TAKEN-{word}@example.com"}})
    items.append({"op": "update", "id": taken["id"], "data": {"company": "Batch Co"}})
    answer = http.post("/v1/marketing/leads/batch", headers=admin, json={"items": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 201, 201, 409, 200]
    assert results[4]["problem"]["errors"] == [
        {"field": "email", "message": f"duplicate of lead {taken['id']}"}
    ]
    assert results[5]["data"]["company"] == "Batch Co"
    for made in results[:4]:
        lead = http.get(f"/v1/marketing/leads/{made['id']}", headers=admin)
        assert lead.status_code == 200 and lead.json()["company"] == "Acme"


def test_deal_batches_check_each_item_as_a_single_create_does(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    customer = http.post("/v1/customers", headers=admin, json={"name": "Deal Co"}).json()
    money = {"amount": "1200.00", "currency": "EUR"}
    body = {"customer_id": customer["id"], "name": "D0", "amount": money}
    first = http.post("/v1/sales/deals", headers=admin, json=body).json()
    items: list[dict[str, Any]] = [
        {"op": "create", "data": {"customer_id": customer["id"], "name": f"D{i}",
                                  "amount": money}}
        for i in (1, 2)
    ]  # fmt: skip
    items += [
        {"op": "create", "data": {"customer_id": "1", "name": "Nobody's", "amount": money}},
        {"op": "update", "id": first["id"], "if_match": first["version"],
         "data": {"amount": {"amount": "99.50", "currency": "EUR"}}},
        {"op": "update", "id": first["id"], "if_match": first["version"], "data": {"name": "x"}},
    ]  # fmt: skip
    answer = http.post("/v1/sales/deals/batch", headers=admin, json={"items": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 422, 200, 412]
    assert results[2]["problem"]["errors"][0]["field"] == "customer_id"
    assert results[3]["data"]["amount"] == {"amount": "99.50", "currency": "EUR"}
    for made in results[:2]:
        assert made["data"]["customer_id"] == customer["id"]
        assert made["data"]["stage_id"] and made["data"]["probability"] is not None
    listed = http.get(f"/v1/sales/customers/{customer['id']}/deals", headers=admin).json()
    assert sorted(d["name"] for d in listed["data"]) == ["D0", "D1", "D2"]


def test_ticket_batches_place_route_and_refuse_each_item_as_a_single_create(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    customer = http.post("/v1/customers", headers=admin, json={"name": "Ticket Co"}).json()
    one = {"customer_id": customer["id"], "subject": "T0", "priority": "high"}
    first = http.post("/v1/support/tickets", headers=admin, json=one)
    assert first.status_code == 201, first.text
    ticket = first.json()
    items: list[dict[str, Any]] = [
        {"op": "create", "data": {**one, "subject": f"T{i}"}} for i in (1, 2)
    ]
    items += [
        {"op": "create", "data": {**one, "customer_id": "1"}},
        {"op": "update", "id": ticket["id"], "if_match": ticket["version"],
         "data": {"subject": "T0 renamed", "priority": "low"}},
        {"op": "delete", "id": ticket["id"], "if_match": ticket["version"]},  # stale by then
    ]  # fmt: skip
    answer = http.post("/v1/support/tickets/batch", headers=admin, json={"items": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 422, 200, 412]
    for made in results[:2]:
        assert made["data"]["customer_id"] == customer["id"] and made["data"]["queue_id"]
        assert ids.shard_of(int(made["id"])) == ids.shard_of(int(customer["id"]))
    renamed = results[3]["data"]
    assert (renamed["subject"], renamed["priority"]) == ("T0 renamed", "low")
    assert "resolution_breached" in renamed  # as the single update answers it (live)
    listed = http.get(f"/v1/support/customers/{customer['id']}/tickets", headers=admin).json()
    assert sorted(t["subject"] for t in listed["data"]) == ["T0 renamed", "T1", "T2"]
