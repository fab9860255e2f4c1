"""Privacy exports against the session's stack: everything held about a customer (its
records across every service, their histories, files with their content, the
notifications users got about it) or a lead, as one ZIP from a job
(deployments/integration/privacy.py)."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Member
from tests.e2e.test_files import upload

pytestmark = pytest.mark.e2e


def _ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()


def _export(http: httpx.Client, who: dict[str, str], kind: str, person: str) -> zipfile.ZipFile:
    accepted = _ok(
        http.post(
            "/v1/integration/privacy/exports", headers=who, json={"type": kind, "record_id": person}
        ),
        202,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job = _ok(http.get(accepted["status_url"], headers=who))
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.3)
    assert job["status"] == "succeeded", job
    assert job["kind"] == "privacy_export"
    got = http.get(job["result"]["file_url"], headers=who)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    assert len(got.content) == job["result"]["bytes"]
    return zipfile.ZipFile(io.BytesIO(got.content))


def _part(archive: zipfile.ZipFile, name: str) -> Any:
    return json.loads(archive.read(name))


def test_everything_held_about_a_customer_in_one_archive(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = os.urandom(3).hex()
    customer = _ok(
        http.post(
            "/v1/customers",
            headers=admin,
            json={"name": f"Privacy {tag}", "email": f"p.{tag}@example.com"},
        ),
        201,
    )
    cid = customer["id"]
    _ok(http.patch(f"/v1/customers/{cid}", headers=admin, json={"industry": "Retail"}))
    contact = _ok(
        http.post(
            f"/v1/customers/{cid}/contacts",
            headers=admin,
            json={"first_name": "Ann", "email": f"ann.{tag}@example.com"},
        ),
        201,
    )
    _ok(
        http.post(
            "/v1/customers/activities",
            headers=admin,
            json={"kind": "note", "customer_id": cid, "subject": f"Met {tag}"},
        ),
        201,
    )
    deal = _ok(
        http.post(
            "/v1/sales/deals",
            headers=admin,
            json={
                "customer_id": cid,
                "name": f"Deal {tag}",
                "amount": {"amount": "10", "currency": "EUR"},
            },
        ),
        201,
    )
    _ok(http.post(f"/v1/sales/deals/{deal['id']}/won", headers=admin, json={"reason": "Fit"}))
    ticket = _ok(
        http.post(
            "/v1/support/tickets",
            headers=admin,
            json={"subject": f"Help {tag}", "customer_id": cid},
        ),
        201,
    )
    _ok(
        http.post(
            f"/v1/support/tickets/{ticket['id']}/comments",
            headers=admin,
            json={"body": f"On it {tag}", "public": True},
        ),
        201,
    )
    content = f"contract of {tag}\n".encode() * 100
    made = upload(http, admin, cid, content, name="contract 😀.txt")
    assert made.status_code == 201, made.text
    on_contact = upload(http, admin, contact["id"], b"id card", name="id.txt", owner_type="contact")
    assert on_contact.status_code == 201, on_contact.text

    # Someone without `privacy:export` may not; nobody learns of a missing person.
    viewer = Member(http, admin, "manager", None)
    refused = http.post(
        "/v1/integration/privacy/exports",
        headers=viewer.headers,
        json={"type": "customer", "record_id": cid},
    )
    assert refused.status_code == 403, refused.text
    missing = http.post(
        "/v1/integration/privacy/exports",
        headers=admin,
        json={"type": "customer", "record_id": "123"},
    )
    assert missing.status_code == 404, missing.text
    assert (
        http.post(
            "/v1/integration/privacy/exports",
            headers=admin,
            json={"type": "user", "record_id": cid},
        ).status_code
        == 422
    )

    # The deal's won notification reaches its owner a moment after.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        inbox = _ok(http.get("/v1/notifications", headers=admin, params={"limit": 200}))["data"]
        if any(n["data"].get("deal", {}).get("id") == deal["id"] for n in inbox):
            break
        time.sleep(0.3)
    archive = _export(http, admin, "customer", cid)
    manifest = _part(archive, "manifest.json")
    assert manifest["subject"] == {"type": "customer", "id": cid}
    assert _part(archive, "customer.json")["email"] == f"p.{tag}@example.com"
    history = _part(archive, "customer-history.json")
    assert [h["action"] for h in history][:2] == ["created", "updated"]
    assert [c["id"] for c in _part(archive, "contacts.json")] == [contact["id"]]
    assert contact["id"] in _part(archive, "contact-history.json")
    assert [a["subject"] for a in _part(archive, "activities.json")] == [f"Met {tag}"]
    assert [d["id"] for d in _part(archive, "deals.json")] == [deal["id"]]
    assert _part(archive, "deal-stage-changes.json")[deal["id"]]
    assert [t["id"] for t in _part(archive, "tickets.json")] == [ticket["id"]]
    assert [c["body"] for c in _part(archive, "ticket-comments.json")[ticket["id"]]] == [
        f"On it {tag}"
    ]
    assert any(n["event_type"] == "deal.won" for n in _part(archive, "notifications.json"))
    files = {f["id"]: f for f in _part(archive, "files.json")}
    assert set(files) == {made.json()["id"], on_contact.json()["id"]}
    stored = {n for n in archive.namelist() if n.startswith("files/")}
    assert len(stored) == 2
    (contract,) = [n for n in stored if n.startswith(f"files/{made.json()['id']}-")]
    assert archive.read(contract) == content
    assert manifest["parts"]["deals.json"] == 1


def test_a_leads_archive(http: httpx.Client, admin: dict[str, str]) -> None:
    tag = os.urandom(3).hex()
    lead = _ok(
        http.post(
            "/v1/marketing/leads",
            headers=admin,
            json={"company": f"Lead {tag}", "email": f"l.{tag}@example.com"},
        ),
        201,
    )
    _ok(
        http.post(
            "/v1/customers/activities",
            headers=admin,
            json={"kind": "call", "lead_id": lead["id"], "subject": f"Called {tag}"},
        ),
        201,
    )
    archive = _export(http, admin, "lead", lead["id"])
    assert _part(archive, "lead.json")["email"] == f"l.{tag}@example.com"
    assert _part(archive, "lead-history.json")[0]["action"] == "created"
    assert [a["subject"] for a in _part(archive, "activities.json")] == [f"Called {tag}"]
    assert _part(archive, "files.json") == []
