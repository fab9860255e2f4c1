"""The edge of a service deployment: what leaves it is a model or an `AppError`.

Storage errors become problems a caller can act on (503 with retry for a server that
is down) without leaking SQL or host names; the detail goes to the replica's log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from deployments._kit.errors import AppError, Conflict, Unavailable
from shards.errors import DatabaseError, ShardUnavailable

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("nextflow.service")


def service_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except ShardUnavailable as exc:
            log.warning("storage unavailable in %s: %s", fn.__qualname__, exc)
            raise Unavailable("storage is temporarily unavailable; retry shortly") from None
        except DatabaseError as exc:
            if exc.is_unique_violation:
                raise Conflict("a record with these values already exists") from None
            log.error("database error in %s: %s", fn.__qualname__, exc)
            raise AppError("the request could not be completed") from None

    return wrapper
