"""The Support service over HTTP (and once through its handle): queues and automatic
assignment, SLA clocks and breaches, the ticket workflow, comments, permissions."""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
from ray import serve

from deployments.support.schemas import SweepResult, TicketRead
from gateway.principal import Principal
from shards import ids
from tests.e2e.conftest import make_user, until

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def user_id(http: httpx.Client, headers: dict[str, str]) -> int:
    return int(http.get("/v1/auth/me", headers=headers).json()["id"])


def customer(http: httpx.Client, headers: dict[str, str], name: str = "Support Co") -> str:
    made = http.post("/v1/customers", headers=headers, json={"name": name})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def ticket(http: httpx.Client, headers: dict[str, str], **fields: object) -> dict[str, object]:
    made = http.post("/v1/support/tickets", headers=headers, json={"subject": "Help", **fields})
    assert made.status_code == 201, made.text
    assert made.headers["location"] == f"/v1/support/tickets/{made.json()['id']}"
    body: dict[str, object] = made.json()
    return body


def status(
    http: httpx.Client, headers: dict[str, str], ticket_id: object, to: str
) -> httpx.Response:
    return http.post(
        f"/v1/support/tickets/{ticket_id}/status", headers=headers, json={"status": to}
    )


def when(value: object) -> datetime:
    return datetime.fromisoformat(str(value))


@pytest.fixture(scope="module")
def agents(http: httpx.Client, admin: dict[str, str]) -> list[int]:
    """Three fresh agent users, in user id order (round-robin's order)."""
    return sorted(user_id(http, make_user(http, admin, "agent")) for _ in range(3))


def test_queues_assign_round_robin_then_least_busy(
    http: httpx.Client, admin: dict[str, str], agents: list[int]
) -> None:
    rr = http.post(
        "/v1/support/queues",
        headers=admin,
        json={"name": f"Tier 1 {os.urandom(3).hex()}", "strategy": "round_robin",
              "members": [str(a) for a in reversed(agents)]},
    )  # fmt: skip
    assert rr.status_code == 201, rr.text
    queue = rr.json()
    assert [m["user_id"] for m in queue["members"]] == [str(a) for a in agents]
    cust = customer(http, admin)

    made = [ticket(http, admin, customer_id=cust, queue_id=queue["id"]) for _ in range(4)]
    assert [t["assignee_id"] for t in made] == [str(a) for a in [*agents, agents[0]]]
    assert {t["status"] for t in made} == {"assigned"}
    # Each ticket lives on its customer's logical shard.
    assert {ids.shard_of(int(str(t["id"]))) for t in made} == {ids.shard_of(int(cust))}
    assert http.get(f"/v1/support/queues/{queue['id']}", headers=admin).json()[
        "last_assigned_id"
    ] == str(agents[0])

    # An inactive member is skipped.
    off = http.put(f"/v1/support/queues/{queue['id']}/members/{agents[1]}", headers=admin,
                   json={"active": False})  # fmt: skip
    assert off.status_code == 200 and off.headers["etag"] == f'"{off.json()["version"]}"'
    assert ticket(http, admin, customer_id=cust, queue_id=queue["id"])["assignee_id"] == str(
        agents[2]
    )

    # Open tickets now: agents[0] 2, agents[1] 1, agents[2] 2. Least-busy over
    # agents[0] and agents[1] picks agents[1]; then both have 2: the tie goes in turn.
    lb = http.post(
        "/v1/support/queues",
        headers=admin,
        json={"name": f"Tier 2 {os.urandom(3).hex()}", "strategy": "least_busy",
              "members": [str(agents[0]), str(agents[1])]},
    ).json()  # fmt: skip
    first = ticket(http, admin, customer_id=cust, queue_id=lb["id"])
    assert first["assignee_id"] == str(agents[1])
    second = ticket(http, admin, customer_id=cust, queue_id=lb["id"])
    assert second["assignee_id"] == str(agents[0])

    # Resolving frees agents[1]: least-busy gives them the next one.
    assert status(http, admin, first["id"], "resolved").status_code == 200
    assert ticket(http, admin, customer_id=cust, queue_id=lb["id"])["assignee_id"] == str(agents[1])

    # Manual queues (and the default queue) leave tickets new and unassigned.
    plain = ticket(http, admin, customer_id=cust)
    assert plain["status"] == "new" and plain["assignee_id"] is None
    assert plain["queue_id"] is not None  # the default queue
    listed = http.get(
        "/v1/support/tickets", headers=admin, params={"queue_id": queue["id"], "sort": "created_at"}
    ).json()
    assert [t["id"] for t in listed["data"]][:4] == [t["id"] for t in made]
    mine = http.get(
        f"/v1/support/customers/{cust}/tickets",
        headers=admin,
        params={"status": "new", "count": "true"},
    ).json()
    assert mine["total"] == 1 and mine["data"][0]["id"] == plain["id"]

    # Removing a member; removing them again is a 404.
    url = f"/v1/support/queues/{lb['id']}/members/{agents[0]}"
    assert http.delete(url, headers=admin).status_code == 200
    assert http.delete(url, headers=admin).status_code == 404


