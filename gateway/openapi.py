"""What every OpenAPI document says beyond what FastAPI derives from the routes
(issue 24): how callers authenticate, what an error looks like, and a readable
operationId per operation. Each application's `/openapi.json` and the API's merged
one (`deployments/api/app.py: merged_openapi`) go through `finish`.

- **Security**: two schemes, `bearer` (`Authorization: Bearer <access token or API
  key>`) and `apiKey` (`X-API-Key`), required by every operation except those whose
  route says otherwise with `openapi_extra=PUBLIC` (sign-in, public lead capture,
  health) or `OPTIONAL_AUTH` (sign-out). The `Authorization` and `X-API-Key` header
  parameters FastAPI derives from the principal dependency are dropped: the schemes
  say it, and a generated client or a fuzzer then sends real credentials instead of
  inventing a header.
- **Errors**: one `Problem` schema (RFC 9457, as `gateway/problems.py` writes it),
  as `application/problem+json`, for every status the pipeline can answer the
  operation with: 401 and 403 (authenticated ones), 404 (a record in the path), 409
  (a conflict: an Idempotency-Key reused, a unique value taken, a stale write), 412
  (`If-Match` that no longer matches), 413 (bodies), 422 (invalid input, replacing
  FastAPI's `HTTPValidationError`, which the API never sends), 429 (rate limits),
  400 (a malformed query, cursor or header), 503 (a dependency away) and 504 (too
  slow); 429 and 503 with `Retry-After`.
- **Headers**: `Idempotency-Key` on every authenticated POST, `If-Match` and
  `NextFlow-Read-After` with the patterns the pipeline accepts; on successes `ETag`
  (a versioned record), `Location` (201), `NextFlow-Read-After` (writes) and
  `RateLimit-Remaining`.
- **operationId**: the route function's name (`list_customers`), unique across the
  whole API (`operation_id`; a test holds it).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import email_validator
from fastapi.routing import APIRoute

from gateway.errors import PROBLEM_BASE
from gateway.inputs import NO_NUL

PUBLIC: dict[str, Any] = {"security": []}
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}, {"bearer": []}]}

_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An error, as RFC 9457 problem details (`application/problem+json`).",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "description": f"What kind of error: `{PROBLEM_BASE}<slug>` (docs/errors.md).",
        },
        "title": {"type": "string", "description": "The kind of error, in words."},
        "status": {"type": "integer", "description": "The HTTP status."},
        "detail": {"type": "string", "description": "This occurrence, in words."},
        "instance": {"type": "string", "description": "The request's path."},
        "request_id": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": "The request's id, as in the logs and X-Request-Id.",
        },
        "errors": {
            "type": "array",
            "description": "Each invalid field (422), or each likely duplicate (409).",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "id": {
                        "type": "string",
                        "description": "The record the entry is about (a likely duplicate).",
                    },
                },
            },
        },
    },
}
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An access token from `POST /v1/auth/login`, or an API key.",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_ERRORS = {
    "400": "The query or cursor is malformed",
    "401": "No valid credentials",
    "403": "The caller may not do this",
    "404": "No such record (or one the caller may not see)",
    "409": "A conflict: a key reused, a value taken, a stale write",
    "412": "`If-Match` no longer matches the record's version",
    "413": "The body is too large",
    "422": "The input is invalid",
    "429": "Too many requests: retry after `Retry-After` seconds",
    "503": "A dependency is unavailable: retry after `Retry-After` seconds",
    "504": "The request took too long",
}


_IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Any unique key (1-255 printable ASCII characters): a retry with the "
    "same key and body answers as the first attempt did, never running it twice; the "
    "same key with another body is a 422 (docs/security.md).",
    "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
}
# What the pipeline accepts for the headers FastAPI declares as free strings.
_HEADER_SCHEMAS: dict[str, tuple[dict[str, Any], str]] = {
    "if-match": (
        {"type": "string", "pattern": r'^\s*(?:(?:W/)?"[0-9]{1,10}"|\*)\s*$'},
        'The record\'s `ETag` (`"<version>"`): the write is refused with 412 when the '
        "record has changed since.",
    ),
    "nextflow-read-after": (
        {"type": "string", "pattern": r"^[A-Za-z0-9_-]*={0,2}$", "maxLength": 65536},
        "The `NextFlow-Read-After` token of your last write: the read sees at least that "
        "write (read-your-writes).",
    ),
}
_HEADER = {"schema": {"type": "string"}}
_RESPONSE_HEADERS = {
    "ETag": {**_HEADER, "description": 'The record\'s version, `"<version>"`, for If-Match.'},
    "Location": {**_HEADER, "description": "The created record's URL."},
    "NextFlow-Read-After": {**_HEADER, "description": "Send back to read your own writes."},
    "Retry-After": {
        "schema": {"type": "integer"},
        "description": "Seconds to wait before retrying.",
    },
    "RateLimit-Remaining": {
        "schema": {"type": "integer"},
        "description": "Requests left in the caller's window.",
    },
}


def request_body(content: dict[str, dict[str, Any]], description: str) -> dict[str, Any]:
    """A route's `openapi_extra` declaring a body the route reads itself (a stream:
    uploads, forms), which FastAPI cannot see: media type -> schema."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {media: {"schema": schema} for media, schema in content.items()},
        }
    }


BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


def operation_id(route: APIRoute) -> str:
    """The operationId of a route: its function's name."""
    return route.name


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's) with the security schemes, the problem responses and
    without the credential header parameters; a new dict."""
    document = copy.deepcopy(document)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    document["security"] = [{"bearer": []}, {"apiKey": []}]
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            _finish_operation(path, method, operation, schemas)
    _no_nul(document)
    return document


_TEXT_FORMATS = frozenset({"binary", "date", "date-time", "email", "uri", "uuid"})


def _case_free(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


# E-mail addresses (`EmailStr`, email-validator) at a special-use or reserved domain
# (`x@host.test`, `.local`, `.invalid`, ...) are refused: the `email` format allows
# them, so the schemas say so.
SPECIAL_USE_DOMAIN = (
    "(@|\\.)(" + "|".join(_case_free(d) for d in email_validator.SPECIAL_USE_DOMAIN_NAMES) + ")$"
)


def _no_nul(node: Any) -> None:
    """Every free-text string schema in `node` (one with no pattern, choices or format
    of its own) says it takes no NUL character; every e-mail one, which domains it
    refuses."""
    if isinstance(node, list):
        for item in node:
            _no_nul(item)
        return
    if not isinstance(node, dict):
        return
    kinds = node.get("type")
    text = kinds == "string" or (isinstance(kinds, list) and "string" in kinds)
    if text and not {"pattern", "enum", "const"} & node.keys() and (
        node.get("format") not in _TEXT_FORMATS
    ):
        node["pattern"] = NO_NUL
    if text and node.get("format") == "email":
        node["not"] = {"pattern": SPECIAL_USE_DOMAIN}
    for value in node.values():
        _no_nul(value)


def _finish_operation(
    path: str, method: str, operation: dict[str, Any], schemas: dict[str, Any]
) -> None:
    public = operation.get("security") == []
    parameters = []
    for parameter in operation.get("parameters", []):
        name = parameter.get("name", "").lower()
        if parameter.get("in") == "header" and name in _CREDENTIAL_HEADERS:
            continue
        if parameter.get("in") == "header" and name in _HEADER_SCHEMAS:
            schema, description = _HEADER_SCHEMAS[name]
            parameter = {**parameter, "schema": schema, "description": description}
        parameters.append(parameter)
    named = {p.get("name", "").lower() for p in parameters}
    # Keys are kept per caller: an operation that may go without one (public, or
    # sign-out's optional credentials) takes none.
    if method == "post" and "security" not in operation and "idempotency-key" not in named:
        parameters.append(_IDEMPOTENCY_KEY)
    if parameters:
        operation["parameters"] = parameters
    else:
        operation.pop("parameters", None)
    _success_headers(method, operation, schemas)
    statuses = {"400", "422", "429", "503", "504"}  # 400: a malformed query or header
    if not public:
        statuses |= {"401", "403"}
    # A record in the path, or one the route names in its body (it declares a 404).
    if "{" in path or "404" in operation.get("responses", {}):
        statuses.add("404")
    if method != "get":
        statuses |= {"409", "413"}
    if any(p.get("name", "").lower() == "if-match" for p in parameters):
        statuses.add("412")
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        responses[status] = {
            "description": _ERRORS[status],
            "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
        }
        if status in ("429", "503"):
            responses[status]["headers"] = {"Retry-After": _RESPONSE_HEADERS["Retry-After"]}


def _success_headers(method: str, operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """The headers a success carries: a versioned record's `ETag`, a create's
    `Location`, a write's `NextFlow-Read-After`, the caller's `RateLimit-Remaining`."""
    for status, response in operation.get("responses", {}).items():
        if not status.startswith("2"):
            continue
        headers: dict[str, Any] = {}
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        model = schemas.get(str(schema.get("$ref", "")).rsplit("/", 1)[-1], {})
        if "version" in model.get("properties", {}):
            headers["ETag"] = _RESPONSE_HEADERS["ETag"]
        if status == "201":
            headers["Location"] = _RESPONSE_HEADERS["Location"]
        if method != "get":
            headers["NextFlow-Read-After"] = _RESPONSE_HEADERS["NextFlow-Read-After"]
        if operation.get("security") is None:
            headers["RateLimit-Remaining"] = _RESPONSE_HEADERS["RateLimit-Remaining"]
        if headers:
            # A route's own headers (declared in its `responses=`) stay.
            response["headers"] = {**headers, **response.get("headers", {})}
