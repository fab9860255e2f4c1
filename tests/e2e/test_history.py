"""Change history of customers, contacts, pipelines, capture forms, queues and SLA
policies: what each write records, who may read it, and its cursor."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def no_reads(http: httpx.Client, agent: dict[str, str]) -> dict[str, str]:
    """An API key that can read deals and nothing this module reads."""
    made = http.post(
        "/v1/auth/api-keys", headers=agent, json={"name": "deals", "permissions": ["deal:read"]}
    )
    assert made.status_code == 201, made.text
    return {"X-API-Key": made.json()["key"]}


def _history(http: httpx.Client, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = http.get(f"{url}/history?sort=created_at", headers=headers)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json() if status != 204 else {}
    return body


def test_customer_and_contact_history(
    http: httpx.Client,
    admin: dict[str, str],
    agent: dict[str, str],
    viewer: dict[str, str],
    no_reads: dict[str, str],
) -> None:
    agent_id = http.get("/v1/auth/me", headers=agent).json()["id"]
    admin_id = http.get("/v1/auth/me", headers=admin).json()["id"]
    customer = _ok(
        http.post("/v1/customers", headers=agent, json={"name": "Hist", "tags": ["a"]}), 201
    )
    url = f"/v1/customers/{customer['id']}"
    _ok(http.patch(url, headers=agent, json={"name": "Hist Ltd", "tags": ["a", "b"]}))
    _ok(http.patch(url, headers=agent, json={"custom_fields": {}}))  # a write, nothing audited
    _ok(http.delete(url, headers=admin), 204)
    restored = http.post(f"{url}/restore", headers=admin)
    _ok(restored)
    # Another user reads the admin's writes: with their NextFlow-Read-After token (a
    # standby may not have replayed them yet).
    viewer_after = {**viewer, "NextFlow-Read-After": restored.headers["nextflow-read-after"]}

    history = _history(http, url, viewer_after)
    assert [(h["action"], h["actor_id"]) for h in history] == [
        ("created", agent_id),
        ("updated", agent_id),
        ("deleted", admin_id),
        ("restored", admin_id),
    ]
    assert history[0]["changes"] == {
        "name": [None, "Hist"],
        "tags": [None, ["a"]],
        "owner_id": [None, agent_id],
    }
    assert history[1]["changes"] == {"name": ["Hist", "Hist Ltd"], "tags": [["a"], ["a", "b"]]}
    assert all(h["record_type"] == "customer" and h["record_id"] == customer["id"] for h in history)
    newest = http.get(f"{url}/history?limit=1", headers=viewer_after).json()
    assert [h["action"] for h in newest["data"]] == ["restored"] and newest["next_cursor"]
    after = http.get(f"{url}/history?limit=1&cursor={newest['next_cursor']}", headers=viewer_after)
    assert [h["action"] for h in after.json()["data"]] == ["deleted"]
    assert http.get(f"{url}/history?cursor=not-a-cursor", headers=viewer_after).status_code == 400
    assert http.get(f"{url}/history", headers=no_reads).status_code == 403

    contact = _ok(
        http.post(f"{url}/contacts", headers=agent, json={"first_name": "Ana", "title": "CTO"}),
        201,
    )
    curl = f"/v1/customers/contacts/{contact['id']}"
    _ok(http.patch(curl, headers=agent, json={"title": "CEO"}))
    _ok(http.patch(curl, headers=agent, json={"title": "CEO"}))  # no audited change
    _ok(http.delete(curl, headers=admin), 204)
    restored = http.post(f"{curl}/restore", headers=admin)
    _ok(restored)
    viewer_after = {**viewer, "NextFlow-Read-After": restored.headers["nextflow-read-after"]}
    history = _history(http, curl, viewer_after)
    assert [h["action"] for h in history] == ["created", "updated", "deleted", "restored"]
    assert history[0]["changes"] == {"first_name": [None, "Ana"], "title": [None, "CTO"]}
    assert history[1]["changes"] == {"title": ["CTO", "CEO"]}
    assert http.get(f"{curl}/history?cursor=not-a-cursor", headers=viewer_after).status_code == 400
    assert http.get(f"{curl}/history", headers=no_reads).status_code == 403


def test_pipeline_history(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str], no_reads: dict[str, str]
) -> None:
    body = {"name": "Hist", "stages": [{"name": "Open", "probability": 10}]}
    pipeline = _ok(http.post("/v1/sales/pipelines", headers=admin, json=body), 201)
    url = f"/v1/sales/pipelines/{pipeline['id']}"
    _ok(http.patch(url, headers=admin, json={"name": "History"}))
    _ok(http.patch(url, headers=admin, json={"name": "History"}))  # no audited change
    added = _ok(http.post(f"{url}/stages", headers=admin, json={"name": "Won", "probability": 100,
                                                                 "kind": "won"}), 201)  # fmt: skip
    won = next(s for s in added["stages"] if s["name"] == "Won")
    _ok(http.patch(f"{url}/stages/{won['id']}", headers=admin, json={"probability": 90}))
    _ok(http.delete(url, headers=admin), 204)
    _ok(http.post(f"{url}/restore", headers=admin))

    history = _history(http, url, viewer)
    assert [h["action"] for h in history] == [
        "created", "updated", "stage_added", "stage_updated", "deleted", "restored",
    ]  # fmt: skip
    assert history[0]["changes"] == {"name": [None, "Hist"], "is_default": [None, False]}
    assert history[1]["changes"] == {"name": ["Hist", "History"]}
    assert history[2]["changes"] == {
        "stage_id": [None, won["id"]],
        "name": [None, "Won"],
        "position": [None, 2],
        "probability": [None, 100],
        "kind": [None, "won"],
    }
    assert history[3]["changes"] == {"stage_id": [won["id"], won["id"]], "probability": [100, 90]}
    assert http.get(f"{url}/history?cursor=not-a-cursor", headers=viewer).status_code == 400
    assert http.get(f"{url}/history", headers=no_reads).status_code == 403


def test_form_history(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str], no_reads: dict[str, str]
) -> None:
    form = _ok(http.post("/v1/marketing/forms", headers=admin, json={"name": "Hist form"}), 201)
    url = f"/v1/marketing/forms/{form['id']}"
    _ok(http.patch(url, headers=admin, json={"name": "History form", "active": False}))
    _ok(http.patch(url, headers=admin, json={"active": False}))  # no audited change
    _ok(http.delete(url, headers=admin), 204)
    # A deleted form is gone, its history with it (as for every record type).
    assert http.get(f"{url}/history", headers=viewer).status_code == 404

    other = _ok(http.post("/v1/marketing/forms", headers=admin, json={"name": "Kept"}), 201)
    ourl = f"/v1/marketing/forms/{other['id']}"
    _ok(http.patch(ourl, headers=admin, json={"default_source": "event"}))
    history = _history(http, ourl, viewer)
    assert [h["action"] for h in history] == ["created", "updated"]
    created = history[0]["changes"]
    assert created["name"] == [None, "Kept"] and created["active"] == [None, True]
    assert created["owner_id"][1] == http.get("/v1/auth/me", headers=admin).json()["id"]
    assert history[1]["changes"] == {"default_source": ["web_form", "event"]}
    assert http.get(f"{ourl}/history?cursor=not-a-cursor", headers=viewer).status_code == 400
    assert http.get(f"{ourl}/history", headers=no_reads).status_code == 403


def test_queue_and_sla_policy_history(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str], no_reads: dict[str, str]
) -> None:
    queue = _ok(http.post("/v1/support/queues", headers=admin,  # noqa: E501
                          json={"name": "Hist queue", "members": ["7"]}),
                201)  # fmt: skip
    url = f"/v1/support/queues/{queue['id']}"
    _ok(http.patch(url, headers=admin, json={"strategy": "round_robin"}))
    _ok(http.patch(url, headers=admin, json={"description": "not audited"}))
    _ok(http.put(f"{url}/members/8", headers=admin, json={"active": True}))
    _ok(http.put(f"{url}/members/7", headers=admin, json={"active": False}))
    _ok(http.put(f"{url}/members/7", headers=admin, json={"active": False}))  # no change
    _ok(http.delete(f"{url}/members/8", headers=admin))
    _ok(http.delete(url, headers=admin), 204)
    _ok(http.post(f"{url}/restore", headers=admin))

    history = _history(http, url, viewer)
    assert [(h["action"], h["changes"]) for h in history] == [
        ("created", {"name": [None, "Hist queue"], "strategy": [None, "manual"],
                     "members": [None, ["7"]]}),
        ("updated", {"strategy": ["manual", "round_robin"]}),
        ("member_added", {"user_id": [None, "8"], "active": [None, True]}),
        ("member_deactivated", {"user_id": ["7", "7"], "active": [True, False]}),
        ("member_removed", {"user_id": ["8", None], "active": [True, None]}),
        ("deleted", {}),
        ("restored", {}),
    ]  # fmt: skip
    assert http.get(f"{url}/history?cursor=not-a-cursor", headers=viewer).status_code == 400
    assert http.get(f"{url}/history", headers=no_reads).status_code == 403

    policies = {
        p["priority"]: p
        for p in http.get("/v1/support/sla-policies", headers=viewer).json()["data"]
    }
    low = policies["low"]
    put = {"first_response_s": low["first_response_s"] + 1, "resolution_s": low["resolution_s"]}
    changed = http.put("/v1/support/sla-policies/low", headers=admin, json=put)
    assert changed.status_code == 200, changed.text
    _ok(http.put("/v1/support/sla-policies/low", headers=admin, json=put))  # no change
    # The viewer reads after the admin's write (a replica may not have replayed it).
    after = {**viewer, "NextFlow-Read-After": changed.headers["nextflow-read-after"]}
    changes = http.get("/v1/support/sla-policies/low/history", headers=after).json()["data"]
    assert changes[0]["record_type"] == "sla_policy" and changes[0]["record_id"] == low["id"]
    assert changes[0]["changes"] == {
        "first_response_s": [low["first_response_s"], low["first_response_s"] + 1]
    }
    url = "/v1/support/sla-policies/low/history"
    assert http.get(f"{url}?cursor=not-a-cursor", headers=viewer).status_code == 400
    assert http.get(url, headers=no_reads).status_code == 403
    assert http.get("/v1/support/sla-policies/critical/history", headers=viewer).status_code == 422
