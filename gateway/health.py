"""Liveness and readiness of one service's ingress (every application has both,
under its own prefix)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.context import state
from gateway.openapi import PUBLIC
from gateway.problems import problem, unwrap

router = APIRouter(tags=["health"])


@router.get("/health", openapi_extra=PUBLIC)
async def health() -> dict[str, str]:
    """Liveness: the replica answers. Checks no dependency."""
    return {"status": "ok"}


# Without these the API still serves (rate limits fail open or closed as configured,
# caches are skipped, events wait in the outboxes): readiness says "degraded".
_OPTIONAL = frozenset({"redis"})


@router.get("/ready", openapi_extra=PUBLIC)
async def ready(request: Request) -> Response:
    """Readiness: Redis and this service's checks (its databases through their shard
    managers; the gateway application: every service, and every shard server's
    standby) answer. 503 names what does not. 200 "degraded" names what serves with
    less to fall back on: Redis down (the API keeps serving without it), a shard
    server without a usable standby."""
    st = state(request)
    checks: dict[str, Any] = {}

    async def check(name: str, call: Any) -> None:
        try:
            answer = await asyncio.wait_for(call, timeout=5)
            # A check may answer a note: serving, but with less to fall back on.
            note = answer if isinstance(answer, str) else ""
            checks[name] = f"degraded: {note}" if note else "ok"
        except Exception as exc:  # any failure means not ready, and says which
            checks[name] = f"unavailable: {type(unwrap(exc)).__name__}"

    await asyncio.gather(
        check("redis", st.redis.ping()),
        *(check(name, ready()) for name, ready in request.app.state.ready_checks.items()),
    )
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    if all(v == "ok" or v.startswith("degraded") for k, v in checks.items() if k not in _OPTIONAL):
        status = "ready" if not failing else "degraded"
        body = {"status": status, "checks": checks} | ({"degraded": failing} if failing else {})
        return Response(orjson.dumps(body), media_type="application/json")
    return problem(
        request,
        503,
        "unavailable",
        "Not ready",
        f"not reachable: {failing}",
        [{"field": k, "message": v} for k, v in checks.items()],
        {"Retry-After": "5"},
    )
