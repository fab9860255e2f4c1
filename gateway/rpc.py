"""gRPC on the shared pipeline: the `nextflow.v1` services (proto/nextflow/v1/*.proto)
are answered by the ingress of the service that owns them (customers, sales, support),
beside its HTTP routes; clients name the application in the `application` metadata.

Serve's gRPC server (`grpc_options` in serve_config.yaml) calls the ingress
deployment's method named after the RPC with the request message and a
`grpc_context`. Every method here goes through `GrpcServicer._call`, which runs the
same `authenticate` as the HTTP routes (JWT or API key, rate limit, read-your-writes)
before anything reaches a service, then calls the same service methods with
the same pydantic models, and maps the same `AppError`s to gRPC status codes. Nothing
here checks a permission itself: the services do, as for HTTP.

Metadata: `authorization` (or `x-api-key`), `if-match` (version) on updates and stage
moves, `idempotency-key` on creates, `nextflow-read-after`; answers after a write
carry `nextflow-read-after` and every answer the `ratelimit-*` trailers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from pydantic import BaseModel, ValidationError

from gateway import idempotency
from gateway.context import authenticate, if_match
from gateway.errors import (
    AppError,
    BadRequest,
    Conflict,
    RateLimited,
    Unavailable,
    Validation,
)
from gateway.listing import ListQuery, field_errors, parse_list_params
from gateway.pipeline import Pipeline
from gateway.principal import Principal
from gateway.problems import unwrap
from gateway.ratelimit import Decision
from gateway.records import Record
from nextflow.v1 import common_pb2
from shards import consistency
from shards.ids import MAX_ID

log = logging.getLogger("nextflow.gateway")

M = TypeVar("M", bound=Message)

READ_AFTER = consistency.HEADER.lower()
ERROR_DOMAIN = "nextflow.dev"
# A repeat of a create with the same key within this time returns the first answer.

# HTTP status of an AppError -> gRPC code. 409 (a refused transition or a duplicate)
# and 412 (stale version) are both FAILED_PRECONDITION; the ErrorInfo reason (the
# problem slug: `conflict`, `stale-version`) tells them apart.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


class Call:
    """One gRPC call: its metadata in, its trailers out."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.metadata: dict[str, str] = {}
        for key, value in context.invocation_metadata():
            if isinstance(value, str):
                self.metadata[key.lower()] = value
        self.trailers: list[tuple[str, str | bytes]] = []
        self.caller = ""  # the rate-limit / session key, once authenticated

    def get(self, key: str) -> str | None:
        return self.metadata.get(key)

    def version(self) -> int | None:
        """`if-match: "3"` (an ETag, as over HTTP) or `if-match: 3`."""
        value = self.get("if-match")
        if value is not None and value.strip().isdigit() and len(value.strip()) <= 10:
            return int(value.strip())
        return if_match(value)

    def once(self, request: Message) -> idempotency.Once | None:
        """The `idempotency-key` of a create that keeps it in its own transaction
        (`deployments/_kit/once.py`), as HTTP's `@in_effect` routes do; namespaced by
        RPC, so it never meets an HTTP key, and fingerprinted by the request."""
        key = self.get("idempotency-key")
        if key is None or not self.caller:
            return None
        if not 1 <= len(key) <= 200:
            raise BadRequest("idempotency-key must be 1-200 characters")
        slot = f"grpc:{request.DESCRIPTOR.full_name}:{key}"
        fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        return idempotency.Once(self.caller, slot, fingerprint)

    def on_decision(self, decision: Decision) -> None:
        self.trailers.extend((k.lower(), v) for k, v in decision.headers().items())

    def finish(self) -> None:
        if self.trailers:
            self.context.set_trailing_metadata(self.trailers)

    def fail(self, exc: BaseException) -> None:
        """Set the status (and rich details) that `exc` maps to."""
        original = unwrap(exc)
        if isinstance(original, ValidationError):
            original = Validation("the request is invalid", field_errors(original))
        # Serve's id for the call: Serve put it in the `request_id` trailer already.
        request_id = next(
            (str(v) for k, v in self.context.trailing_metadata() or () if k == "request_id"), ""
        )
        if not isinstance(original, AppError):
            log.error("unhandled error on a gRPC call (request %s): %r", request_id, original)
            original = AppError("the request could not be completed")
        code = _CODES.get(original.status, grpc.StatusCode.INTERNAL)
        info = {"status": str(original.status)}
        if request_id:
            info["request_id"] = request_id
        details: list[Message] = [
            error_details_pb2.ErrorInfo(reason=original.slug, domain=ERROR_DOMAIN, metadata=info)
        ]
        if original.errors:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=e.get("field", ""), description=e.get("message", "")
                        )
                        for e in original.errors
                    ]
                )
            )
        if isinstance(original, RateLimited | Unavailable):
            retry_after = int(getattr(original, "retry_after", 1))
            details.append(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after)))
            self.trailers.append(("retry-after", str(retry_after)))
        status = status_pb2.Status(code=code.value[0], message=original.detail)
        for detail in details:
            status.details.add().Pack(detail)
        self.trailers.append(("grpc-status-details-bin", status.SerializeToString()))
        self.context.set_code(code)
        self.context.set_details(original.detail)


def to_proto(model: BaseModel, message: type[M]) -> M:
    """A service's pydantic answer as the proto message (through its JSON form: ids as
    strings, RFC 3339 times, decimal strings, exactly as the HTTP API writes them)."""
    parsed: M = json_format.ParseDict(
        model.model_dump(mode="json", exclude_none=True), message(), ignore_unknown_fields=True
    )
    return parsed


