"""API keys as every ingress checks them: the auth database once per key and
`api_key_cache_ttl_s`, not once per request (no AuthService call, no `UPDATE
api_keys` on every request: `last_used_at` moves when the key is looked up again).

A revoked key is refused at once: `AuthService.revoke_api_key` marks it in Redis and
the pipeline's admission check (one Redis round trip it makes anyway) reads the
mark. A deactivated owner or a changed role takes effect within the cache's time.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from deployments.auth import repo
from gateway import tokens
from gateway.errors import Unauthenticated
from gateway.principal import Principal
from shards import WriteConn
from shards.client import Database

_MAX_CACHED = 10_000


class ApiKeyCache:
    def __init__(self, db: Database, ttl_s: float) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._known: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    async def verify(self, key: str) -> Principal:
        parts = tokens.split_api_key(key)
        if parts is None:
            raise Unauthenticated("invalid API key")
        prefix, secret = parts
        digest = tokens.digest(secret)
        now = time.monotonic()
        cached = self._known.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await self._db.write(lookup, prefix, digest)
        if principal is None:
            self._known.pop(digest, None)
            raise Unauthenticated("invalid API key")
        if self._ttl_s > 0:
            self._known[digest] = (now + self._ttl_s, principal)
            self._known.move_to_end(digest)
            while len(self._known) > _MAX_CACHED:
                self._known.popitem(last=False)
        return principal


async def lookup(conn: WriteConn, prefix: str, secret_hash: bytes) -> Principal | None:
    """The key's owner as a caller (marks the key used), or None."""
    owner = await repo.use_api_key(conn, prefix, secret_hash)
    if owner is None:
        return None
    # A key never grants more than its owner's role has today.
    granted = frozenset(owner.key_permissions) & frozenset(owner.role_permissions)
    return Principal(
        user_id=owner.user_id,
        role=owner.role,
        permissions=granted,
        kind="api_key",
        api_key_id=owner.key_id,
        scopes=owner.reach.scopes,
        team=frozenset(owner.reach.team),
        hidden={k: frozenset(v) for k, v in owner.reach.hidden.items()},
    )
