"""Typed connections: a function that writes takes a `WriteConn` and cannot be handed
to `read()`, which supplies only a `ReadConn` (a read-only transaction, and later a
replica). A read function may run inside a write: `WriteConn` is a `ReadConn`.

A read function that sends exactly one statement may say so with `@single_statement`:
read alone, it then runs without `BEGIN READ ONLY` / `COMMIT` around it (one statement
is its own snapshot), two round trips fewer on the hottest reads.

Functions handed to a `ShardManager` run inside a transaction and must leave no
session state behind (no plain `SET`, `LISTEN`, session advisory locks or temporary
tables that outlive the transaction): connections go back to the pool as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:

    class ReadConn(asyncpg.Connection):  # type: ignore[misc]
        """A connection inside a read-only transaction."""

    class WriteConn(ReadConn):
        """A connection inside a read-write transaction on a primary."""

else:
    ReadConn = WriteConn = asyncpg.Connection


def single_statement(fn: F) -> F:
    """Mark a read function that sends one statement and nothing else, so a read runs
    it outside an explicit transaction. A function that may send a second statement
    (a follow-up query, a lookup per row) must not be marked: its statements would
    each see a different snapshot."""
    fn.single_statement = True  # type: ignore[attr-defined]
    return fn


def is_single_statement(fn: Callable[..., Any]) -> bool:
    return getattr(fn, "single_statement", False) is True
