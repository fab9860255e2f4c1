"""Response hardening and the request timeout (docs/security.md).

`SecurityHeaders` puts the headers OWASP's REST cheat sheet asks for on every
response: no MIME sniffing, no framing, no referrer, `no-store` on anything answered
to a credentialed request (a shared cache must never keep customer data), and HSTS
when the deployment says it is served over TLS.

`BodyLimit` refuses a request body above `max_body_bytes` with 413 problem+json:
at once when `Content-Length` says so, else as soon as the streamed body passes it.
Upload routes stream far larger bodies and cap them themselves.

`RequestTimeout` answers `504` problem+json when a request runs longer than
`request_timeout_s` (before Serve's own proxy timeout), instead of leaving the client
hanging; the handler is cancelled. The limit is on the time to answer: a streamed
response body (an export) may take longer once it started. Uploads stream for as
long as the client sends, so their paths are exempt (they have size caps instead).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import PROBLEM_BASE
from gateway.openapi import finish

# Swagger UI and ReDoc load scripts and styles; every other response is data only.
_DOC_PATHS = ("/docs", "/redoc")
_API_CSP = b"default-src 'none'; frame-ancestors 'none'"
_DOC_CSP = b"frame-ancestors 'none'"
_CREDENTIALS = (b"authorization", b"x-api-key")
# Paths whose body streams for as long as the upload takes.
STREAMING_UPLOADS = ("/v1/files", "/v1/integration/imports/")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts_max_age_s: int = 0) -> None:
        self.app = app
        self._hsts = (
            f"max-age={hsts_max_age_s}; includeSubDomains".encode() if hsts_max_age_s else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        credentialed = any(name in _CREDENTIALS for name, _ in scope["headers"])
        docs = scope["path"].startswith(_DOC_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                added = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy", _DOC_CSP if docs else _API_CSP),
                    (b"cross-origin-resource-policy", b"same-origin"),
                ]
                if credentialed:
                    added.append((b"cache-control", b"no-store"))
                if self._hsts:
                    added.append((b"strict-transport-security", self._hsts))
                headers += [(name, value) for name, value in added if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HardenedAPI(FastAPI):
    """FastAPI whose outermost layer is `SecurityHeaders`: outside Starlette's
    last-resort error handler too, so even the 500 it writes for an exception that
    escaped every handler carries the headers (`add_middleware` can only place a
    layer inside that handler)."""

    hsts_max_age_s: int = 0

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, finished (gateway/openapi.py): security schemes,
        problem+json errors, no credential header parameters."""
        if self.openapi_schema is None:
            self.openapi_schema = finish(super().openapi())
        return self.openapi_schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Serve mounts an application at its route prefix (`root_path`): the prefix
        # itself (`POST /v1/customers`) is the app's "/" route, not a redirect to it.
        root = scope.get("root_path", "")
        if root and scope.get("path") == root and scope["type"] in ("http", "websocket"):
            scope = {**scope, "path": root + "/", "raw_path": (root + "/").encode()}
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), self.hsts_max_age_s)


class RequestTimeout:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STREAMING_UPLOADS):
            await self.app(scope, receive, send)
            return
        started = False
        deadline = asyncio.timeout(self.timeout_s)

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                # Answered in time: a streamed body (an export) may take longer.
                started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if started:
                raise
            await _problem(
                scope, send, 504, "timeout", "Request timed out",
                f"the request took longer than {self.timeout_s:g} s; a write may still "
                "complete: retry with the same Idempotency-Key",
            )  # fmt: skip


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STREAMING_UPLOADS):
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _problem(scope, send, 413, "too-large", "Request too large", self._detail())
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException passes FastAPI's body reading unchanged and
                    # becomes the 413 problem (gateway.problems).
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"


async def _problem(
    scope: Scope, send: Send, status: int, slug: str, title: str, detail: str
) -> None:
    body = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": scope["path"],
        "request_id": scope.get("state", {}).get("request_id"),
    }
    headers = [(b"content-type", b"application/problem+json")]
    if status in (503, 504):
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})
