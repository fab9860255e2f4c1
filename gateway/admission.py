"""What the gateway asks Redis about each authenticated request, in one round trip:
the caller's rate limit (GCRA, `gateway.ratelimit`), the write positions remembered
for it (read-your-writes, `gateway.sessions`) and its user's access-token cutoff
(`gateway.tokens.cutoff_key`). One script call instead of three commands:
one connection checkout and one reply to parse per request.

Without Redis every part fails open as it would alone: no remembered positions, no
cutoff, and the limiter's own choice (`fail_open`: allow, else 503).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.redis_client import Script
from gateway.ratelimit import GCRA_FUNCTION, Decision, RateLimiter
from gateway.sessions import SessionPositions
from gateway.tokens import cutoff_key, revoked_key, session_mark

log = logging.getLogger("nextflow.gateway")

# KEYS: the rate-limit key ('' without a limiter), the caller's positions hash, the
# user's cutoff key, the access token's (or API key's) revocation key and its
# session's ('' for none).
# ARGV: the GCRA arguments.
_ADMIT = """
local decision = false
if KEYS[1] ~= '' then decision = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])) end
local positions = redis.call('HGETALL', KEYS[2])
local cutoff = false
if KEYS[3] ~= '' then cutoff = redis.call('GET', KEYS[3]) end
local revoked = 0
if KEYS[4] ~= '' then revoked = redis.call('EXISTS', KEYS[4]) end
if revoked == 0 and KEYS[5] ~= '' then revoked = redis.call('EXISTS', KEYS[5]) end
return {decision, positions, cutoff, revoked}
"""


@dataclass(frozen=True)
class Admitted:
    decision: Decision | None  # None: no limiter, or Redis down and failing open
    positions: dict[str, int]
    cutoff: float | None  # access tokens issued before this (epoch s) are refused
    revoked: bool = False  # this access token, or its session, was signed out


class Admission:
    def __init__(self, redis: aioredis.Redis, limiter: RateLimiter | None) -> None:
        self._script = Script(redis, GCRA_FUNCTION + _ADMIT)
        self._limiter = limiter

    async def check(
        self,
        caller: str,
        user_id: int | None,
        token_id: str | None = None,
        session: str | None = None,
    ) -> Admitted:
        """`user_id`: the user whose cutoff applies, `token_id` the access token's
        `jti` (for an API key: no user, and `tokens.api_key_mark`), `session` its
        sign-in (`sid`)."""
        limiter = self._limiter
        keys = [
            limiter.key(caller) if limiter else "",
            SessionPositions.key(caller),
            cutoff_key(user_id) if user_id is not None else "",
            revoked_key(token_id) if token_id else "",
            revoked_key(session_mark(session)) if session else "",
        ]
        try:
            decision, positions, cutoff, revoked = await self._script(
                keys=keys, args=limiter.args() if limiter else [0, 0]
            )
        except (RedisError, OSError) as exc:
            log.warning("admission checks unavailable: %s", exc)
            if limiter is not None:
                limiter.unavailable(exc)  # raises unless it fails open
            return Admitted(None, {}, None)
        return Admitted(
            decision=limiter.decision(decision) if limiter and decision else None,
            positions=_pairs(positions),
            cutoff=float(cutoff) if cutoff is not None else None,
            revoked=bool(revoked),
        )


def _pairs(flat: list[Any]) -> dict[str, int]:
    """HGETALL's reply inside a script: key, value, key, value..."""
    return {_text(k): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
