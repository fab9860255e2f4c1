"""Record-level access (OWASP API1 and API3, 2023) on leads and campaigns: own / team
scopes on every read, list, update and conversion, leads a viewer sees without
e-mail and phone — against the deployed app, with users made for this module."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import team_people

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(http: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    """Teams A and B; agents a1 and a2 in A, b1 in B, a manager in each, a viewer; a
    campaign each manager owns; one lead each agent owns, all in a campaign of this
    module's own (the lists are filtered by it)."""
    tag = os.urandom(4).hex()
    teams, people = team_people(
        http,
        admin,
        "mkt",
        {
            "a1": ("agent", "A"),
            "a2": ("agent", "A"),
            "b1": ("agent", "B"),
            "mA": ("manager", "A"),
            "mB": ("manager", "B"),
            "viewer": ("viewer", None),
        },
    )
    campaigns = {}
    for who in ("mA", "mB", "admin"):
        body: dict[str, Any] = {"name": f"Scope {tag} {who}", "type": "email"}
        if who != "admin":
            body["owner_id"] = people[who].id
        made = http.post("/v1/marketing/campaigns", headers=admin, json=body)
        assert made.status_code == 201, made.text
        assert who == "admin" or made.json()["owner_id"] == people[who].id
        campaigns[who] = made.json()["id"]
    leads = {}
    for who in ("a1", "a2", "b1"):
        made = http.post(
            "/v1/marketing/leads",
            headers=people[who].headers,
            json={
                "first_name": who,
                "email": f"{who}@{tag}.example",
                "phone": "+1 555",
                "company": f"Scope {tag} {who}",
                "campaign_id": campaigns["admin"],
            },
        )
        assert made.status_code == 201, made.text
        assert made.json()["owner_id"] == people[who].id
        leads[who] = made.json()["id"]
    return {"tag": tag, "people": people, "campaigns": campaigns, "leads": leads}


def _leads(http: httpx.Client, headers: dict[str, str], world: dict[str, Any]) -> set[str]:
    """Whose of this module's leads `headers` lists (the count agrees)."""
    page = http.get(
        "/v1/marketing/leads",
        headers=headers,
        params={"campaign_id": world["campaigns"]["admin"], "count": "true"},
    )
    assert page.status_code == 200, page.text
    names = {lead["first_name"] for lead in page.json()["data"]}
    assert page.json()["total"] == len(names)
    return names


def test_roles_publish_their_lead_scopes(http: httpx.Client, admin: dict[str, str]) -> None:
    roles = {r["name"]: r for r in http.get("/v1/auth/roles", headers=admin).json()["data"]}
    assert roles["agent"]["scopes"]["lead:read"] == "team"
    assert roles["agent"]["scopes"]["lead:write"] == "own"
    assert roles["agent"]["scopes"]["lead:convert"] == "own"
    assert roles["agent"]["scopes"]["campaign:read"] == "team"
    assert roles["viewer"]["hidden_fields"]["lead"] == ["email", "phone"]


