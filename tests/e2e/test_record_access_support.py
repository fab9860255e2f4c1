"""Record-level access on tickets (OWASP API1, 2023): a ticket belongs to its
assignee; agents read every ticket, change their team's, and pick unassigned ones
up from the desk — against the deployed app, with users made for this module."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import team_people

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def world(http: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    """Teams A and B; agents a1 and a2 in A, b1 in B; a customer the admin owns."""
    tag = os.urandom(4).hex()
    teams, people = team_people(
        http, admin, "desk", {"a1": ("agent", "A"), "a2": ("agent", "A"), "b1": ("agent", "B")}
    )
    customer = http.post("/v1/customers", headers=admin, json={"name": f"Desk {tag}"})
    assert customer.status_code == 201, customer.text
    return {"people": people, "customer": customer.json()["id"]}


def _tickets(http: httpx.Client, admin: dict[str, str], world: dict[str, Any]) -> dict[str, Any]:
    """Fresh tickets, made by the admin: one assigned to each agent, one unassigned
    (the default queue assigns nobody)."""
    made = {}
    for who in ("a1", "a2", "b1", None):
        body: dict[str, Any] = {"customer_id": world["customer"], "subject": f"For {who}"}
        if who is not None:
            body["assignee_id"] = world["people"][who].id
        ticket = http.post("/v1/support/tickets", headers=admin, json=body)
        assert ticket.status_code == 201, ticket.text
        expected = None if who is None else world["people"][who].id
        assert ticket.json()["assignee_id"] == expected
        made[who or "nobody"] = ticket.json()
    return made


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM


def test_agents_read_every_ticket(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    tickets = _tickets(http, admin, world)
    a1 = world["people"]["a1"]
    for ticket in tickets.values():
        url = f"/v1/support/tickets/{ticket['id']}"
        got = http.get(url, headers=a1.headers)
        assert got.status_code == 200, got.text
        assert got.json()["assignee_id"] == ticket["assignee_id"]
        assert http.get(f"{url}/comments", headers=a1.headers).status_code == 200
        assert http.get(f"{url}/history", headers=a1.headers).status_code == 200
    # The list is the desk's, as the admin sees it: nobody's ticket is left out.
    params = {"customer_id": world["customer"], "count": "true", "limit": 200}
    listed = http.get("/v1/support/tickets", headers=a1.headers, params=params)
    assert listed.status_code == 200, listed.text
    ids = {t["id"] for t in listed.json()["data"]}
    assert {t["id"] for t in tickets.values()} <= ids
    assert listed.json()["total"] == len(ids)
    everything = http.get("/v1/support/tickets", headers=admin, params=params).json()
    assert {t["id"] for t in everything["data"]} == ids


def test_agents_change_their_teams_tickets_only(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    tickets = _tickets(http, admin, world)
    a1 = world["people"]["a1"]
    mate, stranger = tickets["a2"], tickets["b1"]

    # A team mate's ticket: a1 works it.
    url = f"/v1/support/tickets/{mate['id']}"
    changed = http.patch(url, headers=a1.headers, json={"subject": "Covered by a1"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["subject"] == "Covered by a1"
    commented = http.post(f"{url}/comments", headers=a1.headers, json={"body": "on it"})
    assert commented.status_code == 201, commented.text
    moved = http.post(f"{url}/status", headers=a1.headers, json={"status": "pending"})
    assert moved.status_code == 200 and moved.json()["status"] == "pending", moved.text

    # Another team's ticket: a1 may read it, so the refusal is a 403, not a 404.
    url = f"/v1/support/tickets/{stranger['id']}"
    _refused(http.patch(url, headers=a1.headers, json={"subject": "Taken over"}))
    _refused(http.post(f"{url}/comments", headers=a1.headers, json={"body": "mine now"}))
    _refused(http.post(f"{url}/status", headers=a1.headers, json={"status": "pending"}))
    _refused(http.post(f"{url}/assign", headers=a1.headers, json={"assignee_id": a1.id}))
    # Nothing was written by the refused calls.
    after = http.get(url, headers=admin).json()
    assert after["subject"] == stranger["subject"] and after["status"] == "assigned"
    assert after["assignee_id"] == world["people"]["b1"].id
    assert after["version"] == stranger["version"]
    assert http.get(f"{url}/comments", headers=admin).json()["data"] == []


def test_an_agent_takes_an_unassigned_ticket_but_gives_none_away(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    tickets = _tickets(http, admin, world)
    a1, a2 = world["people"]["a1"], world["people"]["a2"]
    url = f"/v1/support/tickets/{tickets['nobody']['id']}"
    assert tickets["nobody"]["status"] == "new"

    # Assigning to someone else needs ticket:assign, which agents lack.
    _refused(http.post(url + "/assign", headers=a1.headers, json={"assignee_id": a2.id}))
    own = f"/v1/support/tickets/{tickets['a1']['id']}"
    _refused(http.post(f"{own}/assign", headers=a1.headers, json={"assignee_id": a2.id}))
    assert http.get(own, headers=admin).json()["assignee_id"] == a1.id
    # An unassigned ticket is no one's to change ...
    _refused(http.patch(url, headers=a1.headers, json={"subject": "x"}))
    assert http.get(url, headers=admin).json()["assignee_id"] is None

    # ... until an agent picks it up from the desk; then it is theirs to work.
    taken = http.post(f"{url}/assign", headers=a1.headers, json={"assignee_id": a1.id})
    assert taken.status_code == 200, taken.text
    assert taken.json()["assignee_id"] == a1.id and taken.json()["status"] == "assigned"
    worked = http.patch(url, headers=a1.headers, json={"subject": "Picked up"})
    assert worked.status_code == 200, worked.text
    # b1's team does not reach it any more.
    b1 = world["people"]["b1"]
    _refused(http.post(f"{url}/assign", headers=b1.headers, json={"assignee_id": b1.id}))
    assert http.get(url, headers=admin).json()["assignee_id"] == a1.id
