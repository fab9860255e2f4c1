"""The shared ingress pipeline: every domain service's Serve ingress builds its FastAPI
app here, so no route can skip request ids, authentication, rate limits,
idempotency, body and time caps, security headers, tracing and problem+json.

    pipeline = open_pipeline(settings, api_keys=..., idempotency=...)
    api = build_api(pipeline, title="Customers", routers=[routes.router], service=svc)

The pipeline knows no domain: the caller hands it how to check an API key and where
to keep `Idempotency-Key` answers (both behind the small protocols below), and the
service object its routes reach through `request.app.state.service`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cluster import logs, redis_client, tracing
from cluster.settings import Settings, get_settings
from gateway import idempotency, problems
from gateway.admission import Admission
from gateway.hardening import BodyLimit, HardenedAPI, RequestTimeout
from gateway.listing import SavedQuery
from gateway.middleware import RequestContext
from gateway.openapi import operation_id
from gateway.principal import Principal
from gateway.ratelimit import RateLimiter
from gateway.sessions import SessionPositions
from gateway.tokens import JwtConfig, VerifiedTokens
from gateway.trust import Network, trusted_networks


class ApiKeys(Protocol):
    """Checks an API key (`nf_...`) and answers its owner, or raises Unauthenticated."""

    async def verify(self, key: str) -> Principal: ...


class Views(Protocol):
    """Saved views as list routes read them (`?view=<id>`; deployments/auth/views.py)."""

    async def get(self, view_id: int) -> SavedQuery | None: ...


class IdempotencyStore(Protocol):
    """Where `Idempotency-Key` claims and answers are kept (`gateway.idempotency`)."""

    async def claim(self, caller: str, key: str) -> Any: ...

    async def complete(
        self,
        caller: str,
        key: str,
        claim_id: str,
        fingerprint: bytes,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
    ) -> bool: ...

    async def release(self, caller: str, key: str, claim_id: str) -> None: ...


@dataclass
class Pipeline:
    """What every request's pipeline steps share within one replica."""

    jwt: JwtConfig
    limiter: RateLimiter | None
    login_limiter: RateLimiter | None
    sessions: SessionPositions
    redis: Any
    api_keys: ApiKeys | None = None
    idempotency: IdempotencyStore | None = None
    views: Views | None = None
    # Public lead capture: limits per form and per client, and whom to believe about
    # a client's address (deployments/marketing/routes.py).
    capture_form_limiter: RateLimiter | None = None
    capture_client_limiter: RateLimiter | None = None
    trusted_proxies: tuple[Network, ...] = ()
    # Access tokens verified in this replica (signature checked once per token).
    tokens: VerifiedTokens = field(init=False)
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = VerifiedTokens(self.jwt)
        if self.redis is not None:
            self.admission = Admission(self.redis, self.limiter)


def jwt_config(settings: Settings) -> JwtConfig:
    return JwtConfig(
        secret=settings.jwt_secret.get_secret_value(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_s=settings.access_token_ttl_s,
    )


def open_pipeline(
    settings: Settings | None = None,
    *,
    api_keys: ApiKeys | None = None,
    idempotency: IdempotencyStore | None = None,
    views: Views | None = None,
    redis: aioredis.Redis | None = None,
) -> Pipeline:
    """The pipeline of one replica (its Redis client, limiters and token cache)."""
    settings = settings or get_settings()
    tracing.enabled()  # before FastAPI starts its first request span
    logs.configure()
    client = redis if redis is not None else redis_client.connect(settings.redis_url)
    return Pipeline(
        jwt=jwt_config(settings),
        limiter=_limiter(client, settings, settings.rate_limit_per_minute,
                         settings.rate_limit_burst, settings.rate_limit_fail_open),
        login_limiter=_limiter(client, settings, settings.login_limit_per_minute,
                               settings.login_limit_burst, settings.rate_limit_fail_open),
        sessions=SessionPositions(client, ttl_s=settings.max_replica_lag_s * 2 + 5),
        redis=client,
        api_keys=api_keys,
        idempotency=idempotency,
        views=views,
        capture_form_limiter=_limiter(client, settings, settings.capture_form_limit_per_minute,
                                      settings.capture_form_limit_burst),
        capture_client_limiter=_limiter(client, settings,
                                        settings.capture_client_limit_per_minute,
                                        settings.capture_client_limit_burst),
        trusted_proxies=trusted_networks(settings.trusted_proxies.split(",")),
    )  # fmt: skip


def _limiter(
    redis: aioredis.Redis, settings: Settings, per_minute: int, burst: int, fail_open: bool = True
) -> RateLimiter | None:
    if not settings.rate_limit_enabled:
        return None
    return RateLimiter(redis, per_minute, burst, fail_open)


# A readiness check: raises when what it checks is down; may answer a note (a str)
# when it serves with less to fall back on ("degraded").
Ready = Callable[[], Awaitable[str | None]]


def build_api(
    pipeline: Pipeline,
    *,
    title: str,
    routers: Iterable[APIRouter],
    service: Any = None,
    ready: dict[str, Ready] | None = None,
    description: str = "",
    settings: Settings | None = None,
) -> FastAPI:
    """A service's FastAPI app with the whole pipeline around `routers`, plus its
    `/health` and `/ready` (`ready`: the checks readiness runs beside Redis)."""
    from gateway import health  # the health routes read the pipeline's state

    settings = settings or get_settings()
    app = HardenedAPI(
        title=title,
        version="1.0",
        generate_unique_id_function=operation_id,
        description=description
        or (
            "Ids are 64-bit integers written as strings. Errors are RFC 9457 "
            "problem+json. Lists use cursor pages. Updates take `If-Match`."
        ),
    )
    app.state.gateway = pipeline
    app.state.service = service
    app.state.ready_checks = dict(ready or {})
    app.hsts_max_age_s = settings.hsts_max_age_s  # the security headers: outermost
    # Outermost last: security headers (HardenedAPI) > RequestContext (ids, metrics) > CORS >
    # timeout > body cap > Idempotency-Key > the routes.
    idempotency.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestTimeout, timeout_s=settings.request_timeout_s)
    origins = [o.strip() for o in settings.cors_allowed_origins.split(",") if o.strip()]
    if origins:  # closed by default: no CORS headers, browsers refuse cross-origin calls
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key",
                           "X-Request-Id", "NextFlow-Read-After"],
            expose_headers=["ETag", "Location", "Retry-After", "X-Request-Id",
                            "NextFlow-Read-After", "Idempotent-Replayed"],
        )  # fmt: skip
    app.add_middleware(RequestContext)
    problems.install(app)
    app.include_router(health.router)
    for router in routers:
        app.include_router(router)
    return app


__all__ = [
    "ApiKeys", "IdempotencyStore", "Pipeline", "Views", "build_api", "jwt_config",
    "open_pipeline",
]  # fmt: skip
