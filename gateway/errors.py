"""The errors every service raises and the gateway maps to RFC 9457 problem+json.

They cross Ray (replica -> gateway, replica -> handle caller) by pickling, so each
keeps its constructor arguments in `args` order via `__reduce__`.
"""

from __future__ import annotations

from typing import Any

# A problem's `type` is a URI reference (RFC 9457 3.1.1) to the API's own page for it,
# `GET /errors/<slug>` (deployments/api/app.py), resolved against the request's URL.
PROBLEM_BASE = "/errors/"

# Every problem type the API sends: slug -> (status, title, what it means, what to do).
# tests/unit/test_openapi.py holds it to the errors raised and the slugs written.
CATALOGUE: dict[str, tuple[int, str, str]] = {
    "bad-request": (400, "Malformed request",
                    "The query, a cursor or the body could not be read (a cursor from "
                    "another list or sort, a parameter given twice, JSON that does not "
                    "parse). Fix the request; repeating it fails the same way."),
    "unauthenticated": (401, "Authentication required",
                        "No valid credentials: send `Authorization: Bearer <access token "
                        "or API key>` or `X-API-Key`. An expired access token is renewed "
                        "with `POST /v1/auth/refresh`."),
    "forbidden": (403, "Not allowed",
                  "The caller's role lacks the permission, or the record is outside its "
                  "scope."),
    "not-found": (404, "Not found",
                  "No such record or route (a record the caller may not see is not "
                  "found either)."),
    "method-not-allowed": (405, "Method not allowed", "The path exists; the method does not."),
    "conflict": (409, "Conflict",
                 "The write conflicts with the stored state: a unique value taken, a "
                 "transition not allowed from the record's state."),
    "likely-duplicate": (409, "Likely a duplicate",
                         "A create asked to refuse likely duplicates (`?duplicates=reject`) "
                         "found records with the same normalised e-mail, phone or name; "
                         "`errors` names each (`id`, the field matched). Merge into one of "
                         "them, or create anyway with `?duplicates=warn`."),
    "idempotency-in-flight": (409, "Request with this key in progress",
                              "A request with the same Idempotency-Key is still running: "
                              "retry after `Retry-After`; it then answers as the first did."),
    "stale-version": (412, "Version does not match",
                      "`If-Match` names a version the record no longer has: read it again "
                      "(its `ETag`) and decide."),
    "too-large": (413, "Request too large",
                  "The body or upload is over its limit (the detail says which)."),
    "range-not-satisfiable": (416, "Range not satisfiable",
                              "The `Range` asked of a file download is outside the file."),
    "unsupported-media-type": (415, "Unsupported media type",
                               "The body's Content-Type is not one the operation reads."),
    "validation": (422, "Invalid input",
                   "The input breaks the operation's schema or rules; `errors` names each "
                   "field and why."),
    "idempotency-key-reused": (422, "Idempotency-Key reused",
                               "The Idempotency-Key was used for a different request "
                               "(method, path or body): use a new key per request."),
    "rate-limited": (429, "Too many requests",
                     "Over the caller's rate limit: retry after `Retry-After` seconds."),
    "internal": (500, "Internal error",
                 "The request could not be completed; the `request_id` finds it in the "
                 "logs."),
    "content-corrupt": (500, "Stored content is damaged",
                        "A file's stored bytes no longer match its sha256 (asked with "
                        "`verify=true`): restore it from a backup or upload it again."),
    "unavailable": (503, "A dependency is unavailable",
                    "A database or service is away for the moment (a failover, a "
                    "restart): retry after `Retry-After`; a create retried with the same "
                    "Idempotency-Key runs once."),
    "timeout": (504, "Request timed out",
                "The request ran longer than the limit and was stopped; whether a write "
                "took effect is unknown: retry it with the same Idempotency-Key."),
}  # fmt: skip


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


class LikelyDuplicate(AppError):
    status, slug, title = 409, "likely-duplicate", "Likely a duplicate"


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
