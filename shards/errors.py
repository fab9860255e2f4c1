"""Errors that cross the ShardManager boundary. They are plain, picklable exceptions:
asyncpg's own exception classes do not survive the trip between Ray processes."""

from __future__ import annotations


class ShardUnavailable(RuntimeError):
    """The server for a shard cannot be reached (down, restarting, pool exhausted)."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"shard server {server} unavailable: {reason}")
        self.server = server
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.server, self.reason))


class DatabaseError(RuntimeError):
    """A statement failed; `sqlstate` and `constraint` let a service translate it
    (23505 unique violation -> 409, 23503 foreign key -> 422, ...)."""

    def __init__(self, sqlstate: str, message: str, constraint: str | None = None) -> None:
        super().__init__(f"[{sqlstate}] {message}")
        self.sqlstate = sqlstate
        self.message = message
        self.constraint = constraint

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]:
        return (type(self), (self.sqlstate, self.message, self.constraint))

    @property
    def is_unique_violation(self) -> bool:
        return self.sqlstate == "23505"
