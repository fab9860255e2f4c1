"""Rate limits in Redis with GCRA (the generic cell rate algorithm): one key per
caller, one atomic script call per request, smooth limits with a burst allowance."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.redis_client import Script
from gateway.errors import Unavailable

log = logging.getLogger("nextflow.gateway")

# GCRA as a Lua function, for this module's script and for the gateway's admission
# script (gateway/admission.py), which runs it with other reads in one round trip.
# Returns: allowed (0/1), remaining, retry-after (µs), reset (µs).
GCRA_FUNCTION = """
local function gcra(key, interval, burst)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tolerance = interval * burst
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance
  if now < allow_at then
    return {0, 0, allow_at - now, tat - now}
  end
  redis.call('SET', key, new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
  local remaining = math.floor((tolerance - (new_tat - now)) / interval)
  return {1, remaining, 0, new_tat - now}
end
"""
# KEYS[1]: the caller's key. ARGV: emission interval (µs), burst.
_GCRA = GCRA_FUNCTION + "return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(self.remaining, 0)),
            "RateLimit-Reset": str(self.reset_s),
        }


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, per_minute: int, burst: int, fail_open: bool = True
    ) -> None:
        self._redis = redis
        self.fail_open = fail_open
        self._script = Script(redis, _GCRA)
        self.per_minute = per_minute
        self.burst = burst
        self._interval_us = 60_000_000 // per_minute

    async def check(self, caller: str) -> Decision | None:
        """The decision for one request. When Redis cannot be asked: None (fail open,
        the default: an outage of the limiter must not become an outage of the API),
        or, with `fail_open` off, Unavailable (503 + Retry-After)."""
        try:
            raw = await self._script(keys=[self.key(caller)], args=self.args())
        except (RedisError, OSError) as exc:
            self.unavailable(exc)
            return None
        return self.decision(raw)

    def key(self, caller: str) -> str:
        return f"rl:{caller}"

    def args(self) -> list[int]:
        """The GCRA function's arguments after the key: emission interval (µs), burst."""
        return [self._interval_us, self.burst]

    def unavailable(self, exc: Exception) -> None:
        """Redis could not decide: go on (fail open), or Unavailable (503) when
        `fail_open` is off."""
        log.warning("rate limiter unavailable: %s", exc)
        if not self.fail_open:
            raise Unavailable("the rate limiter cannot be asked; try again shortly") from None

    def decision(self, raw: list[int]) -> Decision:
        """A Decision from the GCRA function's answer."""
        allowed, remaining, retry_us, reset_us = raw
        return Decision(
            allowed=bool(allowed),
            limit=self.burst,
            remaining=int(remaining),
            retry_after_s=max(1, -(-int(retry_us) // 1_000_000)) if not allowed else 0,
            reset_s=-(-int(reset_us) // 1_000_000),
        )
