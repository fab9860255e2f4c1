"""Outbound webhook logic: subscriptions, fan-out of events into deliveries, and the
delivery worker. No SQL here (repo.py), no Ray (app.py), no HTTP (routes.py)."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import httpx
import orjson

from deployments._kit.events import Event
from deployments._kit.sealed import PREFIX, SecretBox, Unsealable
from deployments._kit.sql import Stale
from deployments.webhooks import guard, repo, sender
from deployments.webhooks.backoff import Backoff
from deployments.webhooks.schemas import (
    DeliveryListQuery,
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookListQuery,
    WebhookRead,
    WebhookUpdate,
)
from gateway.errors import NotFound, PreconditionFailed, Validation
from gateway.listing import Page, decode_cursor, merge_pages, validate_sort
from gateway.principal import Principal
from shards import ReadConn, WriteConn

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("nextflow.webhooks")
LEASE_S = 120.0  # longer than an attempt can take (timeout + resolution)
SECRET_CONTEXT = "webhook_subscriptions.secret"  # a sealed secret opens only here


class Store(Protocol):
    """The `integration` database: `shards.client.Database` (tests: in process)."""

    async def write(
        self, fn: Callable[Concatenate[WriteConn, P], Awaitable[T]], *a: P.args, **k: P.kwargs
    ) -> T: ...

    async def read(
        self, fn: Callable[Concatenate[ReadConn, P], Awaitable[T]], *a: P.args, **k: P.kwargs
    ) -> T: ...

    async def read_primary(
        self, fn: Callable[Concatenate[ReadConn, P], Awaitable[T]], *a: P.args, **k: P.kwargs
    ) -> T: ...


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """`*` matches any run of characters: `deal.*` matches `deal.won`, `*` all."""
    return any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


def event_body(event: Event) -> str:
    """The JSON body of every delivery of `event` (docs/api.md)."""
    return orjson.dumps(
        {
            "id": str(event.id),
            "type": event.type,
            "occurred_at": event.occurred_at.isoformat(),
            "data": event.data,
        }
    ).decode()


class WebhookService:
    def __init__(
        self,
        db: Store,
        policy: guard.Policy,
        backoff: Backoff,
        client: httpx.AsyncClient,
        box: SecretBox,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.policy = policy
        self.backoff = backoff
        self.client = client
        self.box = box
        self.rng = rng

    # -- subscriptions -------------------------------------------------------------
    async def _check_target(self, url: str) -> None:
        try:
            await guard.check(url, self.policy)
        except guard.TargetRefused as exc:
            raise Validation(
                "webhook URL refused", [{"field": "url", "message": str(exc)}]
            ) from None

    async def create(self, principal: Principal, data: WebhookCreate) -> WebhookCreated:
        principal.require("webhook:write")
        await self._check_target(data.url)
        secret = "whsec_" + secrets.token_urlsafe(32)
        sealed = self.box.seal(secret, SECRET_CONTEXT)
        created = await self.db.write(repo.create_subscription, data, sealed, principal.user_id)
        return WebhookCreated(**created.model_dump(), secret=secret)

    async def reseal_secrets(self) -> int:
        """Seal under the current key every signing secret stored otherwise (plain text
        from before secrets were sealed, or sealed under the previous key); how many.
        A secret no configured key opens is left as it is, and logged."""
        done = 0
        for sub_id, stored in await self.db.read_primary(
            repo.secrets_to_reseal, self.box.current_prefix
        ):
            try:
                secret = self._secret(stored)
            except Unsealable as exc:
                log.error("webhook %s: its signing secret cannot be resealed: %s", sub_id, exc)
                continue
            sealed = self.box.seal(secret, SECRET_CONTEXT)
            done += await self.db.write(repo.reseal, sub_id, stored, sealed)
        return done

    async def get(self, principal: Principal, sub_id: int) -> WebhookRead:
        principal.require("webhook:read")
        found = await self.db.read(repo.get_subscription, sub_id)
        if found is None:
            raise NotFound(f"webhook {sub_id} not found")
        return found

    async def list(self, principal: Principal, query: WebhookListQuery) -> Page[WebhookRead]:
        principal.require("webhook:read")
        order = validate_sort(query)
        rows = await self.db.read(repo.list_subscriptions, query, order, decode_cursor(query))
        items, cursor = merge_pages([rows], lambda r: (r.created_at, r.id), order, query.limit)
        return Page[WebhookRead](data=items, next_cursor=cursor)

    async def update(
        self, principal: Principal, sub_id: int, data: WebhookUpdate, if_version: int | None
    ) -> WebhookRead:
        principal.require("webhook:write")
        changes = data.model_dump(exclude_unset=True)
        if "url" in changes:
            await self._check_target(changes["url"])
        outcome = await self.db.write(repo.update_subscription, sub_id, changes, if_version)
        return _written(outcome, sub_id)

    async def delete(
        self, principal: Principal, sub_id: int, if_version: int | None
    ) -> WebhookRead:
        principal.require("webhook:write")
        outcome = await self.db.write(repo.delete_subscription, sub_id, if_version)
        return _written(outcome, sub_id)

    async def deliveries(
        self, principal: Principal, sub_id: int, query: DeliveryListQuery
    ) -> Page[DeliveryRead]:
        await self.get(principal, sub_id)
        order = validate_sort(query)
        rows = await self.db.read(repo.list_deliveries, sub_id, query, order, decode_cursor(query))
        items, cursor = merge_pages([rows], lambda r: (r.created_at, r.id), order, query.limit)
        return Page[DeliveryRead](data=items, next_cursor=cursor)

    async def replay(self, principal: Principal, sub_id: int, delivery_id: int) -> DeliveryRead:
        """Send a delivery again now (whatever its state), with a fresh retry schedule."""
        principal.require("webhook:write")
        await self.get(principal, sub_id)
        replayed = await self.db.write(repo.replay_delivery, sub_id, delivery_id)
        if replayed is None:
            raise NotFound(f"delivery {delivery_id} of webhook {sub_id} not found")
        return replayed

    # -- events --------------------------------------------------------------------
    async def handle(self, event: Event) -> int:
        """Fan an event out to the subscriptions that want it: one delivery each,
        exactly once per (event, subscription) however often the event arrives.
        Returns how many deliveries were new."""
        return await self.handle_all([event])

    async def handle_all(self, events: Sequence[Event]) -> int:
        """`handle` for a read of the stream: the subscriptions are read once for the
        lot (not once per event), then each event that one wants is fanned out."""
        # On the primary: a subscription made a moment ago must see the next event.
        subs = await self.db.read_primary(repo.active_subscriptions)
        made = 0
        for event in events:
            wanted = [sub_id for sub_id, patterns in subs if matches(patterns, event.type)]
            if wanted:
                made += await self.db.write(
                    repo.create_deliveries, wanted, event.id, event.type, event_body(event)
                )
        return made

    # -- the delivery worker -------------------------------------------------------
    async def deliver_due(self, limit: int = 20) -> int:
        """Claim due deliveries and attempt them at once; returns how many."""
        due = await self.db.write(repo.claim_due, limit, LEASE_S)
        if due:
            await asyncio.gather(*(self._attempt(d) for d in due))
        return len(due)

    async def _attempt(self, due: repo.Due) -> None:
        if due.url is None:
            await self.db.write(
                repo.record_attempt, due.id, "cancelled", None, "subscription disabled", None
            )
            return
        try:
            secret = self._secret(due.secret)
        except Unsealable as exc:  # a key missing from the settings: retried as any failure
            attempt = sender.Attempt(error=f"the signing secret does not open: {exc}")
        else:
            attempt = await sender.send(
                self.client, self.policy, due.url, secret, str(due.event_id), due.body.encode()
            )
        status, retry_in, disable = self._outcome(attempt, due.failures_before + 1)
        await self.db.write(
            repo.record_attempt, due.id, status, attempt.status_code, attempt.error, retry_in,
            disable,
        )  # fmt: skip

    def _secret(self, stored: str) -> str:
        """The signing secret from its stored form; plain text is read as it is until the
        replicas' start reseals it (`reseal_secrets`)."""
        return self.box.open(stored, SECRET_CONTEXT) if stored.startswith(PREFIX) else stored

    def _outcome(self, attempt: sender.Attempt, failures: int) -> tuple[str, float | None, Any]:
        if attempt.succeeded:
            return "succeeded", None, None
        if attempt.gone:
            return "failed", None, "the receiver answered HTTP 410 Gone"
        if attempt.refused:
            return "failed", None, None
        delay = self.backoff.delay(failures, self.rng())
        if delay is None:
            return "failed", None, None
        return "pending", delay, None

    async def run_forever(self, interval_s: float) -> None:
        """The replica's delivery loop (every replica runs one; SKIP LOCKED shares)."""
        while True:
            try:
                while await self.deliver_due() > 0:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # a database blip: try again next round
                log.exception("webhook delivery round failed")
            await asyncio.sleep(interval_s)


def _written(outcome: WebhookRead | Stale | None, sub_id: int) -> WebhookRead:
    if outcome is None:
        raise NotFound(f"webhook {sub_id} not found")
    if isinstance(outcome, Stale):
        raise PreconditionFailed(
            f"webhook {sub_id} is at version {outcome.current_version}",
            [{"field": "If-Match", "message": f"current version is {outcome.current_version}"}],
        )
    return outcome
