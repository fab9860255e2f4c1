"""Typed connections: a function that writes takes a `WriteConn` and cannot be handed
to `read()`, which supplies only a `ReadConn` (a read-only transaction, and later a
replica). A read function may run inside a write: `WriteConn` is a `ReadConn`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:

    class ReadConn(asyncpg.Connection):  # type: ignore[misc]
        """A connection inside a read-only transaction."""

    class WriteConn(ReadConn):
        """A connection inside a read-write transaction on a primary."""

else:
    ReadConn = WriteConn = asyncpg.Connection
