"""Every error leaves as RFC 9457 `application/problem+json`; never a stack trace,
SQL text or a host name."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from ray.exceptions import RayActorError
from ray.serve import exceptions as serve_exceptions
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.errors import PROBLEM_BASE, AppError, RateLimited, Unavailable

log = logging.getLogger("nextflow.gateway")

_HTTP_TITLES = {
    400: ("bad-request", "Malformed request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("too-large", "Request too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def unwrap(exc: BaseException) -> BaseException:
    """A service's exception arrives wrapped by Ray (RayTaskError); get the original."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def problem(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
    }
    if errors:
        body["errors"] = errors
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def app_error_response(request: Request, exc: AppError) -> Response:
    headers = {}
    if isinstance(exc, RateLimited | Unavailable) or hasattr(exc, "retry_after"):
        headers["Retry-After"] = str(getattr(exc, "retry_after", 1))
    return problem(request, exc.status, exc.slug, exc.title, exc.detail, exc.errors, headers)


# What Ray and Serve raise when the replica or actor a call went to is gone, or no
# replica can take it: a 503, not a 500.
_GONE = (
    RayActorError,
    serve_exceptions.BackPressureError,
    serve_exceptions.DeploymentUnavailableError,
    serve_exceptions.ReplicaUnavailableError,
)


def install(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> Response:
        original = unwrap(exc)
        if isinstance(original, AppError):
            return app_error_response(request, original)
        if isinstance(original, _GONE):
            # A service replica died with the request in flight, or none can take it
            # now: Serve starts another; the client may retry (with its
            # Idempotency-Key, for a create).
            log.warning("service unavailable on %s %s: %r", request.method, request.url.path,
                        original)  # fmt: skip
            return app_error_response(
                request, Unavailable("a service is restarting; try again shortly")
            )
        log.error(
            "unhandled error on %s %s (request %s): %r",
            request.method,
            request.url.path,
            getattr(request.state, "request_id", "-"),
            original,
        )
        return problem(
            request, 500, "internal", "Internal error", "the request could not be completed"
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return problem(
                request, 400, "bad-request", "Malformed request", "body is not valid JSON"
            )
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p not in ("body", "query", "path", "header")]
            errors.append({"field": ".".join(loc) or "body", "message": str(err["msg"])})
        return problem(
            request, 422, "validation", "Invalid input", "the request is invalid", errors
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug, title = _HTTP_TITLES.get(exc.status_code, ("error", "Error"))
        return problem(
            request, exc.status_code, slug, title, str(exc.detail), headers=dict(exc.headers or {})
        )

    app.add_exception_handler(AppError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_error)


__all__ = ["app_error_response", "install", "problem", "unwrap"]
