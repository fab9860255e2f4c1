"""Notifications and outbound webhooks against the session's real PostgreSQL servers,
with in-process ShardManagers (no Ray), a real local HTTP receiver and a real local
SMTP server (aiosmtpd). The Auth service is the only fake: a small directory."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller

from cluster.settings import Settings
from deployments._kit.events import Event
from deployments._kit.sealed import SecretBox
from deployments.notification.mailer import SmtpMailer
from deployments.notification.schemas import (
    ChannelPreferences,
    NotificationListQuery,
    PreferencesUpdate,
)
from deployments.notification.service import NotificationService
from deployments.webhooks import guard
from deployments.webhooks.backoff import Backoff
from deployments.webhooks.schemas import DeliveryListQuery, WebhookCreate, WebhookUpdate
from deployments.webhooks.service import WebhookService
from gateway.errors import Validation
from gateway.principal import Principal
from shards import consistency
from shards.client import InProcess, Shards, read_shard_map
from shards.manager import ShardManager
from shards.routing import ServerSpec
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
P = ParamSpec("P")
T = TypeVar("T")
ADMIN = Principal(user_id=1, role="admin", permissions=frozenset({"webhook:read", "webhook:write"}))
SHORT = Backoff(base_s=0.2, factor=2, cap_s=0.4, horizon_s=30, jitter=0.5)


# -- plumbing ----------------------------------------------------------------------------
class CatalogDb:
    """The `integration` database through an in-process catalog ShardManager. Reads go
    to the primary: these tests check effects, not replica lag."""

    def __init__(self, manager: ShardManager) -> None:
        self.manager = manager

    async def write(
        self, fn: Callable[Concatenate[Any, P], Awaitable[T]], *a: P.args, **k: P.kwargs
    ) -> T:
        value, _ = await self.manager.run("integration", fn, a, k, False)
        return value  # type: ignore[no-any-return]

    async def read(
        self, fn: Callable[Concatenate[Any, P], Awaitable[T]], *a: P.args, **k: P.kwargs
    ) -> T:
        value, _ = await self.manager.run("integration", fn, a, k, True, consistency.PRIMARY_ONLY)
        return value  # type: ignore[no-any-return]

    read_primary = read


@dataclass
class Stores:
    notification: Shards
    integration: CatalogDb


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def stores(stack: object, stack_settings: Settings) -> AsyncIterator[Stores]:
    s = stack_settings
    shard_map = await read_shard_map(s)
    managers = {name: ShardManager(spec) for name, spec in shard_map.servers.items()}
    catalog = ShardManager(ServerSpec("catalog", s.host, s.catalog_port))
    shards = Shards(
        "notification", shard_map, manager_for=lambda spec: InProcess(managers[spec.name])
    )
    try:
        yield Stores(shards, CatalogDb(catalog))
    finally:
        for manager in [*managers.values(), catalog]:
            await manager.close()


def event(type: str, data: dict[str, Any], aggregate_id: int = 42) -> Event:
    return Event(
        id=uuid.uuid4(),
        type=type,
        occurred_at=datetime.now(UTC),
        aggregate_type=type.split(".")[0],
        aggregate_id=aggregate_id,
        data=data,
    )


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    """Poll until `ok` (a read may reach a replica a moment behind)."""
    deadline = time.monotonic() + 15
    while True:
        value = await probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Callable[[list[int]], Receiver]]:
    made: list[Receiver] = []

    def make(script: list[int]) -> Receiver:
        r = Receiver(script)
        r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def webhooks(
    stores: Stores, stack_settings: Settings
) -> AsyncIterator[Callable[..., WebhookService]]:
    """`make(policy, box)`: a WebhookService on the stack's `integration` database. Its
    secrets are sealed with the stack's key unless `box` says otherwise: when the e2e
    tests' Serve app runs too, its WebhookService replicas claim due deliveries of
    these subscriptions as well, and must open their secrets."""
    client = httpx.AsyncClient(timeout=5, follow_redirects=False, trust_env=False)
    made: list[WebhookService] = []
    stack_box = SecretBox(stack_settings.secrets_key.get_secret_value())

    def make(policy: guard.Policy, box: SecretBox | None = None) -> WebhookService:
        svc = WebhookService(
            stores.integration, policy, SHORT, client, box or stack_box, rng=random.random
        )
        made.append(svc)
        return svc

    yield make
    await client.aclose()


LOOPBACK_ALLOWED = guard.Policy.from_settings(False, "127.0.0.0/8")


async def subscribe(svc: WebhookService, receiver: Receiver, types: list[str]) -> int:
    created = await svc.create(ADMIN, WebhookCreate(url=receiver.url, event_types=types))
    receiver.secret = created.secret
    assert created.secret.startswith("whsec_")
    return int(created.id)


async def drain(svc: WebhookService, sub_id: int, until: Callable[[Any], bool]) -> Any:
    """Run the delivery worker until the subscription's only delivery satisfies `until`."""
    deadline = time.monotonic() + 20
    while True:
        await svc.deliver_due()
        page = await svc.deliveries(ADMIN, sub_id, DeliveryListQuery())
        if page.data and until(page.data[0]):
            return page.data[0]
        assert time.monotonic() < deadline, page
        await asyncio.sleep(0.05)


