"""The Serve application: the `Gateway` ingress in front of the domain deployments.

`serve_config.yaml` points at `gateway.app:build_app`; the builder binds every
deployment and hands their handles to the gateway.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from cluster import logs, redis_client, tracing
from cluster.settings import Settings, get_settings
from deployments.ai.deployment import AIDeployment
from deployments.analytics.deployment import AnalyticsDeployment
from deployments.auth.deployment import AuthDeployment
from deployments.customer import deployment as customer_deployment
from deployments.customer.deployment import CustomerDeployment
from deployments.file.deployment import FileDeployment
from deployments.integration.deployment import IntegrationDeployment
from deployments.marketing.deployment import MarketingDeployment
from deployments.notification.deployment import NotificationDeployment
from deployments.product.deployment import ProductDeployment
from deployments.sales.deployment import SalesDeployment
from deployments.support.deployment import SupportDeployment
from deployments.webhooks.deployment import WebhookDeployment
from gateway import idempotency, problems
from gateway.batching import BatchedHandle
from gateway.context import GatewayState, Services
from gateway.hardening import BodyLimit, HardenedAPI, RequestTimeout
from gateway.middleware import RequestContext
from gateway.ratelimit import RateLimiter
from gateway.routes import (
    ai,
    api_keys,
    auth,
    capture,
    customers,
    deals,
    files,
    health,
    imports,
    marketing,
    notifications,
    orders,
    pipelines,
    products,
    queues,
    reports,
    teams,
    tickets,
    users,
    webhooks,
)
from gateway.rpc import GrpcServicer
from gateway.sessions import SessionPositions
from gateway.tokens import JwtConfig


class AppArgs(BaseModel):
    """Arguments from `serve_config.yaml` (`applications[].args`)."""

    model_config = ConfigDict(extra="forbid")
    title: str = "NextFlow CRM API"


def create_api(state: GatewayState, args: AppArgs, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = HardenedAPI(
        title=args.title,
        version="1.0",
        description=(
            "NextFlow CRM. Ids are 64-bit integers written as strings. Errors are RFC 9457 "
            "problem+json. Lists use cursor pages. Updates take `If-Match`."
        ),
    )
    app.state.gateway = state
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
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key",
                           "X-Request-Id", "NextFlow-Read-After"],
            expose_headers=["ETag", "Location", "Retry-After", "X-Request-Id",
                            "NextFlow-Read-After", "Idempotent-Replayed"],
        )  # fmt: skip
    app.add_middleware(RequestContext)
    problems.install(app)
    for module in (
        health, auth, users, teams, api_keys, customers, products,
        pipelines, deals, orders, tickets, queues, marketing, capture, files, imports,
        notifications, webhooks, reports, ai,
    ):  # fmt: skip
        app.include_router(module.router)
    return app


@serve.deployment(name="Gateway")
@serve.ingress()
class Gateway(GrpcServicer):
    """HTTP (the FastAPI app) and gRPC (`GrpcServicer`'s methods, called by Serve's
    gRPC server) in the same replica, sharing its auth, rate limits and handles."""

    def __init__(self, args: dict[str, Any], **handles: DeploymentHandle[Any]) -> None:
        """`handles`: one per domain deployment, named as the fields of `Services`."""
        settings = get_settings()
        tracing.enabled()  # before FastAPI starts its first request span
        logs.configure()
        self._args = AppArgs.model_validate(args)
        self._redis = redis_client.connect(settings.redis_url)
        self._state = GatewayState(
            services=Services(**_batched(handles, settings)),
            jwt=JwtConfig(
                secret=settings.jwt_secret.get_secret_value(),
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                ttl_s=settings.access_token_ttl_s,
            ),
            limiter=_limiter(self._redis, settings, login=False),
            login_limiter=_limiter(self._redis, settings, login=True),
            sessions=SessionPositions(self._redis, ttl_s=settings.max_replica_lag_s * 2 + 5),
            redis=self._redis,
            capture_form_limiter=_capture_limiter(self._redis, settings, per_form=True),
            capture_client_limiter=_capture_limiter(self._redis, settings, per_form=False),
            trusted_proxies=capture.trusted_networks(settings.trusted_proxies.split(",")),
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self._state, self._args)


def _batched(handles: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Handles whose short calls are micro-batched (`gateway.batching`), unless
    `service_batch_in_flight` is 0."""
    if settings.service_batch_in_flight == 0:
        return handles
    batched = {"customers": customer_deployment.BATCHED}
    return {
        name: BatchedHandle(
            handle,
            batched[name],
            in_flight=settings.service_batch_in_flight,
            max_batch=settings.service_batch_max,
        )
        if name in batched
        else handle
        for name, handle in handles.items()
    }


def _limiter(redis: aioredis.Redis, settings: Settings, login: bool) -> RateLimiter | None:
    if not settings.rate_limit_enabled:
        return None
    fail_open = settings.rate_limit_fail_open
    if login:
        return RateLimiter(
            redis, settings.login_limit_per_minute, settings.login_limit_burst, fail_open
        )
    return RateLimiter(redis, settings.rate_limit_per_minute, settings.rate_limit_burst, fail_open)


def _capture_limiter(
    redis: aioredis.Redis, settings: Settings, per_form: bool
) -> RateLimiter | None:
    if not settings.rate_limit_enabled:
        return None
    if per_form:
        return RateLimiter(
            redis, settings.capture_form_limit_per_minute, settings.capture_form_limit_burst
        )
    return RateLimiter(
        redis, settings.capture_client_limit_per_minute, settings.capture_client_limit_burst
    )


def build_app(args: dict[str, Any]) -> Application:
    """Typed application builder named by `serve_config.yaml`."""
    parsed = AppArgs.model_validate(args or {})
    customers = CustomerDeployment.bind()  # type: ignore[attr-defined]
    products = ProductDeployment.bind()  # type: ignore[attr-defined]
    sales = SalesDeployment.bind(customers, products)  # type: ignore[attr-defined]
    marketing = MarketingDeployment.bind(customers, sales)  # type: ignore[attr-defined]
    support = SupportDeployment.bind(customers)  # type: ignore[attr-defined]
    files = FileDeployment.bind(customers, sales, support, marketing)  # type: ignore[attr-defined]
    auth = AuthDeployment.bind()  # type: ignore[attr-defined]
    return Gateway.bind(  # type: ignore[attr-defined, no-any-return]
        parsed.model_dump(),
        auth=auth,
        customers=customers,
        products=products,
        sales=sales,
        support=support,
        marketing=marketing,
        files=files,
        integration=IntegrationDeployment.bind(),  # type: ignore[attr-defined]
        notifications=NotificationDeployment.bind(auth),  # type: ignore[attr-defined]
        webhooks=WebhookDeployment.bind(),  # type: ignore[attr-defined]
        analytics=AnalyticsDeployment.bind(),  # type: ignore[attr-defined]
        ai=AIDeployment.bind(support, sales),  # type: ignore[attr-defined]
    )
