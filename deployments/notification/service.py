"""Notification logic: applying events (rules -> inbox rows and e-mails, exactly once
per event, recipient and channel), the caller's own inbox and preferences. No SQL
here (repo.py) and no Ray or FastAPI (deployment.py)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from deployments._kit.events import Event
from deployments.notification import repo
from deployments.notification.mailer import Mailer
from deployments.notification.rules import NEEDS_MANAGERS, Recipient, recipients
from deployments.notification.schemas import (
    NotificationListQuery,
    NotificationRead,
    PreferencesRead,
    PreferencesUpdate,
    ReadAllResult,
    UnreadCount,
)
from gateway.errors import NotFound, Unavailable
from gateway.listing import Page, decode_cursor, merge_pages, validate_sort
from gateway.principal import Principal
from shards.client import Shards

log = logging.getLogger("nextflow.notification")


class Directory(Protocol):
    """What the Auth service tells about users (tests: a small fake)."""

    async def managers(self) -> list[int]: ...

    async def email_of(self, user_id: int) -> str | None: ...


class AuthDirectory:
    """The Auth deployment's answers, cached briefly (roles and e-mails change
    rarely; a minute of staleness is fine for notifications)."""

    def __init__(
        self, auth: Any, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        from deployments.auth.schemas import UserListQuery

        self._auth = auth
        self._ttl_s = ttl_s
        self._clock = clock
        self._query = UserListQuery
        self._principal = Principal(
            user_id=1, role="system", permissions=frozenset({"user:read"}), kind="system"
        )
        self._managers: tuple[float, list[int]] | None = None
        self._emails: dict[int, tuple[float, str | None]] = {}

    async def managers(self) -> list[int]:
        now = self._clock()
        if self._managers is not None and now - self._managers[0] < self._ttl_s:
            return self._managers[1]
        found: list[int] = []
        cursor = None
        while True:
            query = self._query(role="manager", is_active=True, limit=200, cursor=cursor)
            page = await self._auth.list_users.remote(self._principal, query)
            found += [u.id for u in page.data]
            cursor = page.next_cursor
            if cursor is None:
                break
        self._managers = (now, found)
        return found

    async def email_of(self, user_id: int) -> str | None:
        now = self._clock()
        cached = self._emails.get(user_id)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        try:
            user = await self._auth.get_user.remote(self._principal, user_id)
            email: str | None = str(user.email) if user.is_active else None
        except NotFound:
            email = None
        self._emails[user_id] = (now, email)
        return email


Notes = list[NotificationRead]  # (`list` is a method's name inside the class)


class NotificationService:
    def __init__(self, shards: Shards, directory: Directory, mailer: Mailer | None) -> None:
        self.shards = shards
        self.directory = directory
        self.mailer = mailer

    def _home(self, user_id: int) -> int:
        return self.shards.place(key=f"user:{user_id}")

    # -- events --------------------------------------------------------------------
    async def handle(self, event: Event) -> int:
        """Apply the rules to an event: inbox rows and e-mails, each once however often
        the event arrives; e-mails go out after their rows are committed. Returns how
        many recipients the rules named. Raises Unavailable when an e-mail could not
        be sent yet (the caller retries the event; what was done is not redone)."""
        managers = await self.directory.managers() if event.type in NEEDS_MANAGERS else []
        by_user: dict[int, list[Recipient]] = defaultdict(list)
        for item in recipients(event, managers):
            by_user[item.user_id].append(item)
        unsent = 0
        for user_id, items in by_user.items():
            email_to = None
            if self.mailer is not None and any(i.channel == "email" for i in items):
                email_to = await self.directory.email_of(user_id)
            shard = self._home(user_id)
            pending = await self.shards.write(
                shard, repo.apply_event, shard, user_id, event.id, event.type, event.data,
                items, email_to,
            )  # fmt: skip
            for email_id in pending:
                if not await self._send(shard, email_id):
                    unsent += 1
        if unsent:
            raise Unavailable(f"{unsent} e-mail(s) of event {event.id} not sent yet")
        return len(by_user)

    async def _send(self, shard: int, email_id: int) -> bool:
        """Send one e-mail once: claim it, send, record sent_at. False: it failed and
        will be tried again."""
        if self.mailer is None:
            return True
        email = await self.shards.write(shard, repo.claim_email, email_id)
        if email is None:
            return True  # sent already, or another sender holds it
        try:
            await self.mailer.send(email.to_address, email.subject, email.body)
        except Exception as exc:  # SMTP and network errors alike
            log.warning("e-mail %s not sent: %s", email_id, type(exc).__name__)
            return not await self.shards.write(
                shard, repo.email_failed, email_id, f"{type(exc).__name__}: {exc}"
            )
        await self.shards.write(shard, repo.email_sent, email_id)
        return True

    # -- the caller's inbox --------------------------------------------------------
    async def list(
        self, principal: Principal, query: NotificationListQuery
    ) -> Page[NotificationRead]:
        """The caller's own notifications, newest first by default."""
        order = validate_sort(query)
        uid = principal.user_id
        rows = await self.shards.read(
            self._home(uid), repo.list_notifications, uid, query, order, decode_cursor(query)
        )
        items, cursor = merge_pages([rows], lambda n: (n.created_at, n.id), order, query.limit)
        return Page[NotificationRead](data=items, next_cursor=cursor)

    async def about(
        self, principal: Principal, field: str, record_id: int
    ) -> Notes:
        """Every user's notifications about a record (`field`: `customer_id`,
        `contact_id` or `lead_id` in their event data), oldest first: what a privacy
        export of that person includes (`privacy:export`)."""
        principal.require("privacy:export")
        found = await self.shards.gather(repo.about, field, record_id)
        return sorted((n for part in found for n in part), key=lambda n: (n.created_at, n.id))

    async def unread_count(self, principal: Principal) -> UnreadCount:
        uid = principal.user_id
        return UnreadCount(unread=await self.shards.read(self._home(uid), repo.unread_count, uid))

    async def mark_read(self, principal: Principal, notification_id: int) -> NotificationRead:
        uid = principal.user_id
        found = await self.shards.write(self._home(uid), repo.mark_read, uid, notification_id)
        if found is None:
            raise NotFound(f"notification {notification_id} not found")
        return found

    async def mark_all_read(self, principal: Principal) -> ReadAllResult:
        uid = principal.user_id
        return ReadAllResult(
            marked=await self.shards.write(self._home(uid), repo.mark_all_read, uid)
        )

    async def preferences(self, principal: Principal) -> PreferencesRead:
        uid = principal.user_id
        return await self.shards.read(self._home(uid), repo.get_preferences, uid)

    async def set_preferences(
        self, principal: Principal, data: PreferencesUpdate
    ) -> PreferencesRead:
        uid = principal.user_id
        shard = self._home(uid)
        return await self.shards.write(shard, repo.put_preferences, shard, uid, data.rules)