# -- webhooks ----------------------------------------------------------------------------
async def test_a_receiver_that_fails_twice_gets_one_effective_signed_delivery(
    webhooks: Callable[[guard.Policy], WebhookService],
    receiver: Callable[[list[int]], Receiver],
) -> None:
    svc = webhooks(LOOPBACK_ALLOWED)
    hook = receiver([500, 500, 200])
    sub_id = await subscribe(svc, hook, ["deal.*"])
    won = event("deal.won", {"deal": {"id": "42", "owner_id": "7"}})
    assert await svc.handle(won) == 1
    assert await svc.handle(won) == 0  # the same event again: no second delivery
    assert await svc.handle(event("ticket.assigned", {})) == 0  # filtered out

    done = await drain(svc, sub_id, lambda d: d.status != "pending")
    assert done.status == "succeeded"
    assert (done.attempts, done.response_status, done.next_attempt_at) == (3, 200, None)
    assert [r["status"] for r in hook.requests] == [500, 500, 200]
    assert all(r["valid"] and r["event_id"] == str(won.id) for r in hook.requests)
    assert hook.requests[0]["path"] == "/hooks/nextflow?x=1"
    assert list(hook.effective) == [str(won.id)]
    assert json.loads(hook.effective[str(won.id)]) == {
        "id": str(won.id),
        "type": "deal.won",
        "occurred_at": won.occurred_at.isoformat(),
        "data": {"deal": {"id": "42", "owner_id": "7"}},
    }
    # Nothing more is sent later.
    await asyncio.sleep(0.5)
    await svc.deliver_due()
    assert len(hook.requests) == 3
    await svc.delete(ADMIN, sub_id, None)


async def test_loopback_targets_are_refused_by_default_at_subscription_and_delivery(
    webhooks: Callable[[guard.Policy], WebhookService],
    receiver: Callable[[list[int]], Receiver],
) -> None:
    strict = webhooks(guard.Policy())
    hook = receiver([200])
    with pytest.raises(Validation) as refused:
        await strict.create(ADMIN, WebhookCreate(url=hook.url, event_types=["*"]))
    assert refused.value.errors[0]["field"] == "url"
    assert "loopback" in refused.value.errors[0]["message"]
    for url in ("http://localhost:1/x", "http://[::ffff:127.0.0.1]:1/", "http://169.254.169.254/"):
        with pytest.raises(Validation):
            await strict.create(ADMIN, WebhookCreate(url=url, event_types=["*"]))

    # Allowed when subscribing, disallowed by the time of delivery (a DNS answer that
    # changed would look the same): the delivery is refused, nothing is sent.
    sub_id = await subscribe(webhooks(LOOPBACK_ALLOWED), hook, ["*"])
    assert await strict.handle(event("deal.won", {})) >= 1
    done = await drain(strict, sub_id, lambda d: d.status != "pending")
    assert done.status == "failed"
    assert done.last_error and done.last_error.startswith("refused")
    assert hook.requests == []
    # An update to a loopback URL is refused too.
    with pytest.raises(Validation):
        await strict.update(ADMIN, sub_id, WebhookUpdate(url="http://127.0.0.2/"), None)
    await strict.delete(ADMIN, sub_id, None)


