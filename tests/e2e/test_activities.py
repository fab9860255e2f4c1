"""Activities (notes, tasks, calls, meetings, logged e-mails) and a customer's
timeline against the session's stack: each activity on its customer's shard, checked
against the records it names, completed, reminded through Notification, moved with
its lead on conversion; the timeline one stream across services, paged exactly."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shards import ids
from tests.e2e.conftest import Member, team_people, until

pytestmark = pytest.mark.e2e


def _customer(http: httpx.Client, headers: dict[str, str], name: str = "Acme") -> dict[str, Any]:
    made = http.post(
        "/v1/customers", headers=headers, json={"name": f"{name} {os.urandom(3).hex()}"}
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


def _activity(http: httpx.Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    made = http.post("/v1/customers/activities", headers=headers, json=body)
    assert made.status_code == 201, made.text
    assert made.headers["location"] == f"/v1/customers/activities/{made.json()['id']}"
    return dict(made.json())


def _at(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def _problem_field(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["errors"][0]["field"])


def test_activities_are_logged_checked_completed_and_listed(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    acme, other = _customer(http, admin), _customer(http, admin, "Other")
    contact = http.post(
        f"/v1/customers/{acme['id']}/contacts", headers=admin, json={"first_name": "Ana"}
    ).json()
    theirs = http.post(
        f"/v1/customers/{other['id']}/contacts", headers=admin, json={"first_name": "Bo"}
    ).json()
    note = _activity(
        http,
        admin,
        kind="note",
        customer_id=acme["id"],
        subject="Met at fair",
        body="Wants a demo",
        contact_id=contact["id"],
    )
    assert ids.shard_of(int(note["id"])) == ids.shard_of(int(acme["id"]))
    assert note["owner_id"] is not None and note["done"] is False and note["version"] == 1
    call = _activity(
        http,
        admin,
        kind="call",
        customer_id=acme["id"],
        subject="Intro call",
        occurred_at=_at(-120),
        duration_minutes=25,
        direction="outbound",
        outcome="interested",
        participants=[{"contact_id": contact["id"]}, {"email": "x@acme.io"}],
    )
    assert call["participants"] == [{"contact_id": contact["id"]}, {"email": "x@acme.io"}]
    task = _activity(
        http,
        admin,
        kind="task",
        customer_id=acme["id"],
        subject="Send quote",
        due_at=_at(60 * 24),
        priority="high",
    )
    assert task["assignee_id"] == note["owner_id"] and task["priority"] == "high"

    # Newest first by `at` (a call sits where it happened, two hours ago).
    url = f"/v1/customers/{acme['id']}/activities"
    listed = http.get(url, headers=admin).json()["data"]
    assert [a["id"] for a in listed] == [task["id"], note["id"], call["id"]]
    assert [
        a["id"]
        for a in http.get(url, headers=admin, params={"kind[in]": "call,task"}).json()["data"]
    ] == [task["id"], call["id"]]
    assert [
        a["id"] for a in http.get(url, headers=admin, params={"open": "true"}).json()["data"]
    ] == [task["id"]]
    paged = http.get(url, headers=admin, params={"limit": 2}).json()
    rest = http.get(url, headers=admin, params={"limit": 2, "cursor": paged["next_cursor"]})
    assert [a["id"] for a in paged["data"] + rest.json()["data"]] == [a["id"] for a in listed]

    # What a body names is checked: the customer, its contact, task-only fields.
    bad = {"kind": "note", "customer_id": acme["id"], "subject": "x"}
    post = "/v1/customers/activities"
    assert (
        _problem_field(http.post(post, headers=admin, json={**bad, "contact_id": theirs["id"]}))
        == "contact_id"
    )
    assert (
        _problem_field(http.post(post, headers=admin, json={**bad, "customer_id": "4242"}))
        == "customer_id"
    )
    assert _problem_field(http.post(post, headers=admin, json={**bad, "due_at": _at(5)})) == "body"
    assert (
        _problem_field(
            http.post(post, headers=admin, json={**bad, "due_at": "2026-01-01T10:00:00"})
        )
        == "due_at"
    )
    deal = http.post(
        "/v1/sales/deals",
        headers=admin,
        json={
            "customer_id": other["id"],
            "name": "Theirs",
            "amount": {"amount": "10", "currency": "EUR"},
        },
    )
    assert deal.status_code == 201, deal.text
    assert (
        _problem_field(http.post(post, headers=admin, json={**bad, "deal_id": deal.json()["id"]}))
        == "deal_id"
    )

    # Completed with If-Match; a stale version is refused; a note has no `done`.
    one = f"/v1/customers/activities/{task['id']}"
    stale = http.patch(one, headers={**admin, "If-Match": '"7"'}, json={"done": True})
    assert stale.status_code == 412
    done = http.patch(one, headers={**admin, "If-Match": '"1"'}, json={"done": True})
    assert done.status_code == 200, done.text
    assert done.json()["done"] is True and done.json()["done_at"] is not None
    assert done.json()["version"] == 2
    assert http.get(url, headers=admin, params={"open": "true"}).json()["data"] == []
    refused = http.patch(
        f"/v1/customers/activities/{note['id']}", headers=admin, json={"done": True}
    )
    assert _problem_field(refused) == "done"

    assert http.delete(f"/v1/customers/activities/{note['id']}", headers=admin).status_code == 204
    assert http.get(f"/v1/customers/activities/{note['id']}", headers=admin).status_code == 404
    back = http.post(f"/v1/customers/activities/{note['id']}/restore", headers=admin)
    assert back.status_code == 200 and back.json()["subject"] == "Met at fair"


def test_a_timeline_merges_every_service_newest_first_and_pages_exactly(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    acme = _customer(http, admin)
    cid = acme["id"]
    renamed = http.patch(f"/v1/customers/{cid}", headers=admin, json={"industry": "retail"})
    assert renamed.status_code == 200
    _activity(http, admin, kind="meeting", customer_id=cid, subject="Kick-off")
    deal = http.post(
        "/v1/sales/deals",
        headers=admin,
        json={
            "customer_id": cid,
            "name": "Big one",
            "amount": {"amount": "500", "currency": "EUR"},
        },
    )
    assert deal.status_code == 201, deal.text
    pipeline = http.get(f"/v1/sales/pipelines/{deal.json()['pipeline_id']}", headers=admin).json()
    later = next(s for s in pipeline["stages"] if s["name"] == "Qualification")
    moved = http.post(
        f"/v1/sales/deals/{deal.json()['id']}/stage", headers=admin, json={"stage_id": later["id"]}
    )
    assert moved.status_code == 200, moved.text
    ticket = http.post(
        "/v1/support/tickets", headers=admin, json={"subject": "Broken", "customer_id": cid}
    )
    assert ticket.status_code == 201, ticket.text
    comment = http.post(
        f"/v1/support/tickets/{ticket.json()['id']}/comments",
        headers=admin,
        json={"body": "Looking into it", "public": True},
    )
    assert comment.status_code == 201, comment.text
    upload = http.post(
        "/v1/files",
        headers=admin,
        data={"owner_type": "customer", "owner_id": cid},
        files={"file": ("brief.txt", b"hello", "text/plain")},
    )
    assert upload.status_code == 201, upload.text
    token = {"NextFlow-Read-After": upload.headers.get("NextFlow-Read-After", "")}
    headers = {**admin, **{k: v for k, v in token.items() if v}}

    url = f"/v1/customers/{cid}/timeline"
    whole = http.get(url, headers=headers, params={"limit": 200})
    assert whole.status_code == 200, whole.text
    items = whole.json()["data"]
    kinds = [i["kind"] for i in items]
    for kind in ("change", "meeting", "deal", "deal_stage", "ticket", "comment", "file"):
        assert kind in kinds, (kind, kinds)
    assert kinds[0] == "file"  # the newest
    times = [datetime.fromisoformat(i["at"]) for i in items]
    assert times == sorted(times, reverse=True)
    stage = next(i for i in items if i["kind"] == "deal_stage")
    assert stage["record_id"] == deal.json()["id"] and stage["title"] == "Deal moved: Big one"
    assert stage["data"]["to_stage_id"] == later["id"]

    # Paged three at a time, every item exactly once, in the same order.
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = http.get(url, headers=headers, params=params).json()
        seen += [f"{i['kind']}:{i['id']}" for i in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"{i['kind']}:{i['id']}" for i in items]
    oldest = http.get(url, headers=headers, params={"sort": "at", "limit": 200}).json()["data"]
    assert [i["id"] for i in oldest] == [i["id"] for i in reversed(items)]
    only = http.get(url, headers=headers, params={"kind[in]": "ticket,comment"}).json()["data"]
    assert [i["kind"] for i in only] == ["comment", "ticket"]
    assert http.get(url, headers=headers, params={"kind": "gossip"}).status_code == 422
    assert http.get("/v1/customers/4242/timeline", headers=admin).status_code == 404
    # The overview composes the first of each, activities included.
    overview = http.get(f"/v1/overview/customers/{cid}", headers=headers)
    assert overview.status_code == 200, overview.text
    body = overview.json()
    assert [a["subject"] for a in body["activities"]] == ["Kick-off"]
    assert [d["id"] for d in body["deals"]] == [deal.json()["id"]]
    assert [t["id"] for t in body["tickets"]] == [ticket.json()["id"]]


def test_my_tasks_span_shards_and_reminders_reach_the_assignee(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    worker = Member(http, admin, "agent", None)
    customers = [_customer(http, worker.headers, f"T{i}") for i in range(6)]
    assert len({ids.shard_of(int(c["id"])) for c in customers}) > 1
    due = [_at(60 * 24 * d) for d in (3, 1, 2, 5, 4)]
    made = [
        _activity(
            http, worker.headers, kind="task", customer_id=c["id"], subject=f"Task {i}", due_at=d
        )
        for i, (c, d) in enumerate(zip(customers, due, strict=False))
    ]
    undated = _activity(
        http, worker.headers, kind="task", customer_id=customers[5]["id"], subject="Someday"
    )
    # Someone else's task assigned to the worker shows too, and tells them.
    handed = _activity(
        http,
        admin,
        kind="task",
        customer_id=customers[0]["id"],
        subject="From the boss",
        due_at=_at(30),
        assignee_id=worker.id,
    )
    expected = [handed["id"]] + [made[i]["id"] for i in (1, 2, 0, 4, 3)] + [undated["id"]]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/customers/activities/my-tasks", headers=worker.headers, params=params)
        assert page.status_code == 200, page.text
        seen += [t["id"] for t in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    soon = http.get(
        "/v1/customers/activities/my-tasks", headers=worker.headers, params={"due_at[lt]": _at(60)}
    ).json()["data"]
    assert [t["id"] for t in soon] == [handed["id"]]
    # The assignee may work on the task the admin owns.
    ok = http.patch(
        f"/v1/customers/activities/{handed['id']}", headers=worker.headers, json={"done": True}
    )
    assert ok.status_code == 200, ok.text

    def titles() -> list[str]:
        page = http.get("/v1/notifications", headers=worker.headers).json()["data"]
        return [n["title"] for n in page]

    assert until(lambda: "Task assigned to you: From the boss" in titles(), timeout=30)
    _activity(
        http,
        worker.headers,
        kind="task",
        customer_id=customers[1]["id"],
        subject="Call back",
        remind_at=_at(-0.1),
    )
    assert until(lambda: "Reminder: Call back" in titles(), timeout=30), titles()


def test_a_leads_activities_go_to_its_customer_on_conversion(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    lead = http.post(
        "/v1/marketing/leads",
        headers=admin,
        json={
            "first_name": "Lee",
            "company": "Lee Co",
            "email": f"lee-{os.urandom(3).hex()}@lee.io",
        },
    )
    assert lead.status_code == 201, lead.text
    lid = lead.json()["id"]
    logged = _activity(http, admin, kind="call", lead_id=lid, subject="First contact")
    assert logged["customer_id"] is None
    assert ids.shard_of(int(logged["id"])) == ids.shard_of(int(lid))
    assert (
        _problem_field(
            http.post(
                "/v1/customers/activities",
                headers=admin,
                json={"kind": "note", "lead_id": "4242", "subject": "x"},
            )
        )
        == "lead_id"
    )

    converted = http.post(f"/v1/marketing/leads/{lid}/convert", headers=admin, json={})
    assert converted.status_code == 200, converted.text
    customer_id = converted.json()["customer_id"]
    assert ids.shard_of(int(customer_id)) == ids.shard_of(int(lid))
    token = converted.headers.get("NextFlow-Read-After")
    headers = {**admin, **({"NextFlow-Read-After": token} if token else {})}
    theirs = http.get(f"/v1/customers/{customer_id}/activities", headers=headers).json()["data"]
    assert [a["id"] for a in theirs] == [logged["id"]]
    assert theirs[0]["customer_id"] == customer_id and theirs[0]["lead_id"] == lid
    again = http.get(f"/v1/customers/leads/{lid}/activities", headers=headers).json()["data"]
    assert [a["id"] for a in again] == [logged["id"]]
    timeline = http.get(f"/v1/customers/{customer_id}/timeline", headers=headers).json()["data"]
    assert logged["id"] in [i["id"] for i in timeline if i["kind"] == "call"]


def test_activities_follow_the_roles_scopes(http: httpx.Client, admin: dict[str, str]) -> None:
    _, people = team_people(
        http,
        admin,
        "act",
        {"a1": ("agent", "A"), "a2": ("agent", "A"), "b": ("agent", "B"), "v": ("viewer", None)},
    )
    a1, a2, b, v = people["a1"], people["a2"], people["b"], people["v"]
    mine = _customer(http, a1.headers)
    note = _activity(http, a1.headers, kind="note", customer_id=mine["id"], subject="Mine")
    one = f"/v1/customers/activities/{note['id']}"
    # The team reads it; only its owner changes it; another team does not see it. (a2
    # brings no read-after token for a1's write: its read may reach a replica that has
    # not replayed the write yet, for a moment.)
    assert until(lambda: http.get(one, headers=a2.headers).status_code == 200)
    assert http.patch(one, headers=a2.headers, json={"subject": "Ours"}).status_code == 403
    assert http.get(one, headers=b.headers).status_code == 404
    assert http.patch(one, headers=b.headers, json={"subject": "Theirs"}).status_code == 404
    # Not even what kind of activity it is: a task field on it is a 404 too, not a 422.
    assert http.patch(one, headers=b.headers, json={"due_at": _at(5)}).status_code == 404
    # Another team's customer is not there to log on; a viewer logs nothing.
    body = {"kind": "note", "customer_id": mine["id"], "subject": "x"}
    assert (
        _problem_field(http.post("/v1/customers/activities", headers=b.headers, json=body))
        == "customer_id"
    )
    assert http.post("/v1/customers/activities", headers=v.headers, json=body).status_code == 403
    assert http.get(one, headers=v.headers).status_code == 200
    assert http.delete(one, headers=a1.headers).status_code == 403  # agents do not delete
    # The timeline follows the same scopes, kind by kind.
    timeline = f"/v1/customers/{mine['id']}/timeline"
    for who in (a1, a2):
        for kinds in ({}, {"kind[in]": "order"}, {"kind[in]": "note,deal_stage,comment"}):
            page = http.get(timeline, headers=who.headers, params=kinds)
            assert page.status_code == 200, page.text
    notes = http.get(timeline, headers=a2.headers, params={"kind": "note"}).json()["data"]
    assert [i["id"] for i in notes] == [note["id"]]
    assert http.get(timeline, headers=b.headers).status_code == 404
