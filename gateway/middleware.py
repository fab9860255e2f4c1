"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from shards import consistency

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TOKEN = consistency.HEADER.lower().encode()


def _written(headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, int]] | None:
    """Where the response's read-your-writes token is, and what it says."""
    for i, (name, value) in enumerate(headers):
        if name == _TOKEN:
            try:
                return i, consistency.decode(value.decode())
            except consistency.BadToken:
                return None
    return None


class RequestContext:
    """Puts the request id in the request state (for problems and logs), adds the
    rate-limit headers that the auth dependency decided on, and counts and times the
    request by route template (`gateway.metrics`).

    After a write (its response carries a read-your-writes token) it remembers the
    write's positions for the caller (`gateway.sessions`) before answering, so the
    caller's next request sees the write, and it merges the token with the one the
    request brought, so a client that sends back the last token it got loses none.

    Serve's proxy already accepts or generates `X-Request-Id` and echoes it on the
    response, so this only reads it (and makes one when run outside Serve)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = brought = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
            elif name == _TOKEN:
                brought = value.decode("latin-1")
        request_id = given if given and _VALID_ID.match(given) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        began = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                for key, value in state.get("rate_limit_headers", {}).items():
                    headers.append((key.lower().encode(), value.encode()))
                written = _written(headers)
                if written is not None:
                    index, positions = written
                    caller = state.get("caller")
                    if caller is not None:
                        await scope["app"].state.gateway.sessions.remember(caller, positions)
                    if brought:
                        try:
                            merged = consistency.merge(consistency.decode(brought), positions)
                        except consistency.BadToken:
                            merged = positions  # the request was refused for it already
                        headers[index] = (_TOKEN, consistency.encode(merged).encode())
                message["headers"] = headers
            await send(message)

        # FastAPI traces the request itself (a server span per request, under the
        # caller's `traceparent`, with the route and status); name the request id on it.
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("nextflow.request_id", request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _observe(scope, status, time.perf_counter() - began)


def _observe(scope: Scope, status: int, seconds: float) -> None:
    """Count and time the request by its route template."""
    route = scope.get("route")
    # The template (`/v1/customers/{customer_id}`), never the raw path: ids would make
    # a series per record.
    path = getattr(route, "path", None)
    template = scope.get("root_path", "") + path if path else "unmatched"
    method = scope.get("method", "")
    metrics.request_done(template, method, status, seconds * 1000)