async def test_410_disables_the_subscription(
    webhooks: Callable[[guard.Policy], WebhookService],
    receiver: Callable[[list[int]], Receiver],
) -> None:
    svc = webhooks(LOOPBACK_ALLOWED)
    hook = receiver([410])
    sub_id = await subscribe(svc, hook, ["ticket.*"])
    assert await svc.handle(event("ticket.assigned", {})) == 1
    done = await drain(svc, sub_id, lambda d: d.status != "pending")
    assert (done.status, done.response_status, done.attempts) == ("failed", 410, 1)
    sub = await svc.get(ADMIN, sub_id)
    assert sub.active is False and sub.disabled_reason and "410" in sub.disabled_reason
    assert await svc.handle(event("ticket.assigned", {})) == 0  # no more deliveries
    # Re-enabling clears the reason.
    again = await svc.update(ADMIN, sub_id, WebhookUpdate(active=True), sub.version)
    assert again.active and again.disabled_reason is None
    await svc.delete(ADMIN, sub_id, None)


async def test_replay_sends_a_delivery_again(
    webhooks: Callable[[guard.Policy], WebhookService],
    receiver: Callable[[list[int]], Receiver],
) -> None:
    svc = webhooks(LOOPBACK_ALLOWED)
    hook = receiver([200])
    sub_id = await subscribe(svc, hook, ["deal.won"])
    won = event("deal.won", {"deal": {"id": "1"}})
    await svc.handle(won)
    first = await drain(svc, sub_id, lambda d: d.status == "succeeded")
    replayed = await svc.replay(ADMIN, sub_id, first.id)
    assert replayed.status == "pending"
    second = await drain(svc, sub_id, lambda d: d.status == "succeeded" and d.attempts == 2)
    assert second.id == first.id
    assert [r["event_id"] for r in hook.requests] == [str(won.id)] * 2
    assert hook.requests[0]["body"] == hook.requests[1]["body"]
    assert all(r["valid"] for r in hook.requests)
    await svc.delete(ADMIN, sub_id, None)


async def _stored_secret(conn: Any, sub_id: int) -> str:
    found = await conn.fetchval("SELECT secret FROM webhook_subscriptions WHERE id = $1", sub_id)
    return str(found)


async def _store_secret(conn: Any, sub_id: int, stored: str) -> None:
    await conn.execute("UPDATE webhook_subscriptions SET secret = $2 WHERE id = $1", sub_id, stored)


async def test_signing_secrets_are_sealed_at_rest_and_resealed_after_a_key_rotation(
    webhooks: Callable[..., WebhookService],
    receiver: Callable[[list[int]], Receiver],
    stores: Stores,
    stack_settings: Settings,
) -> None:
    db = stores.integration
    svc = webhooks(LOOPBACK_ALLOWED)
    hook, legacy = receiver([200]), receiver([200])
    sub_id = await subscribe(svc, hook, ["deal.won"])
    legacy_id = await subscribe(svc, legacy, ["deal.won"])
    stored = await db.read(_stored_secret, sub_id)
    assert stored.startswith(svc.box.current_prefix)
    assert hook.secret.removeprefix("whsec_") not in stored  # not there in any form
    await db.write(_store_secret, legacy_id, legacy.secret)  # as stored before sealing

    # Rotation: a new key, the old one kept as previous; a replica's start reseals both
    # the plain secret and the one sealed under the old key, and only once.
    key = stack_settings.secrets_key.get_secret_value()
    rotated = webhooks(LOOPBACK_ALLOWED, SecretBox("n" * 40, [key]))
    assert await rotated.reseal_secrets() >= 2
    assert await rotated.reseal_secrets() == 0
    for i in (sub_id, legacy_id):
        assert (await db.read(_stored_secret, i)).startswith(rotated.box.current_prefix)
    # The secrets themselves are unchanged: deliveries verify with what the subscriber got.
    won = event("deal.won", {"deal": {"id": "9"}})
    await rotated.handle(won)
    for i in (sub_id, legacy_id):
        assert (await drain(rotated, i, lambda d: d.status != "pending")).status == "succeeded"
    assert hook.requests[0]["valid"] and legacy.requests[0]["valid"]

    # A key the settings no longer have: the attempt fails (and is retried), nothing sent.
    without = webhooks(LOOPBACK_ALLOWED, SecretBox("x" * 40))
    again = event("deal.won", {"deal": {"id": "10"}})
    await without.handle(again)
    await without.deliver_due()
    page = await without.deliveries(ADMIN, sub_id, DeliveryListQuery())
    latest = next(d for d in page.data if d.event_id == again.id)
    assert latest.status == "pending" and "does not open" in (latest.last_error or "")
    assert len(hook.requests) == 1
    for i in (sub_id, legacy_id):
        await svc.delete(ADMIN, i, None)
    # Back under the key the other tests use.
    assert await webhooks(LOOPBACK_ALLOWED, SecretBox(key, ["n" * 40])).reseal_secrets() >= 2


