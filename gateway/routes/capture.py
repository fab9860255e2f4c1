"""Public lead capture: a web page posts a form to `POST /capture/{form_key}` with no
user token. Path: this file -> deployments/marketing/service.py (`capture`) ->
deployments/marketing/repo.py -> shards/.

Anyone on the internet can call this, so: the body is capped, the call is
rate-limited per form and per client address before anything is read, the payload
is validated strictly against the form, and the answer (202 `{"status": "received"}`)
is the same whether the e-mail was already a lead or not."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from deployments.marketing.capture import MAX_BODY_BYTES
from deployments.marketing.schemas import CaptureAccepted
from gateway.context import ServicesDep, enforce, json, state
from gateway.errors import BadRequest, Validation
from gateway.principal import Principal
from gateway.problems import problem

router = APIRouter(tags=["capture"])

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FormKey = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

# Who a capture runs as: the system, with only what a capture needs.
CAPTURE_PRINCIPAL = Principal(
    user_id=0,
    role="system",
    kind="system",
    permissions=frozenset({"form:read", "lead:write", "campaign:write"}),
)


def trusted_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str:
    """The client to rate-limit: the socket peer, unless that peer is a trusted proxy;
    then the right-most `X-Forwarded-For` entry that is not itself trusted (entries to
    its left were written by the client and prove nothing)."""
    address = peer or "unknown"
    if not trusted or not _trusted(address, trusted) or not forwarded_for:
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a mangled header: fall back to the proxy itself
        if not _trusted(hop, trusted):
            return hop
    return address


def _payload(body: bytes, content_type: str) -> dict[str, Any]:
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the form body is malformed") from None
        payload: dict[str, Any] = {}
        for name, value in pairs:
            if name in payload:
                raise Validation("invalid capture", [{"field": name, "message": "given twice"}])
            payload[name] = value
        return payload
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise Validation("invalid capture", [{"field": "body", "message": "must be an object"}])
    return parsed


@router.post("/capture/{form_key}", status_code=202, response_model=CaptureAccepted)
async def capture(form_key: FormKey, request: Request, services: ServicesDep) -> Response:
    """Submit a capture form (JSON object or url-encoded form; no authentication).
    Creates the lead, or touches the lead that already has this e-mail; answers 202
    either way. 404 for an unknown or inactive form, 422 for fields the form does not
    have or invalid values, 413 above 8 KiB, 429 (Retry-After) when rate-limited."""
    st = state(request)
    peer = request.client.host if request.client else None
    client = client_address(peer, request.headers.get("x-forwarded-for"), st.trusted_proxies)
    if st.capture_form_limiter is not None:
        await enforce(request, st.capture_form_limiter, f"capture-form:{form_key}")
    if st.capture_client_limiter is not None:
        await enforce(request, st.capture_client_limiter, f"capture-client:{client}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        return problem(request, 413, "too-large", "Request too large", "capture body too large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return problem(request, 413, "too-large", "Request too large", "capture body too large")
    payload = _payload(body, request.headers.get("content-type", "application/json"))
    accepted = await services.marketing.capture.remote(CAPTURE_PRINCIPAL, form_key, payload)
    return json(accepted, 202)