def test_support_cycle_sla_pause_comments_and_workflow(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    policies = http.get("/v1/support/sla-policies", headers=admin).json()["data"]
    assert [p["priority"] for p in policies] == ["urgent", "high", "normal", "low"]
    urgent = http.put(
        "/v1/support/sla-policies/urgent",
        headers=admin,
        json={"first_response_s": 2, "resolution_s": 3600},
    )
    assert urgent.status_code == 200, urgent.text
    cust = customer(http, admin, "SLA Co")

    late = ticket(http, admin, customer_id=cust, priority="urgent", channel="email")
    calm = ticket(http, admin, customer_id=cust, priority="low")
    assert (when(late["first_response_due_at"]) - when(late["created_at"])).total_seconds() == 2
    assert late["first_response_breached"] is False

    time.sleep(2.5)
    # Reads show the breach at once, before any sweep stored it.
    assert (
        http.get(f"/v1/support/tickets/{late['id']}", headers=admin).json()["sla_breached"] is True
    )
    swept = http.post("/v1/support/tickets/sla/sweep", headers=admin)
    assert swept.status_code == 200, swept.text

    def flags() -> list[dict[str, Any]]:
        # The periodic sweep may have stored it a moment before, as another writer:
        # its write can reach the replica this read goes to a little later.
        url = f"/v1/support/tickets/{late['id']}/history"
        history = http.get(url, headers=admin).json()["data"]
        return [h for h in history if h["action"] == "sla_breached"]

    flagged = until(flags, timeout=10)
    assert flagged == [
        {**flagged[0], "changes": {"first_response_breached": [False, True]}}
    ]  # stored once, by this sweep or the periodic one, never twice
    breached = http.get(
        "/v1/support/tickets", headers=admin, params={"sla_breached": "true", "customer_id": cust}
    ).json()
    assert [t["id"] for t in breached["data"]] == [late["id"]]
    fine = http.get(
        "/v1/support/tickets",
        headers=admin,
        params={"first_response_breached": "false", "customer_id": cust},
    ).json()
    assert [t["id"] for t in fine["data"]] == [calm["id"]]
    again = http.post("/v1/support/tickets/sla/sweep", headers=admin).json()
    assert late["id"] not in again["first_response_breached"]  # idempotent

    # Comments: an internal note is not a response; the first public reply is.
    note = http.post(f"/v1/support/tickets/{calm['id']}/comments", headers=admin,
                     json={"body": "customer is VIP", "public": False})  # fmt: skip
    assert note.status_code == 201, note.text
    assert (
        http.get(f"/v1/support/tickets/{calm['id']}", headers=admin).json()["first_response_at"]
        is None
    )
    reply = http.post(f"/v1/support/tickets/{calm['id']}/comments", headers=admin,
                      json={"body": "We are on it", "public": True})  # fmt: skip
    assert reply.status_code == 201
    answered = http.get(f"/v1/support/tickets/{calm['id']}", headers=admin).json()
    assert answered["first_response_at"] is not None
    assert answered["first_response_breached"] is False
    comments = http.get(f"/v1/support/tickets/{calm['id']}/comments", headers=admin).json()["data"]
    assert [c["body"] for c in comments] == ["customer is VIP", "We are on it"]
    assert {ids.shard_of(int(c["id"])) for c in comments} == {ids.shard_of(int(cust))}

    # Pending stops the resolution clock; going back pushes the due time.
    me = user_id(http, admin)
    taken = http.post(
        f"/v1/support/tickets/{calm['id']}/assign", headers=admin, json={"assignee_id": me}
    )
    assert taken.status_code == 200 and taken.json()["status"] == "assigned"
    due_before = when(taken.json()["resolution_due_at"])
    paused = status(http, admin, calm["id"], "pending").json()
    assert paused["status"] == "pending" and paused["sla_paused_at"] is not None
    time.sleep(1.5)
    resumed = status(http, admin, calm["id"], "assigned").json()
    moved = (when(resumed["resolution_due_at"]) - due_before).total_seconds()
    assert 1.4 <= moved < 10 and resumed["sla_paused_at"] is None
    assert resumed["sla_paused_s"] == pytest.approx(moved, abs=0.01)

    # Resolve, close; closed is final.
    resolved = status(http, admin, calm["id"], "resolved").json()
    assert resolved["resolved_at"] is not None
    closed = status(http, admin, calm["id"], "closed")
    assert closed.status_code == 200 and closed.json()["closed_at"] is not None
    refused = status(http, admin, calm["id"], "assigned")
    assert refused.status_code == 409 and refused.headers["content-type"] == PROBLEM
    assert "closed" in refused.json()["detail"]
    assert http.post(f"/v1/support/tickets/{calm['id']}/comments", headers=admin,
                     json={"body": "late", "public": True}).status_code == 409  # fmt: skip
    assert status(http, admin, late["id"], "closed").status_code == 409  # new -> closed

    changes = http.get(f"/v1/support/tickets/{calm['id']}/history", headers=admin).json()["data"]
    moves = [h["changes"]["status"] for h in changes if "status" in h["changes"]]
    assert moves[0] == ["resolved", "closed"] and moves[-1] == [None, "new"]

    http.put("/v1/support/sla-policies/urgent", headers=admin,
             json={"first_response_s": 3600, "resolution_s": 4 * 3600})  # fmt: skip


def test_permissions_validation_and_versions(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str], viewer: dict[str, str]
) -> None:
    # The agent's own customer: an agent opens tickets only for customers its
    # customer:read scope reaches (its team's book; this agent has no team).
    cust = customer(http, agent, "Rules Co")
    body = {"subject": "Help", "customer_id": cust, "tags": ["billing"]}
    opened = http.post("/v1/support/tickets", headers=agent, json=body)
    assert opened.status_code == 201, opened.text
    made = opened.json()
    assert made["assignee_id"] is None  # the default queue assigns nobody
    url = f"/v1/support/tickets/{made['id']}"

    # Viewers read, never write; agents work tickets but not configuration. (Another
    # user reads the agent's write: with its NextFlow-Read-After token, not whatever a
    # replica has replayed by then.)
    after = {"NextFlow-Read-After": opened.headers["nextflow-read-after"]}
    assert http.get(url, headers={**viewer, **after}).status_code == 200
    for call in (
        http.post(
            "/v1/support/tickets", headers=viewer, json={"customer_id": cust, "subject": "x"}
        ),
        http.patch(url, headers=viewer, json={"subject": "x"}),
        http.post(f"{url}/comments", headers=viewer, json={"body": "x"}),
        http.post("/v1/support/queues", headers=viewer, json={"name": "x"}),
        http.post("/v1/support/queues", headers=agent, json={"name": "x"}),
        http.put("/v1/support/sla-policies/low", headers=agent,
                 json={"first_response_s": 1, "resolution_s": 2}),
        http.post("/v1/support/tickets/sla/sweep", headers=agent),
        http.post(f"{url}/assign", headers=agent, json={"assignee_id": "1"}),
    ):  # fmt: skip
        assert call.status_code == 403, call.text
        assert call.headers["content-type"] == PROBLEM
    # Unassigned, the ticket is no one's to change; the agent picks it up from the desk.
    untaken = http.patch(url, headers=agent, json={"subject": "x"})
    assert untaken.status_code == 403 and untaken.headers["content-type"] == PROBLEM
    me = user_id(http, agent)
    took = http.post(f"{url}/assign", headers=agent, json={"assignee_id": str(me)})
    assert took.status_code == 200 and took.json()["assignee_id"] == str(me)

    # Bad input is a 422 naming the field, never a 500.
    absent = str(ids.make_id(ids.EPOCH_MS + 1000, ids.shard_of(int(cust)), 1))
    cases = [
        ("post", "/v1/support/tickets", {"customer_id": absent, "subject": "x"}, "customer_id"),
        ("post", "/v1/support/tickets", {"customer_id": "abc", "subject": "x"}, "customer_id"),
        ("post", "/v1/support/tickets", {"customer_id": cust, "subject": ""}, "subject"),
        ("post", "/v1/support/tickets", {"customer_id": cust, "subject": "x", "priority": "asap"},
         "priority"),
        ("post", "/v1/support/tickets", {"customer_id": cust, "subject": "x", "status": "closed"},
         "status"),
        ("post", "/v1/support/tickets", {"customer_id": cust, "subject": "x", "queue_id": "999999"},
         "queue_id"),
        ("post", "/v1/support/tickets", {"customer_id": cust, "subject": "x", "contact_id": absent},
         "contact_id"),
        ("post", f"{url}/status", {"status": "done"}, "status"),
        ("patch", url, {"priority": None}, "priority"),
        ("put", "/v1/support/sla-policies/critical", {"first_response_s": 1, "resolution_s": 2},
         "priority"),
        ("put", "/v1/support/sla-policies/low", {"first_response_s": 10, "resolution_s": 2},
         "body"),  # fmt: skip
        ("post", "/v1/support/queues", {"name": "x", "strategy": "random"}, "strategy"),
    ]  # fmt: skip
    for method, path, body, field in cases:
        response = http.request(method, path, headers=admin, json=body)
        assert response.status_code == 422, (path, body, response.text)
        assert field in str(response.json()["errors"]), (path, body, response.text)
    for params in ({"colour": "red"}, {"sort": "subject"}, {"sla_breached": "maybe"},
                   {"status": "open"}):  # fmt: skip
        response = http.get("/v1/support/tickets", headers=admin, params=params)
        assert response.status_code == 422, (params, response.text)
    garbage = http.get("/v1/support/tickets", headers=admin, params={"cursor": "garbage"})
    assert garbage.status_code == 400, garbage.text  # a cursor not ours is malformed
    assert http.get("/v1/support/tickets/12345", headers=admin).status_code == 404
    assert http.get("/v1/support/queues/999999", headers=admin).status_code == 404

    # If-Match: a stale version is a 412; the current one goes through.
    version = made["version"]
    ok = http.patch(url, headers={**admin, "If-Match": f'"{took.json()["version"]}"'},
                    json={"priority": "high", "tags": ["billing", "vip"]})  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert ok.json()["priority"] == "high"
    assert ok.json()["first_response_due_at"] != made["first_response_due_at"]
    stale = http.patch(url, headers={**admin, "If-Match": f'"{version}"'}, json={"subject": "y"})
    assert stale.status_code == 412 and stale.headers["content-type"] == PROBLEM
    assert http.get("/v1/support/tickets", headers=admin,
                    params={"priority": "high", "tag": "vip", "customer_id": cust}
                    ).json()["data"][0]["id"] == made["id"]  # fmt: skip

    # Sorting by priority and by resolution due time pages across shards.
    for sort in ("-priority", "resolution_due_at"):
        page = http.get("/v1/support/tickets", headers=admin, params={"sort": sort, "limit": 2})
        assert page.status_code == 200, page.text
        cursor = page.json()["next_cursor"]
        nxt = http.get(
            "/v1/support/tickets",
            headers=admin,
            params={"sort": sort, "limit": 2, "cursor": cursor},
        )
        assert nxt.status_code == 200, nxt.text

    # Soft delete and restore.
    assert http.delete(url, headers=admin).status_code == 204
    assert http.get(url, headers=admin).status_code == 404
    restored = http.post(f"{url}/restore", headers=admin)
    assert restored.status_code == 200 and restored.json()["id"] == made["id"]
    actions = [h["action"] for h in http.get(f"{url}/history", headers=admin).json()["data"]]
    assert actions[:2] == ["restored", "deleted"] and actions[-1] == "created"


