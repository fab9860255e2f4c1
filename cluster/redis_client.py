"""The application's Redis clients, made one way.

redis-py's asyncio client (8.1) does not retry a command on a pooled connection that
the server has closed (Redis restarted, failed over, or dropped an idle client): the
first command on each such connection raises `ConnectionError`. A sign-out or a role
change right after a Redis restart then silently failed to revoke tokens
(tests/integration/test_storage.py::test_a_client_survives_a_redis_restart). Every
client made here retries connection errors and timeouts three times, with a short
jittered backoff, on a fresh connection.

A command that Redis ran but whose answer was lost may run twice. What the
application writes allows it: token cutoffs and revocations are plain SETs, events are
at-least-once by design (consumers de-duplicate), a rate-limit step counts a request
once more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

RETRIES = 3


def connect(
    url: str, *, socket_timeout: float | None = 2.0, connect_timeout: float = 2.0
) -> aioredis.Redis:
    """A client of `url`; `socket_timeout` None for one that blocks on stream reads."""
    return aioredis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES),
        retry_on_error=[ConnectionError, TimeoutError],
    )


class Script:
    """A Lua script run by its SHA1 (`EVALSHA`), sent once more with `SCRIPT LOAD` when
    a server does not know it (restarted, flushed, failed over). redis-py's
    `register_script` does the same, but checks `isinstance(client, Pipeline)` on every
    call, which goes through typing's Protocol machinery: about 3% of an ingress's CPU
    on a keyed create (two scripts a request; py-spy, docs/benchmarks.md)."""

    def __init__(self, redis: aioredis.Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, keys: Sequence[str] = (), args: Sequence[str | int | float] = ()
    ) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(self.source)
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
