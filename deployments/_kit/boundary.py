"""The edge of a service deployment: what leaves it is a model or an `AppError`.

Each call is one request scope for read-your-writes: reads honour the caller's
`Principal.read_after`, and a returned record carries the positions of the writes
the call made.

Storage errors become problems a caller can act on (503 with retry for a server that
is down) without leaking SQL or host names; the detail goes to the replica's log.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from opentelemetry.trace import SpanKind

from cluster import logs, tracing
from cluster.autoscaling import CALLS_IN_PROGRESS
from cluster.batching import Outcome, run_each
from deployments._kit.errors import AppError, Conflict, Unavailable, Validation
from deployments._kit.principal import Principal
from deployments._kit.records import Record
from shards import consistency
from shards.errors import DatabaseError, ShardUnavailable, StaleShardMap

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("nextflow.service")


class _Load:
    """Boundary calls in progress in this process, and their time-weighted mean since
    the last read: what a replica reports to Serve's autoscaler
    (`BatchedCalls.record_autoscaling_stats`), where one Serve request may carry many
    calls."""

    def __init__(self) -> None:
        self.now = 0
        self._area = 0.0
        self._since = self._last = time.monotonic()

    def change(self, delta: int) -> None:
        at = time.monotonic()
        self._area += self.now * (at - self._last)
        self._last = at
        self.now += delta

    def mean(self) -> float:
        self.change(0)
        span = self._last - self._since
        mean = self._area / span if span > 0 else float(self.now)
        self._area, self._since = 0.0, self._last
        return mean


load = _Load()


# The wrapper below reaches `load` only through these module functions: Serve pickles a
# deployment class by value, with the globals its methods name, so a wrapper that
# named `load` itself would count into a copy of it.
def _call_started() -> None:
    load.change(1)


def _call_ended() -> None:
    load.change(-1)


def boundary(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    name = fn.__qualname__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        logs.configure()  # once per replica: JSON lines with request and trace ids
        # args[0] is the deployment itself; the caller's Principal, when any, is next.
        principal = args[1] if len(args) > 1 and isinstance(args[1], Principal) else None
        _call_started()
        try:
            with (
                _span(name, principal),
                consistency.request_scope(principal.read_after if principal else {}) as written,
            ):
                result = await _translated(fn, *args, **kwargs)
        finally:
            _call_ended()
        if written and isinstance(result, Record):
            result._read_after = dict(written)
        return result

    wrapper.__boundary__ = True  # type: ignore[attr-defined]  # callable in a batch
    return wrapper


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One call of a deployment method inside a batch (`BatchedCalls.call_batch`), with
    the id of the request that made it."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    request_id: str | None = None


class BatchedCalls:
    """A deployment whose callers may send many calls of its `@boundary` methods in one
    Serve request (`gateway.batching.BatchedHandle`): one Ray hop for the lot, each call
    then running as if called alone (its own request scope, errors and log id)."""

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this periodically; `cluster.autoscaling.calls_in_progress`
        scales the deployment on it instead of on Serve requests (a batch is one)."""
        return {CALLS_IN_PROGRESS: load.mean()}

    async def call_batch(self, calls: list[ServiceCall]) -> list[Outcome]:
        return await run_each(self._call_one(call) for call in calls)

    async def _call_one(self, call: ServiceCall) -> Any:
        method = getattr(type(self), call.method, None)
        if not getattr(method, "__boundary__", False):
            raise AppError(f"{type(self).__name__} has no method {call.method!r} to batch")
        with logs.serve_request_id(call.request_id):
            return await method(self, *call.args, **call.kwargs)  # type: ignore[misc]


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
        if exc.is_unique_violation:
            raise Conflict("a record with these values already exists") from None
        if exc.sqlstate in _UNSTORABLE:
            log.info("unstorable value in %s: %s", fn.__qualname__, exc)
            raise Validation(_UNSTORABLE[exc.sqlstate]) from None
        log.error("database error in %s: %s", fn.__qualname__, exc)
        raise AppError("the request could not be completed") from None
    except UnicodeEncodeError:
        # JSON may carry a lone surrogate (`"\\ud800"`); no database stores it.
        raise Validation("text must be valid Unicode (an unpaired surrogate was sent)") from None


# Values the input models let through but PostgreSQL cannot store: the client's 422.
_UNSTORABLE = {
    "22021": "text must not contain NUL characters (\\u0000)",
    "22P05": "text has a character the database cannot store",
    "22001": "a value is longer than the field allows",
    "22003": "a number is out of range",
    "22008": "a date or time is out of range",
}