def test_the_periodic_sweep_stores_breaches_without_a_call(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    """The test stack sweeps every 3 s (NEXTFLOW_SLA_SWEEP_INTERVAL_S in conftest)."""
    http.put("/v1/support/sla-policies/high", headers=admin,
             json={"first_response_s": 1, "resolution_s": 1})  # fmt: skip
    try:
        made = ticket(http, admin, customer_id=customer(http, admin, "Sweep Co"), priority="high")
    finally:
        http.put("/v1/support/sla-policies/high", headers=admin,
                 json={"first_response_s": 4 * 3600, "resolution_s": 24 * 3600})  # fmt: skip
    deadline = time.monotonic() + 15
    stored: set[str] = set()
    while time.monotonic() < deadline and len(stored) < 2:
        time.sleep(1)
        history = http.get(f"/v1/support/tickets/{made['id']}/history", headers=admin).json()[
            "data"
        ]
        stored = {f for h in history if h["action"] == "sla_breached" for f in h["changes"]}
    assert stored == {"first_response_breached", "resolution_breached"}
    got = http.get(f"/v1/support/tickets/{made['id']}", headers=admin).json()
    assert got["first_response_breached"] and got["resolution_breached"]
    assert got["version"] > made["version"]  # the sweep's write shows in the ETag


def test_sweep_and_read_through_the_handle(
    ray_driver: None, http: httpx.Client, admin: dict[str, str]
) -> None:
    cust = customer(http, admin, "Handle Support Co")
    made = ticket(http, admin, customer_id=cust)
    principal = Principal(
        user_id=user_id(http, admin),
        role="admin",
        permissions=frozenset({"ticket:read", "sla:write"}),
    )
    handle = serve.get_app_handle("support")
    swept = handle.sweep_sla.remote(principal).result()
    assert isinstance(swept, SweepResult)
    assert int(str(made["id"])) not in swept.first_response_breached
    fetched = handle.get.remote(principal, int(str(made["id"]))).result()
    assert isinstance(fetched, TicketRead) and fetched.customer_id == int(cust)
    assert fetched.status == "new"