def from_proto(message: Message) -> dict[str, Any]:
    """The set fields of a request message, as the JSON body HTTP would get."""
    body: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return body


def list_query(request: common_pb2.ListRequest, model: type[ListQuery]) -> ListQuery:
    """The HTTP list's query parameters, checked by the same parser."""
    params: list[tuple[str, str]] = []
    if request.limit:
        params.append(("limit", str(request.limit)))
    if request.cursor:
        params.append(("cursor", request.cursor))
    if request.sort:
        params.append(("sort", request.sort))
    if request.count:
        params.append(("count", "true"))
    params.extend(sorted(request.filters.items()))
    return parse_list_params(params, model)


def masked_update(message: Message, paths: list[str], writable: frozenset[str]) -> dict[str, Any]:
    """`update_mask` semantics: each named field takes the message's value, and a
    named field left unset becomes null (cleared), like `null` in a JSON PATCH."""
    unknown = [p for p in paths if p not in writable]
    if unknown or not paths:
        raise Validation(
            "update_mask must name the fields to update",
            [{"field": f"update_mask.{p}", "message": "not a writable field"} for p in unknown]
            or [{"field": "update_mask", "message": "empty"}],
        )
    given = from_proto(message)
    descriptor = message.DESCRIPTOR
    data: dict[str, Any] = {}
    for path in paths:
        field = descriptor.fields_by_name[path]
        if path in given:
            data[path] = given[path]
        elif field.is_repeated:
            data[path] = []
        elif field.message_type is not None and field.message_type.full_name.endswith("Struct"):
            data[path] = {}
        else:
            data[path] = None
    return data


class GrpcIngress:
    """Mixed into a service's ingress deployment, whose methods named after RPCs of
    `nextflow.v1` answer them through `_call`. Needs `self._pipeline`."""

    _pipeline: Pipeline

    async def _call(
        self,
        context: Any,
        empty: type[M],
        handler: Callable[[Principal, Call], Awaitable[M]],
        idempotent: Message | None = None,
    ) -> M:
        call = Call(context)
        try:
            principal, call.caller = await authenticate(
                self._pipeline,
                call.get("authorization"),
                call.get("x-api-key"),
                call.get(READ_AFTER),
                call.on_decision,
            )
            key = call.get("idempotency-key")
            answer: M
            if idempotent is not None and key is not None:
                answer = await self._once(key, idempotent, empty, principal, call, handler)
            else:
                answer = await handler(principal, call)
        except Exception as exc:  # every failure becomes a status, never a traceback
            call.fail(exc)
            call.finish()
            nothing: M = empty()
            return nothing
        call.finish()
        return answer

    async def _remember(self, call: Call, model: Record) -> None:
        """After a write: the caller's next reads (HTTP or gRPC) see it, and the answer
        carries the read-your-writes token (merged with the one the call brought)."""
        positions = model.read_after
        if not positions:
            return
        await self._pipeline.sessions.remember(call.caller, positions)
        brought = call.get(READ_AFTER)
        merged = positions
        if brought:
            try:
                merged = consistency.merge(consistency.decode(brought), positions)
            except consistency.BadToken:
                merged = positions
        call.trailers.append((READ_AFTER, consistency.encode(merged)))

    async def _once(
        self,
        key: str,
        request: Message,
        empty: type[M],
        principal: Principal,
        call: Call,
        handler: Callable[[Principal, Call], Awaitable[M]],
    ) -> M:
        """Run a create once per (caller, method, idempotency key): a repeat with the
        same request gets the first answer; with another request, INVALID_ARGUMENT;
        while the first still runs, FAILED_PRECONDITION (a 409 Conflict). Keys live
        where HTTP's do, in PostgreSQL (`deployments/auth/idempotency.py`, namespaced
        by RPC so they never meet an HTTP key), with the same lease and retention."""
        if not 1 <= len(key) <= 200:
            raise BadRequest("idempotency-key must be 1-200 characters")
        store = self._pipeline.idempotency
        if store is None:
            return await handler(principal, call)
        slot = f"grpc:{request.DESCRIPTOR.full_name}:{key}"
        fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        found = await store.claim(call.caller, slot)
        if found.outcome == "busy":
            raise Conflict("a request with this idempotency-key is in progress")
        if found.outcome == "done":
            if found.fingerprint != fingerprint:
                raise Validation(
                    "this idempotency-key was used with another request",
                    [{"field": "idempotency-key", "message": "used with another request"}],
                )
            replayed: M = empty.FromString(found.body)
            return replayed
        try:
            answer = await handler(principal, call)
        except BaseException:
            await store.release(call.caller, slot, found.claim_id)
            raise
        await store.complete(
            call.caller, slot, found.claim_id, fingerprint, 200, (), answer.SerializeToString()
        )
        return answer

    async def _write(self, principal: Principal, call: Call, record: Record, message: type[M]) -> M:
        await self._remember(call, record)
        call.trailers.append(("etag", f'"{getattr(record, "version", "")}"'))
        return to_proto(record, message)


def record_id(value: int) -> int:
    """A record id from a request (the HTTP path's 1..MAX_ID check)."""
    if not 1 <= value <= MAX_ID:
        raise Validation("invalid id", [{"field": "id", "message": f"1 to {MAX_ID}"}])
    return value


__all__ = [
    "Call",
    "GrpcIngress",
    "from_proto",
    "list_query",
    "masked_update",
    "record_id",
    "to_proto",
]
