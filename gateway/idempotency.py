"""`Idempotency-Key` on POST, two ways, one contract:

- **With the effect** (`@in_effect` routes: the creates that are one shard
  transaction: customers, contacts, deals, leads): the key is kept in
  the same shard database and the same transaction as the record it made
  (`deployments/_kit/once.py`, table `idempotency_keys` of every sharded database,
  placed by the key as the record is): a retried create is exactly-once and costs no
  other database or service. A concurrent repeat waits for the first to commit, then
  answers with its record (`Idempotent-Replayed: true`); if the first rolled back, it
  runs. A request refused before anything was written (a 422 on its body, a 404
  parent) keeps nothing: its repeat is checked again and refused again.
- **Elsewhere**: the first response is stored in PostgreSQL (the `auth` database,
  deployments/auth/idempotency.py, reached by the ingress itself through the
  catalog's ShardManager: no service hop) and replayed for a repeat, as below.

- Scope: per caller (user or API key) and key. Another caller's same key is another
  key. Keys are kept `idempotency_retention_s` (24 h), then swept.
- Fingerprint: SHA-256 of the method, path, query and body. The same key with a
  different fingerprint (another body or another endpoint) → 422
  `idempotency-key-reused`; nothing runs.
- A repeat while the first request still runs → 409 `idempotency-in-flight` with
  `Retry-After` (no waiting: the first may take up to the request timeout).
- What is stored: every answer below 500 (a 201, but also a 422 or 404: the same
  request gets the same answer). A 5xx, a crash or a timeout releases the key, so a
  retry runs the request again; a claim whose gateway died is taken over once its
  lease (request timeout + 30 s) ran out.
- A replay has the first response's status, body and `Content-Type`, `Location`,
  `ETag` and read-your-writes token, plus `Idempotent-Replayed: true`.
- The response is stored before it is sent: a client that saw it can only get it
  again. Between the write and the store (a gateway crash) the retry runs again:
  these routes are exactly-once only while the gateway lives to store the answer
  (the creates that must always be are `@in_effect`).

Only routes that authenticate take part (the claim happens once the caller is
known, in `gateway.context.current_principal`); sign-in, refresh, sign-out and the
public capture form ignore the header.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BadRequest, Conflict, Validation
from shards import consistency

log = logging.getLogger("nextflow.gateway")
F = TypeVar("F", bound=Callable[..., Any])

HEADER = "Idempotency-Key"
_HEADER = HEADER.lower().encode()
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_KEPT_HEADERS = {"content-type", "location", "etag", consistency.HEADER.lower()}


class KeyInFlight(Conflict):
    slug, title = "idempotency-in-flight", "Request with this key in progress"

    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still running; retry after it answered"
        )
        self.retry_after = 1


class KeyReused(Validation):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused"

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used for a different request (method, path or body)"
        )


class Replay(Exception):
    """Raised by the claim to answer with the stored response."""

    def __init__(self, response: Response) -> None:
        super().__init__("replay")
        self.response = response


@dataclass
class Once:
    """A caller's `Idempotency-Key` for an effect that keeps it in its own transaction
    (`deployments/_kit/once.py`). `fingerprint`: what the request sent (a repeat with
    another one is refused, 422); `replayed` is set when the effect had already run
    and this is its stored result. Also a stable placement key (`slot`): the record
    made for it lands on the same logical shard however often the create runs."""

    caller: str
    key: str
    fingerprint: bytes
    replayed: bool = False

    @property
    def slot(self) -> str:
        return source_key_for(self.caller, self.key)


@dataclass
class Pending:
    """One keyed POST: its key, the running fingerprint of what it sent, and the
    claim once the caller is known."""

    key: str
    hasher: Any
    body_done: bool = False
    caller: str | None = None
    claim_id: str | None = None
    once: Once | None = None
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)

    def fingerprint(self) -> bytes:
        digest: bytes = self.hasher.copy().digest()
        return digest


def in_effect(endpoint: F) -> F:
    """Mark a route whose effect keeps its `Idempotency-Key` itself (it passes
    `effect_key(request)` to a service that writes with `deployments._kit.once`): the
    pipeline then stores nothing for it. Put it under the `@router.post(...)`."""
    endpoint.__dict__["nextflow_key_in_effect"] = True
    return endpoint


def effect_key(request: Request) -> Once | None:
    """The request's key for an `@in_effect` route's service (None without one)."""
    pending: Pending | None = getattr(request.state, "idempotency", None)
    return None if pending is None else pending.once


def answered(response: Response, once: Once | None) -> Response:
    """`response`, marked as a replay when the effect had already run for its key."""
    if once is not None and once.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def source_key_for(caller: str, key: str) -> str:
    digest = hashlib.sha256(f"{caller}\n{key}".encode()).hexdigest()
    return f"idem:{digest[:40]}"


class IdempotencyKeys:
    """Pure ASGI middleware: fingerprints a keyed POST's body as the app reads it and
    stores the response of a claimed key before sending it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = next((v for k, v in scope["headers"] if k == _HEADER), None)
        if key is None:
            await self.app(scope, receive, send)
            return
        hasher = hashlib.sha256()
        hasher.update(b"POST\n" + scope["path"].encode() + b"\n" + scope["query_string"] + b"\n")
        pending = Pending(key=key.decode("latin-1"), hasher=hasher)
        scope.setdefault("state", {})["idempotency"] = pending

        async def fingerprinting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                pending.hasher.update(message.get("body", b""))
                if not message.get("more_body", False):
                    pending.body_done = True
            return message

        async def storing_send(message: Message) -> None:
            if pending.claim_id is None:
                await send(message)
                return
            if message["type"] == "http.response.start":
                pending.status = message["status"]
                pending.headers = list(message.get("headers", []))
                return
            if message["type"] == "http.response.body":
                pending.body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                await _finish(scope, pending)
                await send(
                    {
                        "type": "http.response.start",
                        "status": pending.status,
                        "headers": pending.headers,
                    }
                )
                await send({"type": "http.response.body", "body": b"".join(pending.body)})
                return
            await send(message)

        try:
            await self.app(scope, fingerprinting_receive, storing_send)
        finally:
            if pending.claim_id is not None:  # failed before answering: let a retry run
                await _release(scope, pending)


