"""One HTTP attempt of a webhook delivery, to the address the SSRF guard checked
(so a DNS answer that changes between the check and the connect cannot redirect it),
with the original host in `Host` and as the TLS server name. Redirects are never
followed: a 3xx is a failed attempt."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from deployments.webhooks import guard, signing


@dataclass(frozen=True)
class Attempt:
    """What one attempt gave: a response code, or an error (no response)."""

    status_code: int | None = None
    error: str | None = None
    refused: bool = False  # the SSRF guard refused the target: never retried

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def _pinned_url(url: str, target: guard.Target) -> str:
    parts = urlsplit(url)
    host = str(target.address)
    if isinstance(target.address, ipaddress.IPv6Address):
        host = f"[{host}]"
    netloc = f"{host}:{target.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def _host_header(target: guard.Target) -> str:
    default = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == default else f"{host}:{target.port}"


async def send(
    client: httpx.AsyncClient,
    policy: guard.Policy,
    url: str,
    secret: str,
    event_id: str,
    body: bytes,
    *,
    now: float | None = None,
) -> Attempt:
    try:
        target = await guard.check(url, policy)
    except guard.TargetRefused as exc:
        return Attempt(error=f"refused: {exc}", refused=True)
    timestamp = int(now if now is not None else time.time())
    headers = signing.headers(secret, event_id, timestamp, body)
    headers["Host"] = _host_header(target)
    extensions: dict[str, Any] = {}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host
    try:
        response = await client.post(
            _pinned_url(url, target),
            content=body,
            headers=headers,
            extensions=extensions,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        return Attempt(error="timed out")
    except httpx.HTTPError as exc:
        return Attempt(error=f"connection failed: {type(exc).__name__}")
    return Attempt(status_code=response.status_code)
