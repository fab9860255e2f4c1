"""Record-level access (OWASP API1 and API3, 2023): own / team / all scopes per role
on every read, list, update and delete, teams, and fields hidden from a role —
against the deployed app, with users made for this module."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import team_people

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(http: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    """Teams A and B; agents a1 and a2 in A, b1 in B; a viewer; one customer each
    agent owns (with a contact)."""
    tag = os.urandom(4).hex()
    teams, people = team_people(
        http,
        admin,
        "team",
        {
            "a1": ("agent", "A"),
            "a2": ("agent", "A"),
            "b1": ("agent", "B"),
            "viewer": ("viewer", None),
        },
    )
    customers = {}
    for who in ("a1", "a2", "b1"):
        made = http.post(
            "/v1/customers",
            headers=people[who].headers,
            json={"name": f"Scope {tag} {who}", "email": f"{who}@{tag}.example", "phone": "+1 555"},
        )
        assert made.status_code == 201, made.text
        assert made.json()["owner_id"] == people[who].id
        contact = http.post(
            f"/v1/customers/{made.json()['id']}/contacts",
            headers=people[who].headers,
            json={"first_name": who, "email": f"c-{who}@{tag}.example"},
        )
        assert contact.status_code == 201, contact.text
        customers[who] = {"id": made.json()["id"], "contact": contact.json()["id"]}
    return {"tag": tag, "teams": teams, "people": people, "customers": customers}


def _names(http: httpx.Client, headers: dict[str, str], tag: str) -> tuple[set[str], int]:
    page = http.get(
        "/v1/customers", headers=headers, params={"name[prefix]": f"Scope {tag}", "count": "true"}
    )
    assert page.status_code == 200, page.text
    return {c["name"].rsplit(" ", 1)[1] for c in page.json()["data"]}, page.json()["total"]


def test_roles_publish_their_scopes(http: httpx.Client, admin: dict[str, str]) -> None:
    roles = {r["name"]: r for r in http.get("/v1/auth/roles", headers=admin).json()["data"]}
    assert roles["agent"]["scopes"]["customer:read"] == "team"
    assert roles["agent"]["scopes"]["customer:write"] == "own"
    assert roles["admin"]["scopes"] == {}
    assert roles["viewer"]["hidden_fields"]["customer"] == ["email", "phone"]


def test_reads_and_lists_reach_the_team_only(http: httpx.Client, world: dict[str, Any]) -> None:
    a1, b1 = world["people"]["a1"], world["people"]["b1"]
    ids = {who: c["id"] for who, c in world["customers"].items()}
    assert http.get(f"/v1/customers/{ids['a1']}", headers=a1.headers).status_code == 200
    assert http.get(f"/v1/customers/{ids['a2']}", headers=a1.headers).status_code == 200
    hidden = http.get(f"/v1/customers/{ids['b1']}", headers=a1.headers)
    assert hidden.status_code == 404, hidden.text  # not 403: its existence is not told
    assert _names(http, a1.headers, world["tag"]) == ({"a1", "a2"}, 2)
    assert _names(http, b1.headers, world["tag"]) == ({"b1"}, 1)
    # The owner filter cannot widen the scope.
    other = http.get("/v1/customers", headers=a1.headers, params={"owner_id": b1.id})
    assert other.status_code == 200 and other.json()["data"] == []
    # Contacts are reached through their customer.
    contact_b1 = world["customers"]["b1"]["contact"]
    assert http.get(f"/v1/customers/contacts/{contact_b1}", headers=a1.headers).status_code == 404
    listed = http.get(f"/v1/customers/{ids['b1']}/contacts", headers=a1.headers)
    assert listed.status_code == 404
    contact_a2 = world["customers"]["a2"]["contact"]
    assert http.get(f"/v1/customers/contacts/{contact_a2}", headers=a1.headers).status_code == 200


def test_writes_reach_only_own_records(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    a1 = world["people"]["a1"]
    ids = {who: c["id"] for who, c in world["customers"].items()}
    mine = http.patch(f"/v1/customers/{ids['a1']}", headers=a1.headers, json={"industry": "x"})
    assert mine.status_code == 200, mine.text
    team_mate = http.patch(f"/v1/customers/{ids['a2']}", headers=a1.headers, json={"industry": "x"})
    assert team_mate.status_code == 403, team_mate.text  # may read it, may not change it
    assert team_mate.headers["content-type"].startswith("application/problem+json")
    stranger = http.patch(f"/v1/customers/{ids['b1']}", headers=a1.headers, json={"industry": "x"})
    assert stranger.status_code == 404, stranger.text
    # Nothing was written by the refused calls.
    for who in ("a2", "b1"):
        assert http.get(f"/v1/customers/{ids[who]}", headers=admin).json()["industry"] is None
    contact_a2 = world["customers"]["a2"]["contact"]
    refused = http.patch(
        f"/v1/customers/contacts/{contact_a2}", headers=a1.headers, json={"title": "x"}
    )
    assert refused.status_code == 403, refused.text
    added = http.post(
        f"/v1/customers/{ids['a2']}/contacts", headers=a1.headers, json={"first_name": "x"}
    )
    assert added.status_code == 403, added.text
    added = http.post(
        f"/v1/customers/{ids['b1']}/contacts", headers=a1.headers, json={"first_name": "x"}
    )
    assert added.status_code == 404, added.text


def test_hidden_fields_are_null_for_the_role(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    viewer = world["people"]["viewer"]
    customer = world["customers"]["a1"]["id"]
    seen = http.get(f"/v1/customers/{customer}", headers=viewer.headers).json()
    assert seen["email"] is None and seen["phone"] is None and seen["name"].endswith("a1")
    full = http.get(f"/v1/customers/{customer}", headers=admin).json()
    assert full["email"] == f"a1@{world['tag']}.example" and full["phone"] == "+1 555"
    listed = http.get(
        "/v1/customers", headers=viewer.headers, params={"name[prefix]": f"Scope {world['tag']}"}
    ).json()["data"]
    assert len(listed) == 3 and all(c["email"] is None for c in listed)
    contact = world["customers"]["a1"]["contact"]
    assert (
        http.get(f"/v1/customers/contacts/{contact}", headers=viewer.headers).json()["email"]
        is None
    )


def test_a_team_change_takes_effect_at_once(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    """a2 moves to team B: a2's and a1's tokens (a1's listed a2 as a team mate) stop
    working at once; signed in again, a1 no longer reaches a2's customer. Team B
    reaches a2's records from its members' next token."""
    a1, a2, b1 = (world["people"][k] for k in ("a1", "a2", "b1"))
    ids = {who: c["id"] for who, c in world["customers"].items()}
    moved = http.patch(
        f"/v1/auth/users/{a2.id}", headers=admin, json={"team_id": world["teams"]["B"]}
    )
    assert moved.status_code == 200 and moved.json()["team_id"] == world["teams"]["B"]
    assert http.get(f"/v1/customers/{ids['a1']}", headers=a1.headers).status_code == 401
    assert http.get(f"/v1/customers/{ids['a2']}", headers=a2.headers).status_code == 401
    assert http.get(f"/v1/customers/{ids['a2']}", headers=b1.headers).status_code == 404
    a1.sign_in()
    b1.sign_in()
    assert http.get(f"/v1/customers/{ids['a2']}", headers=a1.headers).status_code == 404
    assert http.get(f"/v1/customers/{ids['a2']}", headers=b1.headers).status_code == 200
    assert _names(http, b1.headers, world["tag"]) == ({"a2", "b1"}, 2)
    teams = {t["id"]: t for t in http.get("/v1/auth/teams", headers=admin).json()["data"]}
    assert teams[world["teams"]["A"]]["members"] == 1
    assert teams[world["teams"]["B"]]["members"] == 2


def test_teams_are_admin_business(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    a1 = world["people"]["a1"]
    assert http.post("/v1/auth/teams", headers=a1.headers, json={"name": "mine"}).status_code == 403
    assert http.get("/v1/auth/teams", headers=a1.headers).status_code == 403
    names = {t["id"]: t["name"] for t in http.get("/v1/auth/teams", headers=admin).json()["data"]}
    taken = http.post(
        "/v1/auth/teams", headers=admin, json={"name": names[world["teams"]["A"]].upper()}
    )
    assert taken.status_code == 409, taken.text
    missing = http.patch(f"/v1/auth/users/{a1.id}", headers=admin, json={"team_id": "999999999"})
    assert missing.status_code == 422, missing.text


def test_an_import_never_changes_customers_outside_the_write_scope(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    """Imports upsert by external id: a1 naming b1's customer's external id is refused
    for that row (counted, nothing written), and a1's new row is created."""
    from tests.e2e.test_imports import _csv, _import

    a1, b1 = world["people"]["a1"], world["people"]["b1"]
    ext = f"scope-{world['tag']}"
    header = ["name", "external_id", "tags"]
    made = _import(http, b1.headers, _csv([header, [f"B1 {ext}", f"{ext}-b1", ext]]))
    assert made["status"] == "succeeded" and made["result"]["created"] == 1, made
    body = _csv([header, [f"Taken {ext}", f"{ext}-b1", ext], [f"A1 {ext}", f"{ext}-a1", ext]])
    job = _import(http, a1.headers, body)
    assert job["status"] == "succeeded", job
    counts = {k: job["result"][k] for k in ("created", "updated", "unchanged", "refused")}
    assert counts == {"created": 1, "updated": 0, "unchanged": 0, "refused": 1}
    page = http.get("/v1/customers", headers=admin, params={"tag": ext}).json()["data"]
    assert sorted(c["name"] for c in page) == [f"A1 {ext}", f"B1 {ext}"]
