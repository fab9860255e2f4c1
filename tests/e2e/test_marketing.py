"""Marketing over HTTP (and one handle): leads with e-mail de-duplication, public
capture with its rate limits, campaigns and members, and lead conversion that
survives a failure and a crash midway."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import ray
from ray import serve

from cluster.settings import Settings
from gateway.principal import Principal

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def _email(tag: str) -> str:
    return f"{tag}-{os.urandom(4).hex()}@Example.com"


def _client() -> dict[str, str]:
    """A distinct client address per test (the test stack trusts the loopback proxy)."""
    octets = os.urandom(2)
    return {"X-Forwarded-For": f"198.51.{octets[0]}.{octets[1]}"}


def _lead(http: httpx.Client, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    made = http.post("/v1/marketing/leads", headers=headers, json=fields)
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def _form(http: httpx.Client, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    made = http.post("/v1/marketing/forms", headers=admin, json={"name": "Signup", **fields})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def _customers_with_source(settings: Settings, key: str) -> int:
    """Customers carrying `key`, counted in every shard server's customer database."""

    async def count() -> int:
        total = 0
        for address in settings.shard_server_addresses():
            conn = await asyncpg.connect(settings.dsn_for(address.host, address.port, "customer"))
            try:
                total += await conn.fetchval(
                    "SELECT count(*) FROM customers WHERE source_key = $1", key
                )
            finally:
                await conn.close()
        return total

    return asyncio.run(count())


