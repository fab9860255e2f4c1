"""Read-through cache of the catalogue in Redis, invalidated by generation.

Every key carries the catalogue's current generation (`product:gen`); a write bumps
the generation *after* its transaction commits, so every later read misses and
refills from the primary. A reader that filled a key with a value read before the
commit did so under the old generation, which nobody reads any more: no stale entry
is ever served after a write returns, without tracking which keys a write touched.
Redis being down costs speed, not correctness: reads fall back to the database.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel
from ray.util import metrics
from redis.exceptions import RedisError

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("nextflow.product.cache")
_GEN = "product:gen"
_lookups = metrics.Counter(
    "nextflow_cache_lookups",
    description="Cache lookups by cache and result (hit or miss): the hit ratio.",
    tag_keys=("cache", "result"),
)


class CatalogCache:
    def __init__(self, redis: aioredis.Redis, ttl_s: int = 300, prefix: str = "product") -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._prefix = prefix
        self.hits = 0
        self.misses = 0

    async def generation(self) -> int | None:
        try:
            value = await self._redis.get(_GEN)
        except RedisError as exc:
            log.warning("product cache unavailable: %s", exc)
            return None
        return int(value or 0)

    async def invalidate(self) -> None:
        """Call after a write has committed."""
        try:
            await self._redis.incr(_GEN)
        except RedisError as exc:
            # Entries still expire by their TTL; log loudly, it is the only window.
            log.error("product cache generation not bumped: %s", exc)

    async def get_many(
        self,
        kind: str,
        keys: Sequence[Any],
        model: type[M],
        fill: Callable[[list[Any]], Awaitable[dict[Any, M | None]]],
    ) -> dict[Any, M | None]:
        """`{key: record or None}` for every key: cached ones from Redis, the rest from
        `fill` (which reads the primary), stored for the next reader. Absence is
        cached too, so a scan of unknown ids does not reach the database each time."""
        generation = await self.generation()
        if generation is None:
            return await fill(list(keys))
        names = [f"{self._prefix}:{generation}:{kind}:{key}" for key in keys]
        found: dict[Any, M | None] = {}
        missing: list[Any] = []
        try:
            cached = await self._redis.mget(names) if names else []
        except RedisError:
            return await fill(list(keys))
        for key, raw in zip(keys, cached, strict=True):
            if raw is None:
                missing.append(key)
            else:
                data = orjson.loads(raw)
                found[key] = None if data is None else model.model_validate(data)
        self.hits += len(found)
        self.misses += len(missing)
        if found:
            _lookups.inc(len(found), tags={"cache": self._prefix, "result": "hit"})
        if missing:
            _lookups.inc(len(missing), tags={"cache": self._prefix, "result": "miss"})
        if missing:
            loaded = await fill(missing)
            found.update(loaded)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in missing:
                        value = loaded.get(key)
                        raw = b"null" if value is None else value.model_dump_json().encode()
                        pipe.set(f"{self._prefix}:{generation}:{kind}:{key}", raw, ex=self._ttl_s)
                    await pipe.execute()
            except RedisError as exc:
                log.warning("product cache not filled: %s", exc)
        return found
