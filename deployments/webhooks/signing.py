"""The signature receivers check (docs/api.md, "Webhooks (outbound)"):
`X-NextFlow-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`."""

from __future__ import annotations

import hashlib
import hmac

EVENT_ID_HEADER = "X-NextFlow-Event-Id"
TIMESTAMP_HEADER = "X-NextFlow-Timestamp"
SIGNATURE_HEADER = "X-NextFlow-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: int, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "NextFlow-Webhooks/1",
        EVENT_ID_HEADER: event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
