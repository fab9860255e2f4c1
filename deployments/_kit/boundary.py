"""The edge of a service deployment: what leaves it is a model or an `AppError`.

Each call is one request scope for read-your-writes: reads honour the caller's
`Principal.read_after`, and a returned record carries the positions of the writes
the call made.

Storage errors become problems a caller can act on (503 with retry for a server that
is down) without leaking SQL or host names; the detail goes to the replica's log.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ParamSpec, TypeVar, cast

from opentelemetry.trace import SpanKind

from cluster import logs, tracing
from gateway.errors import AppError, Conflict, Unavailable, Validation
from gateway.principal import Principal
from gateway.records import Record
from shards import consistency
from shards.errors import DatabaseError, ShardUnavailable, StaleShardMap

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")
log = logging.getLogger("nextflow.service")


def _wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """`fn` (a bound service method) behind the boundary; its first argument, when a
    `Principal`, is the caller."""
    name = fn.__qualname__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        logs.configure()  # once per replica: JSON lines with request and trace ids
        principal = args[0] if args and isinstance(args[0], Principal) else None
        with (
            _span(name, principal),
            consistency.request_scope(principal.read_after if principal else {}) as written,
        ):
            result = await _translated(fn, *args, **kwargs)
        if written:
            # A record, or a record and what else the method answers (a create and the
            # records it likely duplicates).
            for item in result if isinstance(result, tuple) else (result,):
                if isinstance(item, Record):
                    item._read_after = dict(written)
        return result

    return wrapper


class _Bounded:
    """A service seen through its boundary: each public coroutine method is wrapped
    once, on first use; other attributes pass through."""

    def __init__(self, service: object) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        target = getattr(self._service, name)
        if not inspect.iscoroutinefunction(target):
            return target
        wrapped = _wrap(target)
        setattr(self, name, wrapped)  # found directly next time
        return wrapped


def bounded(service: S) -> S:
    """`service` with every public coroutine method behind the boundary: what its
    routes call in process and what a deployment handle reaches. One wrapper for all
    methods, so nothing forwards method by method."""
    return cast(S, _Bounded(service))


def _span(name: str, principal: Principal | None) -> AbstractContextManager[object]:
    """The service's span, a child of the caller's (when the caller traces)."""
    if principal is None or not principal.trace or not tracing.enabled():
        return nullcontext()
    return tracing.tracer().start_as_current_span(
        name,
        context=tracing.context_from(principal.trace),
        kind=SpanKind.SERVER,
        attributes={"enduser.id": str(principal.user_id), "nextflow.role": principal.role},
    )


async def _translated(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Storage errors become problems a caller can act on, without SQL or hosts."""
    try:
        return await fn(*args, **kwargs)
    except (ShardUnavailable, StaleShardMap) as exc:
        # StaleShardMap here: the map changed again while the call was retried.
        log.warning("storage unavailable in %s: %s", fn.__qualname__, exc)
        raise Unavailable("storage is temporarily unavailable; retry shortly") from None
    except DatabaseError as exc:
        raise storage_error(exc, fn.__qualname__) from None
    except UnicodeEncodeError:
        # JSON may carry a lone surrogate (`"\\ud800"`); no database stores it.
        raise Validation("text must be valid Unicode (an unpaired surrogate was sent)") from None


def storage_error(exc: DatabaseError, where: str) -> AppError:
    """The problem a statement's failure is for the caller (a batch item's too)."""
    if exc.is_unique_violation:
        return Conflict("a record with these values already exists")
    if exc.sqlstate == "23502":  # a null the input model let through (a bug of ours)
        log.error("NOT NULL violation in %s: %s", where, exc)
        return Validation(f"{exc.column or 'a field'} cannot be null")
    if exc.sqlstate in _UNSTORABLE:
        log.info("unstorable value in %s: %s", where, exc)
        return Validation(_UNSTORABLE[exc.sqlstate])
    log.error("database error in %s: %s", where, exc)
    return AppError("the request could not be completed")


# Values the input models let through but PostgreSQL cannot store: the client's 422.
_UNSTORABLE = {
    "22021": "text must not contain NUL characters (\\u0000)",
    "22P05": "text has a character the database cannot store",
    "22001": "a value is longer than the field allows",
    "22003": "a number is out of range",
    "22008": "a date or time is out of range",
    # The driver's own refusal of a parameter (a number beyond its column's type).
    "22000": "a value does not fit its field",
}


async def remote(call: Awaitable[T]) -> T:
    """Await another service's answer through its deployment handle: its `AppError`
    comes back as itself (Ray wraps it on the way), anything else as a 503."""
    try:
        return await call
    except Exception as exc:  # RayTaskError wrapping an AppError, actor deaths, ...
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, AppError) and getattr(cause, "cause", None) is None:
                raise cause from None
            cause = getattr(cause, "cause", None)
        log.warning("call to another service failed: %r", exc)
        raise Unavailable("a service this needs is unavailable; retry shortly") from None
