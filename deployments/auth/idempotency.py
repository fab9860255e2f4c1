"""The SQL of `Idempotency-Key` (table `idempotency_keys` in the `auth` database).

The gateway (gateway/idempotency.py) claims a caller's key before running a POST,
stores the response when it is done, and replays it for a repeat. One row per
(caller, key): `status` NULL while the first request runs, set once it answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from shards import WriteConn
from shards.client import Database

log = logging.getLogger("nextflow.gateway")


@dataclass(frozen=True)
class Claim:
    """What a claim found. `claimed`: the caller's request runs now and must finish
    with `complete` or `release` naming `claim_id`; `busy`: an earlier request with
    the key still runs; `done`: it answered, and this is its response."""

    outcome: Literal["claimed", "busy", "done"]
    claim_id: str | None = None
    fingerprint: bytes | None = None
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


async def claim(
    conn: WriteConn, caller: str, key: str, lease_s: float, retention_s: float
) -> Claim:
    claim_id = uuid.uuid4()
    # A new key inserts; a claim whose request outlived its lease (its gateway died)
    # or a row past the retention is taken over. Anything else is left as it is.
    taken = await conn.fetchval(
        """INSERT INTO idempotency_keys (caller, key, claim, locked_until)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))
           ON CONFLICT (caller, key) DO UPDATE
               SET claim = EXCLUDED.claim, fingerprint = NULL, status = NULL,
                   headers = NULL, body = NULL, created_at = now(),
                   locked_until = EXCLUDED.locked_until
               WHERE (idempotency_keys.status IS NULL AND idempotency_keys.locked_until < now())
                  OR idempotency_keys.created_at < now() - make_interval(secs => $5)
           RETURNING claim""",
        caller, key, claim_id, lease_s, retention_s,
    )  # fmt: skip
    if taken is not None:
        return Claim("claimed", claim_id=str(claim_id))
    row = await conn.fetchrow(
        "SELECT fingerprint, status, headers, body FROM idempotency_keys"
        " WHERE caller = $1 AND key = $2",
        caller,
        key,
    )
    if row is None or row["status"] is None:
        return Claim("busy")
    flat = list(row["headers"] or [])
    return Claim(
        "done",
        fingerprint=bytes(row["fingerprint"]),
        status=int(row["status"]),
        headers=tuple(zip(flat[::2], flat[1::2], strict=True)),
        body=bytes(row["body"] or b""),
    )


async def complete(
    conn: WriteConn,
    caller: str,
    key: str,
    claim_id: str,
    fingerprint: bytes,
    status: int,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
) -> bool:
    """Store the response; False when the claim was taken over meanwhile."""
    flat = [part for pair in headers for part in pair]
    done = await conn.fetchval(
        """UPDATE idempotency_keys SET fingerprint = $4, status = $5, headers = $6, body = $7
           WHERE caller = $1 AND key = $2 AND claim = $3 AND status IS NULL
           RETURNING true""",
        caller, key, uuid.UUID(claim_id), fingerprint, status, flat, body,
    )  # fmt: skip
    return bool(done)


async def release(conn: WriteConn, caller: str, key: str, claim_id: str) -> None:
    """Forget a claim whose request failed (5xx, crash): a retry runs it again."""
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND claim = $3"
        " AND status IS NULL",
        caller,
        key,
        uuid.UUID(claim_id),
    )


async def sweep(conn: WriteConn, retention_s: float, batch: int = 5000) -> int:
    """Delete up to `batch` rows older than the retention; how many went."""
    deleted = await conn.fetchval(
        """WITH gone AS (
               DELETE FROM idempotency_keys WHERE ctid IN (
                   SELECT ctid FROM idempotency_keys
                   WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)
               RETURNING 1)
           SELECT count(*) FROM gone""",
        retention_s,
        batch,
    )
    return int(deleted or 0)


class IdempotencyKeys:
    """The pipeline's `IdempotencyStore` (gateway/idempotency.py): every ingress keeps
    its callers' keys here itself, through the catalog's ShardManager, with no service
    hop. Every few minutes a claim also sweeps keys past their retention."""

    def __init__(self, db: Database, lease_s: float, retention_s: float) -> None:
        self._db = db
        self._lease_s = lease_s
        self._retention_s = retention_s
        self._swept = 0.0
        self._sweeping: set[asyncio.Task[None]] = set()

    async def claim(self, caller: str, key: str) -> Claim:
        """Claim `key` for `caller`'s request, or say it runs or what it answered."""
        now = time.monotonic()
        if now - self._swept > 300:
            self._swept = now
            task = asyncio.get_running_loop().create_task(self._sweep())
            self._sweeping.add(task)
            task.add_done_callback(self._sweeping.discard)
        return await self._db.write(claim, caller, key, self._lease_s, self._retention_s)

    async def complete(
        self,
        caller: str,
        key: str,
        claim_id: str,
        fingerprint: bytes,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
    ) -> bool:
        return await self._db.write(
            complete, caller, key, claim_id, fingerprint, status, headers, body
        )

    async def release(self, caller: str, key: str, claim_id: str) -> None:
        await self._db.write(release, caller, key, claim_id)

    async def _sweep(self) -> None:
        try:
            gone = await self._db.write(sweep, self._retention_s)
            if gone:
                log.info("swept %d expired idempotency keys", gone)
        except Exception as exc:  # the next claim tries again
            log.warning("idempotency key sweep failed: %r", exc)