def test_lead_reads_and_lists_reach_the_team_only(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    a1, b1 = world["people"]["a1"], world["people"]["b1"]
    ids = world["leads"]
    assert http.get(f"/v1/marketing/leads/{ids['a1']}", headers=a1.headers).status_code == 200
    assert http.get(f"/v1/marketing/leads/{ids['a2']}", headers=a1.headers).status_code == 200
    hidden = http.get(f"/v1/marketing/leads/{ids['b1']}", headers=a1.headers)
    assert hidden.status_code == 404, hidden.text  # not 403: its existence is not told
    assert _leads(http, a1.headers, world) == {"a1", "a2"}
    assert _leads(http, b1.headers, world) == {"b1"}
    assert _leads(http, admin, world) == {"a1", "a2", "b1"}
    # The owner filter cannot widen the scope.
    other = http.get("/v1/marketing/leads", headers=a1.headers, params={"owner_id": b1.id})
    assert other.status_code == 200 and other.json()["data"] == []
    # History and conversion state are reached through the lead.
    assert (
        http.get(f"/v1/marketing/leads/{ids['a2']}/history", headers=a1.headers).status_code == 200
    )
    assert (
        http.get(f"/v1/marketing/leads/{ids['b1']}/history", headers=a1.headers).status_code == 404
    )
    assert (
        http.get(f"/v1/marketing/leads/{ids['b1']}/conversion", headers=a1.headers).status_code
        == 404
    )


def test_lead_writes_reach_only_own_leads(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    a1 = world["people"]["a1"]
    ids = world["leads"]
    mine = http.patch(
        f"/v1/marketing/leads/{ids['a1']}", headers=a1.headers, json={"title": "Owner"}
    )
    assert mine.status_code == 200, mine.text
    assert mine.json()["title"] == "Owner"
    team_mate = http.patch(
        f"/v1/marketing/leads/{ids['a2']}", headers=a1.headers, json={"title": "x"}
    )
    assert team_mate.status_code == 403, team_mate.text  # may read it, may not change it
    assert team_mate.headers["content-type"].startswith("application/problem+json")
    stranger = http.patch(
        f"/v1/marketing/leads/{ids['b1']}", headers=a1.headers, json={"title": "x"}
    )
    assert stranger.status_code == 404, stranger.text
    # Nothing was written by the refused calls.
    for who in ("a2", "b1"):
        lead = http.get(f"/v1/marketing/leads/{ids[who]}", headers=admin).json()
        assert lead["title"] is None and lead["version"] == 1
    # Nor may an agent give a lead to someone else, on create or update.
    a2_id = world["people"]["a2"].id
    given = http.patch(
        f"/v1/marketing/leads/{ids['a1']}", headers=a1.headers, json={"owner_id": a2_id}
    )
    assert given.status_code == 403, given.text
    made = http.post(
        "/v1/marketing/leads", headers=a1.headers, json={"company": "Given", "owner_id": a2_id}
    )
    assert made.status_code == 403, made.text
    assert http.get(f"/v1/marketing/leads/{ids['a1']}", headers=admin).json()["owner_id"] == a1.id


def test_a_duplicate_lead_is_named_only_to_whom_may_read_it(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    b1 = world["people"]["b1"]
    email = f"a1@{world['tag']}.example"
    refused = http.post("/v1/marketing/leads", headers=b1.headers, json={"email": email})
    assert refused.status_code == 409, refused.text
    assert world["leads"]["a1"] not in refused.text  # the e-mail is taken; by whom is not told
    named = http.post("/v1/marketing/leads", headers=admin, json={"email": email})
    assert named.status_code == 409 and f"lead {world['leads']['a1']}" in named.json()["detail"]


def test_conversion_needs_the_lead_in_the_convert_scope(
    http: httpx.Client, world: dict[str, Any]
) -> None:
    a1, a2, b1 = (world["people"][k] for k in ("a1", "a2", "b1"))
    ids = world["leads"]
    team_mate = http.post(f"/v1/marketing/leads/{ids['a2']}/convert", headers=a1.headers, json={})
    assert team_mate.status_code == 403, team_mate.text  # lead:convert is own for agents
    stranger = http.post(f"/v1/marketing/leads/{ids['b1']}/convert", headers=a1.headers, json={})
    assert stranger.status_code == 404, stranger.text
    assert (
        http.get(f"/v1/marketing/leads/{ids['a2']}/conversion", headers=a1.headers).status_code
        == 404
    )
    assert (
        http.get(f"/v1/marketing/leads/{ids['a2']}", headers=a1.headers).json()["status"] == "new"
    )

    done = http.post(f"/v1/marketing/leads/{ids['a1']}/convert", headers=a1.headers, json={})
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "completed"
    assert (
        http.get(f"/v1/marketing/leads/{ids['a1']}", headers=a1.headers).json()["status"]
        == "converted"
    )
    customer = http.get(f"/v1/customers/{done.json()['customer_id']}", headers=a1.headers)
    assert customer.status_code == 200 and customer.json()["owner_id"] == a1.id
    # The conversion is read through its lead: the team sees it, the other team not.
    seen = http.get(f"/v1/marketing/leads/{ids['a1']}/conversion", headers=a2.headers)
    assert seen.status_code == 200 and seen.json()["id"] == done.json()["id"]
    assert (
        http.get(f"/v1/marketing/leads/{ids['a1']}/conversion", headers=b1.headers).status_code
        == 404
    )


def test_a_viewer_sees_leads_without_email_or_phone(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    viewer = world["people"]["viewer"]
    lead = world["leads"]["b1"]
    seen = http.get(f"/v1/marketing/leads/{lead}", headers=viewer.headers)
    assert seen.status_code == 200, seen.text
    assert seen.json()["email"] is None and seen.json()["phone"] is None
    assert seen.json()["company"] == f"Scope {world['tag']} b1"
    full = http.get(f"/v1/marketing/leads/{lead}", headers=admin).json()
    assert full["email"] == f"b1@{world['tag']}.example" and full["phone"] == "+1 555"
    listed = http.get(
        "/v1/marketing/leads",
        headers=viewer.headers,
        params={"campaign_id": world["campaigns"]["admin"]},
    ).json()["data"]
    assert len(listed) == 3 and all(x["email"] is None and x["phone"] is None for x in listed)
    # A filter on the hidden field would tell it; the history shows it changed, not to what.
    by_email = http.get(
        "/v1/marketing/leads", headers=viewer.headers, params={"email": full["email"]}
    )
    assert by_email.status_code == 403, by_email.text
    history = http.get(f"/v1/marketing/leads/{lead}/history", headers=viewer.headers).json()["data"]
    assert history[-1]["action"] == "created"
    assert history[-1]["changes"]["email"] == [None, None]
    assert full["email"] not in str(history)


def test_campaigns_are_read_by_the_team_and_written_by_managers(
    http: httpx.Client, admin: dict[str, str], world: dict[str, Any]
) -> None:
    a1, b1 = world["people"]["a1"], world["people"]["b1"]
    ours, theirs = world["campaigns"]["mA"], world["campaigns"]["mB"]
    assert http.get(f"/v1/marketing/campaigns/{ours}", headers=a1.headers).status_code == 200
    hidden = http.get(f"/v1/marketing/campaigns/{theirs}", headers=a1.headers)
    assert hidden.status_code == 404, hidden.text
    assert http.get(f"/v1/marketing/campaigns/{theirs}", headers=b1.headers).status_code == 200
    listed = http.get(
        "/v1/marketing/campaigns",
        headers=a1.headers,
        params={"name[prefix]": f"Scope {world['tag']}", "count": "true"},
    ).json()
    assert [c["id"] for c in listed["data"]] == [ours] and listed["total"] == 1
    everything = http.get(
        "/v1/marketing/campaigns", headers=admin, params={"name[prefix]": f"Scope {world['tag']}"}
    ).json()["data"]
    assert len(everything) == 3
    # Its history and members are reached through the campaign.
    assert (
        http.get(f"/v1/marketing/campaigns/{ours}/history", headers=a1.headers).status_code == 200
    )
    assert (
        http.get(f"/v1/marketing/campaigns/{theirs}/history", headers=a1.headers).status_code == 404
    )
    added = http.post(
        f"/v1/marketing/campaigns/{theirs}/members",
        headers=admin,
        json={"lead_id": world["leads"]["b1"]},
    )
    assert added.status_code == 201, added.text
    assert (
        http.get(f"/v1/marketing/campaigns/{theirs}/members", headers=a1.headers).status_code == 404
    )
    members = http.get(f"/v1/marketing/campaigns/{theirs}/members", headers=b1.headers)
    assert members.status_code == 200
    assert [m["lead_id"] for m in members.json()["data"]] == [world["leads"]["b1"]]
    # Agents do not write campaigns at all (no permission, whoever owns it).
    refused = http.patch(
        f"/v1/marketing/campaigns/{ours}", headers=a1.headers, json={"status": "active"}
    )
    assert refused.status_code == 403, refused.text
    made = http.post(
        "/v1/marketing/campaigns", headers=a1.headers, json={"name": "x", "type": "email"}
    )
    assert made.status_code == 403, made.text
    # A manager's campaign:write is unscoped: the other team's manager changes it.
    m_b = world["people"]["mB"]
    changed = http.patch(
        f"/v1/marketing/campaigns/{ours}", headers=m_b.headers, json={"status": "active"}
    )
    assert changed.status_code == 200, changed.text