# -- notifications -----------------------------------------------------------------------
class Directory:
    def __init__(self, managers: list[int], emails: dict[int, str]) -> None:
        self._managers, self.emails = managers, emails

    async def managers(self) -> list[int]:
        return self._managers

    async def email_of(self, user_id: int) -> str | None:
        return self.emails.get(user_id)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, SmtpMailer]]:
    inbox = Inbox()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, SmtpMailer("127.0.0.1", port, "NextFlow <no-reply@example.com>", tls="none")
    finally:
        controller.stop()


def user() -> tuple[int, Principal]:
    uid = random.randrange(10**6, 10**12)
    return uid, Principal(user_id=uid, role="agent", permissions=frozenset())


async def test_ticket_assigned_reaches_the_assignees_inbox_once(stores: Stores) -> None:
    uid, me = user()
    svc = NotificationService(stores.notification, Directory([], {}), None)
    assigned = event("ticket.assigned", {"ticket": {"assignee_id": str(uid), "subject": "Printer"}})
    assert await svc.handle(assigned) == 1
    assert await svc.handle(assigned) == 1  # at-least-once delivery: applied once
    count = await eventually(lambda: svc.unread_count(me), lambda c: c.unread >= 1)
    assert count.unread == 1
    page = await svc.list(me, NotificationListQuery())
    assert len(page.data) == 1
    note = page.data[0]
    assert (note.event_id, note.read, note.title) == (
        assigned.id,
        False,
        "Ticket assigned to you: Printer",
    )
    # Someone else's inbox does not show it, and they cannot mark it.
    _, other = user()
    assert (await svc.list(other, NotificationListQuery())).data == []
    with pytest.raises(Exception, match="not found"):
        await svc.mark_read(other, note.id)
    marked = await svc.mark_read(me, note.id)
    assert marked.read and marked.version == 2
    count = await eventually(lambda: svc.unread_count(me), lambda c: c.unread == 0)
    assert count.unread == 0
    # read-all
    await svc.handle(event("deal.won", {"deal": {"owner_id": uid}}))
    await svc.handle(event("deal.won", {"deal": {"owner_id": uid}}))
    await eventually(lambda: svc.unread_count(me), lambda c: c.unread == 2)
    assert (await svc.mark_all_read(me)).marked == 2
    count = await eventually(lambda: svc.unread_count(me), lambda c: c.unread == 0)
    assert count.unread == 0


async def test_sla_breach_reaches_assignee_and_managers(stores: Stores) -> None:
    assignee, me = user()
    manager, boss = user()
    svc = NotificationService(stores.notification, Directory([manager], {}), None)
    assert (
        await svc.handle(event("ticket.sla_breached", {"ticket": {"assignee_id": assignee}})) == 2
    )
    for who in (me, boss):
        count = await eventually(lambda w=who: svc.unread_count(w), lambda c: c.unread == 1)  # type: ignore[misc]
        assert count.unread == 1


async def test_email_is_sent_once_and_preferences_stop_it(
    stores: Stores, smtp: tuple[Inbox, SmtpMailer]
) -> None:
    inbox, mailer = smtp
    uid, me = user()
    address = f"user{uid}@example.com"
    svc = NotificationService(stores.notification, Directory([], {uid: address}), mailer)
    won = event("deal.won", {"deal": {"owner_id": uid, "name": "Acme renewal"}})
    await svc.handle(won)
    await svc.handle(won)
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert message.rcpt_tos == [address]
    assert b"Subject: Deal won: Acme renewal" in message.content

    prefs = await svc.set_preferences(
        me, PreferencesUpdate(rules={"deal.won": ChannelPreferences(email=False)})
    )
    assert prefs.rules["deal.won"] == ChannelPreferences(in_app=True, email=False)
    assert prefs.rules["ticket.assigned"] == ChannelPreferences()
    await svc.handle(event("deal.won", {"deal": {"owner_id": uid}}))
    assert len(inbox.messages) == 1  # no e-mail...
    count = await eventually(lambda: svc.unread_count(me), lambda c: c.unread == 2)
    assert count.unread == 2  # ...but the in-app notification still
    read_back = await eventually(lambda: svc.preferences(me), lambda p: p.version >= 1)
    assert read_back.rules["deal.won"].email is False
