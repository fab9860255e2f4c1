"""Read-your-writes across replicas, carried per request.

A write returns the WAL position (LSN) of its commit on its server. The caller keeps
the highest LSN per server in a token and sends it back; a read may then use a
replica only if that replica has replayed at least that far, otherwise the primary.

Inside a service the token travels in context variables, set by the deployment
boundary for each request, so service code and repos do not pass it around.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import orjson

HEADER = "NextFlow-Read-After"
# A position no replica reaches: reads that must go to the primary ask for it.
PRIMARY_ONLY = 1 << 62

_read_after: ContextVar[Mapping[str, int] | None] = ContextVar("read_after", default=None)
_written: ContextVar[dict[str, int] | None] = ContextVar("written", default=None)


class BadToken(ValueError):
    pass


@contextmanager
def request_scope(read_after: Mapping[str, int]) -> Iterator[dict[str, int]]:
    """For one request: reads respect `read_after`; the dict yielded collects the
    LSNs of the writes made meanwhile (server -> LSN)."""
    written: dict[str, int] = {}
    token_a = _read_after.set(read_after)
    token_b = _written.set(written)
    try:
        yield written
    finally:
        _read_after.reset(token_a)
        _written.reset(token_b)


def min_lsn_for(server: str) -> int | None:
    """The LSN a replica must have replayed to serve this request's reads on `server`
    (the caller's token, or a write earlier in this same request); None: any."""
    after = _read_after.get() or {}
    written = _written.get() or {}
    best = max(after.get(server, 0), written.get(server, 0))
    return best or None


def record_write(server: str, lsn: int) -> None:
    written = _written.get()
    if written is not None and lsn > written.get(server, 0):
        written[server] = lsn


def merge(*tokens: Mapping[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for token in tokens:
        for server, lsn in token.items():
            merged[server] = max(lsn, merged.get(server, 0))
    return merged


def encode(token: Mapping[str, int]) -> str:
    raw = orjson.dumps(dict(sorted(token.items())))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str) -> dict[str, int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise BadToken(f"{HEADER} is not a token this API issued") from None
    if (
        not isinstance(data, dict)
        or len(data) > 1024
        or not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in data.items())
    ):
        raise BadToken(f"{HEADER} is not a token this API issued")
    return data
