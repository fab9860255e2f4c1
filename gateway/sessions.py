"""Read-your-writes for every caller, without the client's help.

The gateway remembers, per caller (user or API key), the WAL positions of their
recent writes in Redis and applies them to their next requests, as if the client had
sent back the `NextFlow-Read-After` token. Positions are kept a little longer than a
replica may lag before it is no longer read from: after that, any replica still in
use has replayed them anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.redis_client import Script

log = logging.getLogger("nextflow.gateway")

# KEYS[1]: the caller's hash; ARGV[1]: ttl ms, then server, lsn pairs. Keeps the max.
_REMEMBER = """
for i = 2, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class SessionPositions:
    def __init__(self, redis: aioredis.Redis, ttl_s: float) -> None:
        self._redis = redis
        self._remember = Script(redis, _REMEMBER)
        self._ttl_ms = int(ttl_s * 1000)

    @staticmethod
    def key(caller: str) -> str:
        """The caller's positions; the gateway reads them with its other per-request
        checks in one script (`gateway.admission`)."""
        return f"ryw:{caller}"

    async def remember(self, caller: str, positions: Mapping[str, int]) -> None:
        if not positions:
            return
        args: list[str | int] = [self._ttl_ms]
        for server, lsn in positions.items():
            args += [server, lsn]
        try:
            await self._remember(keys=[self.key(caller)], args=args)
        except (RedisError, OSError) as exc:
            log.warning("could not remember write positions: %s", exc)
