"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.context import state
from gateway.problems import problem, unwrap

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the gateway replica answers. Checks no dependency."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Readiness: every database (through its shard manager), Redis and every
    service deployment answer. 503 names what does not."""
    st = state(request)
    checks: dict[str, Any] = {}

    async def check(name: str, call: Any) -> None:
        try:
            await asyncio.wait_for(call, timeout=5)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready, and says which
            checks[name] = f"unavailable: {type(unwrap(exc)).__name__}"

    await asyncio.gather(
        check("redis", st.redis.ping()),
        *(check(name, handle.ready.remote()) for name, handle in st.services.bound()),
    )
    if all(v == "ok" for v in checks.values()):
        return Response(
            orjson.dumps({"status": "ready", "checks": checks}), media_type="application/json"
        )
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem(
        request,
        503,
        "unavailable",
        "Not ready",
        f"not reachable: {failing}",
        [{"field": k, "message": v} for k, v in checks.items()],
        {"Retry-After": "5"},
    )
