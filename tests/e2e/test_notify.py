"""Notifications and outbound webhooks in the deployed application: over HTTP, with
events handed to `handle()` through the deployments' handles (until the event stream
drives them), and a real local webhook receiver on 127.0.0.2 (the one address the
test settings allow; 127.0.0.1 stays refused, as everything private is by default)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
from ray import serve

from deployments._kit.events import Event
from tests.e2e.conftest import make_user
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e
T = TypeVar("T")


def event(type: str, data: dict[str, Any], aggregate_id: int = 42) -> Event:
    return Event(
        id=uuid.uuid4(),
        type=type,
        occurred_at=datetime.now(UTC),
        aggregate_type=type.split(".")[0],
        aggregate_id=aggregate_id,
        data=data,
    )


def eventually(probe: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 20) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_webhook_retried_signed_replayed_and_loopback_refused(
    ray_driver: None, http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    refused = http.post(
        "/v1/webhooks", headers=admin, json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]}
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["errors"][0]["field"] == "url"
    forbidden = http.post(
        "/v1/webhooks", headers=agent, json={"url": "http://127.0.0.2:9/x", "event_types": ["*"]}
    )
    assert forbidden.status_code == 403

    hook = Receiver([500, 500, 200], host="127.0.0.2").start()
    try:
        created = http.post(
            "/v1/webhooks", headers=admin, json={"url": hook.url, "event_types": ["deal.*"]}
        )
        assert created.status_code == 201, created.text
        body = created.json()
        hook.secret = body["secret"]
        assert created.headers["Location"] == f"/v1/webhooks/{body['id']}"
        assert "secret" not in http.get(f"/v1/webhooks/{body['id']}", headers=admin).json()

        handle = serve.get_app_handle("webhooks")
        won = event("deal.won", {"deal": {"id": "42"}})
        assert handle.handle.remote(won).result() == 1
        assert handle.handle.remote(won).result() == 0  # once per (event, subscription)

        log_url = f"/v1/webhooks/{body['id']}/deliveries"
        log = eventually(
            lambda: http.get(log_url, headers=admin).json()["data"],
            lambda d: bool(d) and d[0]["status"] != "pending",
        )
        assert (log[0]["status"], log[0]["attempts"], log[0]["response_status"]) == (
            "succeeded",
            3,
            200,
        )
        assert [r["status"] for r in hook.requests] == [500, 500, 200]
        assert all(r["valid"] for r in hook.requests)
        assert list(hook.effective) == [str(won.id)]

        replay = http.post(f"{log_url}/{log[0]['id']}/replay", headers=admin)
        assert replay.status_code == 200, replay.text
        eventually(lambda: len(hook.requests), lambda n: n == 4)
        assert len(hook.requests) == 4 and hook.requests[3]["event_id"] == str(won.id)
        assert http.delete(f"/v1/webhooks/{body['id']}", headers=admin).status_code == 204
    finally:
        hook.stop()


def test_inbox_over_http(ray_driver: None, http: httpx.Client, admin: dict[str, str]) -> None:
    me_headers = make_user(http, admin, "agent")
    me = http.get("/v1/auth/me", headers=me_headers).json()
    handle = serve.get_app_handle("notification")
    assigned = event("ticket.assigned", {"ticket": {"assignee_id": me["id"], "subject": "VPN"}})
    assert handle.handle.remote(assigned).result() == 1
    assert handle.handle.remote(assigned).result() == 1  # applied once all the same

    def unread() -> int:
        response = http.get("/v1/notifications/unread-count", headers=me_headers)
        assert response.status_code == 200, response.text
        return int(response.json()["unread"])

    assert eventually(unread, lambda n: n == 1) == 1
    page = http.get("/v1/notifications?unread=true", headers=me_headers).json()
    assert [n["title"] for n in page["data"]] == ["Ticket assigned to you: VPN"]
    note_id = page["data"][0]["id"]
    # Not in anyone else's inbox.
    assert http.get("/v1/notifications", headers=admin).json()["data"] == [] or all(
        n["id"] != note_id for n in http.get("/v1/notifications", headers=admin).json()["data"]
    )
    assert http.post(f"/v1/notifications/{note_id}/read", headers=admin).status_code == 404
    marked = http.post(f"/v1/notifications/{note_id}/read", headers=me_headers)
    assert marked.status_code == 200 and marked.json()["read"] is True
    assert unread() == 0  # read-your-writes: the mark is seen at once

    prefs = http.get("/v1/notifications/preferences", headers=me_headers).json()
    assert prefs["rules"]["deal.won"] == {"in_app": True, "email": True}
    put = http.put(
        "/v1/notifications/preferences",
        headers=me_headers,
        json={"rules": {"deal.won": {"in_app": True, "email": False}}},
    )
    assert put.status_code == 200 and put.json()["rules"]["deal.won"]["email"] is False
    bad = http.put(
        "/v1/notifications/preferences", headers=me_headers, json={"rules": {"nope": {}}}
    )
    assert bad.status_code == 422
    assert http.get("/v1/notifications?colour=red", headers=me_headers).status_code == 422


def test_sla_breach_reaches_the_managers_through_auth(
    ray_driver: None, http: httpx.Client, admin: dict[str, str]
) -> None:
    boss = make_user(http, admin, "manager")
    handle = serve.get_app_handle("notification")
    breached = event("ticket.sla_breached", {"ticket": {"assignee_id": None, "subject": "Down"}})
    assert handle.handle.remote(breached).result() >= 1  # every manager there is

    def titles() -> list[str]:
        return [n["title"] for n in http.get("/v1/notifications", headers=boss).json()["data"]]

    assert eventually(titles, lambda t: bool(t)) == ["SLA breached: Down"]


def test_the_event_stream_drives_inbox_and_webhooks(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    """A ticket assigned over HTTP: its events go outbox -> relay -> stream -> the
    `notification` and `webhooks` consumer groups in the replicas; nobody calls
    handle() here."""
    assignee = make_user(http, admin, "agent")
    assignee_id = http.get("/v1/auth/me", headers=assignee).json()["id"]
    hook = Receiver([200], host="127.0.0.2").start()
    try:
        created = http.post(
            "/v1/webhooks", headers=admin, json={"url": hook.url, "event_types": ["ticket.*"]}
        )
        assert created.status_code == 201, created.text
        hook.secret = created.json()["secret"]
        cust = http.post("/v1/customers", headers=admin, json={"name": "Stream Co"}).json()["id"]
        ticket = http.post(
            "/v1/support/tickets",
            headers=admin,
            json={"customer_id": cust, "subject": "Stream", "assignee_id": assignee_id},
        )
        assert ticket.status_code == 201, ticket.text

        def unread() -> int:
            return int(
                http.get("/v1/notifications/unread-count", headers=assignee).json()["unread"]
            )

        assert eventually(unread, lambda n: n == 1, timeout_s=60) == 1
        titles = [
            n["title"] for n in http.get("/v1/notifications", headers=assignee).json()["data"]
        ]
        assert titles == ["Ticket assigned to you: Stream"]

        def types() -> set[str]:
            return {__import__("json").loads(b)["type"] for b in hook.effective.values()}

        assert eventually(types, lambda t: {"ticket.created", "ticket.assigned"} <= t, 60) >= {
            "ticket.created",
            "ticket.assigned",
        }
        assert all(r["valid"] for r in hook.requests)
        http.delete(f"/v1/webhooks/{created.json()['id']}", headers=admin)
    finally:
        hook.stop()