# -- leads ---------------------------------------------------------------------------
def test_lead_crud_duplicates_and_history(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    email = _email("Ada")
    lead = _lead(http, agent, first_name="Ada", email=email, company="Analytical", source="event")
    url = f"/v1/marketing/leads/{lead['id']}"
    assert lead["status"] == "new" and lead["score"] is None and lead["version"] == 1

    dup = http.post(
        "/v1/marketing/leads", headers=admin, json={"email": email.upper(), "last_name": "X"}
    )
    assert dup.status_code == 409 and dup.headers["content-type"] == PROBLEM
    assert dup.json()["errors"] == [
        {"field": "email", "message": f"duplicate of lead {lead['id']}"}
    ]
    assert (
        http.post(
            "/v1/marketing/leads", headers=admin, json={"email": email, "score": 9}
        ).status_code
        == 422
    )
    assert (
        http.post("/v1/marketing/leads", headers=admin, json={"source": "web_form"}).status_code
        == 422
    )

    stale = http.patch(url, headers={**agent, "If-Match": '"9"'}, json={"status": "contacted"})
    assert stale.status_code == 412
    fresh = http.patch(url, headers={**agent, "If-Match": '"1"'}, json={"status": "qualified"})
    assert fresh.status_code == 200 and fresh.json()["version"] == 2
    assert http.patch(url, headers=agent, json={"email": "b@example.com"}).status_code == 422
    assert http.patch(url, headers=agent, json={"status": "converted"}).status_code == 422

    found = http.get("/v1/marketing/leads", headers=agent, params={"email": email.lower()}).json()[
        "data"
    ]
    assert [x["id"] for x in found] == [lead["id"]]
    listed = http.get(
        "/v1/marketing/leads",
        headers=agent,
        params={"status": "qualified", "sort": "-score", "limit": 200},
    )
    assert listed.status_code == 200 and lead["id"] in [x["id"] for x in listed.json()["data"]]
    assert (
        http.get("/v1/marketing/leads", headers=agent, params={"colour": "red"}).status_code == 422
    )

    history = http.get(f"{url}/history", headers=agent).json()["data"]
    assert [h["action"] for h in history] == ["updated", "created"]
    assert history[0]["changes"]["status"] == ["new", "qualified"]

    assert http.delete(url, headers=agent).status_code == 403  # agents do not delete leads
    assert http.delete(url, headers=admin).status_code == 204
    assert http.get(url, headers=admin).status_code == 404
    # A deleted lead still owns its e-mail: restore it rather than make a second one.
    again = http.post("/v1/marketing/leads", headers=admin, json={"email": email})
    assert again.status_code == 409 and f"lead {lead['id']}" in again.json()["detail"]
    assert http.post(f"{url}/restore", headers=admin).status_code == 200


# -- capture -------------------------------------------------------------------------
def test_capture_without_a_token_creates_then_touches(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    campaign = http.post(
        "/v1/marketing/campaigns", headers=admin, json={"name": "Spring", "type": "email"}
    )
    assert campaign.status_code == 201
    form = _form(
        http, admin, fields=["first_name", "email", "message"], campaign_id=campaign.json()["id"]
    )
    email = _email("cap")
    client = _client()
    first = http.post(
        f"/v1/marketing/capture/{form['form_key']}", headers=client, json={"email": email}
    )
    assert first.status_code == 202 and first.json() == {"status": "received"}
    second = http.post(
        f"/v1/marketing/capture/{form['form_key']}",
        headers=client,
        data={"email": email.upper(), "first_name": "Grace", "message": "call me"},
    )
    assert second.status_code == 202 and second.json() == first.json()

    leads = http.get("/v1/marketing/leads", headers=admin, params={"email": email}).json()["data"]
    assert len(leads) == 1
    lead = leads[0]
    assert lead["source"] == "web_form" and lead["capture_count"] == 2
    assert lead["first_name"] == "Grace" and lead["notes"] == "call me"
    assert lead["campaign_id"] == campaign.json()["id"]
    members = http.get(
        f"/v1/marketing/campaigns/{campaign.json()['id']}/members", headers=admin
    ).json()
    assert [m["lead_id"] for m in members["data"]] == [lead["id"]]


def test_capture_refuses_bad_input(http: httpx.Client, admin: dict[str, str]) -> None:
    form = _form(http, admin, fields=["email", "company"], required_fields=["email", "company"])
    url = f"/v1/marketing/capture/{form['form_key']}"
    client = _client()
    unknown_form = http.post(
        "/v1/marketing/capture/no-such-form-key", headers=client, json={"email": "a@b.co"}
    )
    assert unknown_form.status_code == 404
    extra = http.post(url, headers=client, json={"email": "a@b.co", "company": "C", "admin": 1})
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "admin"
    bad = http.post(url, headers=client, json={"email": "not-an-email", "company": "C"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "email"
    missing = http.post(url, headers=client, json={"email": "a@b.co"})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "company"
    assert http.post(url, headers=_client(), json=["a"]).status_code == 422
    huge = http.post(url, headers=_client(), json={"email": "a@b.co", "company": "x" * 9000})
    assert huge.status_code == 413
    # (a second form: this one has used its 5 captures a minute of the test stack)
    closed = _form(http, admin)
    patched = http.patch(
        f"/v1/marketing/forms/{closed['id']}", headers=admin, json={"active": False}
    )
    assert patched.status_code == 200 and patched.json()["active"] is False
    inactive = http.post(
        f"/v1/marketing/capture/{closed['form_key']}", headers=_client(), json={"email": "a@b.co"}
    )
    assert inactive.status_code == 404


def test_capture_is_rate_limited_per_form_and_per_client(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    # Per form (limit 5 in the test stack): distinct clients, one form.
    form = _form(http, admin)
    url = f"/v1/marketing/capture/{form['form_key']}"
    codes = [
        http.post(url, headers=_client(), json={"email": _email("rl")}).status_code
        for _ in range(6)
    ]
    assert codes == [202] * 5 + [429]
    limited = http.post(url, headers=_client(), json={"email": _email("rl")})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == PROBLEM

    # Per client (limit 8): one client, spread over forms that are each under theirs.
    client = _client()
    forms = [_form(http, admin)["form_key"] for _ in range(3)]
    codes = [
        http.post(
            f"/v1/marketing/capture/{forms[i // 4]}", headers=client, json={"email": _email("c")}
        ).status_code
        for i in range(9)
    ]
    assert codes == [202] * 8 + [429]
    # The spoofable left part of X-Forwarded-For does not make a new client.
    spoofed = {"X-Forwarded-For": f"203.0.113.9, {client['X-Forwarded-For']}"}
    assert (
        http.post(f"/v1/marketing/capture/{forms[2]}", headers=spoofed, json={}).status_code == 429
    )


# -- campaigns -----------------------------------------------------------------------
def test_campaigns_and_members(http: httpx.Client, admin: dict[str, str]) -> None:
    backwards = http.post(
        "/v1/marketing/campaigns",
        headers=admin,
        json={
            "name": "Oops",
            "type": "event",
            "start_date": "2026-05-02",
            "end_date": "2026-05-01",
        },
    )
    assert backwards.status_code == 422 and backwards.json()["errors"][0]["field"] == "end_date"
    made = http.post(
        "/v1/marketing/campaigns",
        headers=admin,
        json={
            "name": "Expo",
            "type": "event",
            "budget": {"amount": "1500.00", "currency": "EUR"},
            "start_date": "2026-05-01",
            "end_date": "2026-05-03",
        },
    )
    assert made.status_code == 201, made.text
    campaign = made.json()
    assert campaign["budget"] == {"amount": "1500.0000", "currency": "EUR"}
    url = f"/v1/marketing/campaigns/{campaign['id']}"
    late = http.patch(url, headers=admin, json={"end_date": "2026-04-01"})
    assert late.status_code == 422
    assert http.patch(url, headers=admin, json={"status": "active"}).json()["version"] == 2

    customer = http.post("/v1/customers", headers=admin, json={"name": "Member Co"}).json()
    contact = http.post(
        f"/v1/customers/{customer['id']}/contacts", headers=admin, json={"first_name": "Mo"}
    ).json()
    lead = _lead(http, admin, email=_email("member"))
    members = f"{url}/members"
    by_contact = http.post(members, headers=admin, json={"contact_id": contact["id"]})
    assert by_contact.status_code == 201, by_contact.text
    assert http.post(members, headers=admin, json={"contact_id": contact["id"]}).status_code == 409
    by_lead = http.post(members, headers=admin, json={"lead_id": lead["id"], "status": "sent"})
    assert by_lead.status_code == 201
    assert http.post(members, headers=admin, json={"lead_id": lead["id"]}).status_code == 409
    both = {"lead_id": lead["id"], "contact_id": contact["id"]}
    assert http.post(members, headers=admin, json=both).status_code == 422
    assert http.post(members, headers=admin, json={"lead_id": "4242"}).status_code == 422

    listed = http.get(members, headers=admin).json()["data"]
    assert {m["id"] for m in listed} == {by_contact.json()["id"], by_lead.json()["id"]}
    member_url = f"{members}/{by_lead.json()['id']}"
    assert http.patch(member_url, headers=admin, json={"status": "responded"}).status_code == 200
    assert http.delete(member_url, headers=admin).status_code == 204
    assert len(http.get(members, headers=admin).json()["data"]) == 1
    assert http.post(members, headers=admin, json={"lead_id": lead["id"]}).status_code == 201


# -- conversion ----------------------------------------------------------------------
def test_conversion_is_idempotent_and_needs_permission(
    http: httpx.Client, agent: dict[str, str], viewer: dict[str, str]
) -> None:
    lead = _lead(
        http, agent, first_name="Lin", last_name="Chen", email=_email("conv"), company="Chen Ltd"
    )
    url = f"/v1/marketing/leads/{lead['id']}/convert"
    assert http.post(url, headers=viewer, json={}).status_code == 403

    done = http.post(url, headers=agent, json={})
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["state"] == "completed" and result["deal_id"] is None
    converted = http.get(f"/v1/marketing/leads/{lead['id']}", headers=agent).json()
    assert converted["status"] == "converted"
    assert converted["converted_customer_id"] == result["customer_id"]
    assert converted["converted_contact_id"] == result["contact_id"]
    customer = http.get(f"/v1/customers/{result['customer_id']}", headers=agent).json()
    assert customer["name"] == "Chen Ltd"
    contact = http.get(f"/v1/customers/contacts/{result['contact_id']}", headers=agent).json()
    assert contact["customer_id"] == result["customer_id"] and contact["first_name"] == "Lin"

    again = http.post(url, headers=agent, json={"customer": {"name": "Other"}})
    assert again.status_code == 200
    assert {k: again.json()[k] for k in ("customer_id", "contact_id", "state")} == {
        k: result[k] for k in ("customer_id", "contact_id", "state")
    }
    agent_id = http.get("/v1/auth/me", headers=agent).json()["id"]
    for path in (
        f"/v1/customers/{result['customer_id']}",
        f"/v1/customers/contacts/{result['contact_id']}",
    ):
        history = http.get(f"{path}/history", headers=viewer).json()["data"]
        assert [(h["action"], h["actor_id"]) for h in history] == [("created", agent_id)]


@pytest.fixture(scope="module")
def marketing_handle(serve_app: Settings) -> Iterator[Any]:
    os.environ["RAY_AUTH_MODE"] = "token"
    ray.init(address=serve_app.ray_address, namespace="nextflow-tests", log_to_driver=False)
    try:
        handle = serve.get_app_handle("marketing")
        yield handle
    finally:
        handle.reconfigure.remote({}).result()
        ray.shutdown()


def test_conversion_failing_midway_then_retried(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    """A deal step that really fails after the customer and contact were made; the
    retry with corrected options finishes, with one customer for the lead."""
    lead = _lead(http, admin, first_name="Kim", email=_email("fail"))
    url = f"/v1/marketing/leads/{lead['id']}/convert"
    deal = {"name": "First order", "amount": {"amount": "100.00", "currency": "EUR"}}
    failing = {"create_deal": True, "deal": {**deal, "stage_id": "4242"}}  # no such stage
    failed = http.post(url, headers=admin, json=failing)
    assert failed.status_code == 422, failed.text
    assert failed.json()["errors"][0]["field"] == "stage_id"
    state = http.get(f"/v1/marketing/leads/{lead['id']}/conversion", headers=admin).json()
    assert state["state"] == "contact_done" and state["last_error"].startswith("deal:")
    assert state["customer_id"] and state["contact_id"] and state["deal_id"] is None
    assert http.get(f"/v1/marketing/leads/{lead['id']}", headers=admin).json()["status"] == "new"

    retried = http.post(url, headers=admin, json={"create_deal": True, "deal": deal})
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert body["state"] == "completed" and body["attempts"] == 2 and body["deal_id"]
    assert (body["customer_id"], body["contact_id"]) == (state["customer_id"], state["contact_id"])
    made = http.get(f"/v1/sales/deals/{body['deal_id']}", headers=admin).json()
    assert made["customer_id"] == body["customer_id"] and Decimal(made["amount"]["amount"]) == 100
    assert _customers_with_source(serve_app, f"lead:{lead['id']}") == 1
    assert http.post(url, headers=admin, json={}).json()["deal_id"] == body["deal_id"]
    lead_now = http.get(f"/v1/marketing/leads/{lead['id']}", headers=admin).json()
    assert lead_now["converted_deal_id"] == body["deal_id"]
    assert (
        http.get(f"/v1/marketing/leads/{lead['id']}", headers=admin).json()["status"] == "converted"
    )


def test_crash_between_steps_then_retry_and_resume(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings, marketing_handle: Any
) -> None:
    """A crash after the customer was made but before that was recorded; the retry
    finds the customer by its source key and finishes exactly once. A second crash,
    after the contact step, is finished by `resume_conversions` through the handle."""
    marketing_handle.reconfigure.remote({"fail_conversion_after": "customer"}).result()
    lead = _lead(http, admin, first_name="Ola", email=_email("crash"))
    url = f"/v1/marketing/leads/{lead['id']}/convert"
    crashed = http.post(url, headers=admin, json={})
    assert crashed.status_code == 503, crashed.text
    state = http.get(f"/v1/marketing/leads/{lead['id']}/conversion", headers=admin).json()
    assert state["state"] == "started" and state["customer_id"] is None
    key = f"lead:{lead['id']}"
    assert _customers_with_source(serve_app, key) == 1  # made, not recorded

    marketing_handle.reconfigure.remote({}).result()
    done = http.post(url, headers=admin, json={})
    assert done.status_code == 200 and done.json()["state"] == "completed"
    assert _customers_with_source(serve_app, key) == 1
    # The retry found the customer the crashed call made: one "created" in its history.
    made = http.get(f"/v1/customers/{done.json()['customer_id']}/history", headers=admin).json()
    assert [h["action"] for h in made["data"]] == ["created"]
    assert http.post(url, headers=admin, json={}).json() == done.json()

    marketing_handle.reconfigure.remote({"fail_conversion_after": "contact"}).result()
    other = _lead(http, admin, last_name="Park", email=_email("resume"))
    assert (
        http.post(f"/v1/marketing/leads/{other['id']}/convert", headers=admin, json={}).status_code
        == 503
    )
    marketing_handle.reconfigure.remote({}).result()
    me = http.get("/v1/auth/me", headers=admin).json()
    system = Principal(
        user_id=int(me["id"]),
        role="system",
        kind="system",
        permissions=frozenset({"lead:convert", "customer:write", "contact:write"}),
    )
    resumed = marketing_handle.resume_conversions.remote(system, stale_after_s=0).result()
    mine = [c for c in resumed if c.lead_id == int(other["id"])]
    assert len(mine) == 1 and mine[0].state == "completed"
    assert _customers_with_source(serve_app, f"lead:{other['id']}") == 1
    assert (
        http.get(f"/v1/marketing/leads/{other['id']}", headers=admin).json()["status"]
        == "converted"
    )