def _store(scope: Scope) -> Any:
    return scope["app"].state.gateway.idempotency


async def _finish(scope: Scope, pending: Pending) -> None:
    claim_id, pending.claim_id = pending.claim_id, None
    assert claim_id is not None
    assert pending.caller is not None
    if pending.status >= 500 or not pending.body_done:
        # A failure, or a refusal before the body was read (413): run again on retry.
        await _release(scope, pending, claim_id)
        return
    kept = tuple(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in pending.headers
        if name.decode("latin-1").lower() in _KEPT_HEADERS
    )
    try:
        await _store(scope).complete(
            pending.caller, pending.key, claim_id, pending.fingerprint(), pending.status,
            kept, b"".join(pending.body),
        )  # fmt: skip
    except Exception as exc:
        # The response still goes out; a repeat will find the claim busy until its
        # lease runs out and then run again.
        log.warning("could not store the response for an Idempotency-Key: %r", exc)


async def _release(scope: Scope, pending: Pending, claim_id: str | None = None) -> None:
    claim_id = claim_id or pending.claim_id
    pending.claim_id = None
    if claim_id is None or pending.caller is None:
        return
    try:
        await _store(scope).release(pending.caller, pending.key, claim_id)
    except Exception as exc:  # the lease runs out instead
        log.warning("could not release an Idempotency-Key: %r", exc)


async def claim(request: Request, caller: str) -> None:
    """Called once the caller is known: claim the request's key, or answer from the
    stored response (raises `Replay`), or refuse (409 in flight, 422 reused)."""
    pending: Pending | None = getattr(request.state, "idempotency", None)
    if pending is None or pending.caller is not None:
        return
    if not _VALID_KEY.match(pending.key):
        raise BadRequest(f"{HEADER} must be 1-255 printable ASCII characters without spaces")
    endpoint = request.scope.get("endpoint")
    if getattr(endpoint, "nextflow_key_in_effect", False):
        if not pending.body_done:  # (JSON routes have read their body by now)
            raise BadRequest(f"{HEADER} needs the whole body before the route runs")
        pending.caller = caller
        pending.once = Once(caller, pending.key, pending.fingerprint())
        return
    store = request.app.state.gateway.idempotency
    if store is None:  # an application that keeps no keys: the header means nothing
        return
    found = await store.claim(caller, pending.key)
    if found.outcome == "busy":
        raise KeyInFlight()
    if found.outcome == "done":
        if not pending.body_done:  # a route that streams its body: read the rest
            async for _ in request.stream():
                pass
        if found.fingerprint != pending.fingerprint():
            raise KeyReused()
        headers = dict(found.headers)
        headers["Idempotent-Replayed"] = "true"
        media_type = headers.pop("content-type", None)
        raise Replay(
            Response(found.body, status_code=found.status, headers=headers, media_type=media_type)
        )
    pending.caller = caller
    pending.claim_id = found.claim_id


def install(app: FastAPI) -> None:
    async def on_replay(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Replay)
        return exc.response

    app.add_exception_handler(Replay, on_replay)
    app.add_middleware(IdempotencyKeys)
