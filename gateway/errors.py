"""The errors every service raises and the gateway maps to RFC 9457 problem+json.

They cross Ray (replica -> gateway, replica -> handle caller) by pickling, so each
keeps its constructor arguments in `args` order via `__reduce__`.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://nextflow.dev/errors/"


class AppError(Exception):
    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail, self.errors))

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug


class BadRequest(AppError):
    status, slug, title = 400, "bad-request", "Malformed request"


class Unauthenticated(AppError):
    status, slug, title = 401, "unauthenticated", "Authentication required"


class Forbidden(AppError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(AppError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(AppError):
    status, slug, title = 409, "conflict", "Conflict"


class PreconditionFailed(AppError):
    status, slug, title = 412, "stale-version", "Version does not match"


class Validation(AppError):
    status, slug, title = 422, "validation", "Invalid input"


class RateLimited(AppError):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(
        self, detail: str, errors: list[dict[str, str]] | None = None, retry_after: int = 1
    ) -> None:
        super().__init__(detail, errors)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail, self.errors, self.retry_after))


class Unavailable(AppError):
    status, slug, title = 503, "unavailable", "A dependency is unavailable"
