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

    def __init__(
        self,
        sqlstate: str,
        message: str,
        constraint: str | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(f"[{sqlstate}] {message}")
        self.sqlstate = sqlstate
        self.message = message
        self.constraint = constraint
        self.column = column  # the column a NOT NULL or data error is about, if known

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None, str | None]]:
        return (type(self), (self.sqlstate, self.message, self.constraint, self.column))

    @property
    def is_unique_violation(self) -> bool:
        return self.sqlstate == "23505"


class StaleShardMap(RuntimeError):
    """The caller routed by an older shard map than the manager holds. Nothing ran:
    reload the map and call again."""

    def __init__(self, shard: int, server: str, have: int, current: int) -> None:
        super().__init__(
            f"logical shard {shard} on {server}: caller's map version {have} is older "
            f"than {current}"
        )
        self.shard = shard
        self.server = server
        self.have = have
        self.current = current

    def __reduce__(self) -> tuple[type, tuple[int, str, int, int]]:
        return (type(self), (self.shard, self.server, self.have, self.current))


class ShardMoved(StaleShardMap):
    """`server` no longer owns the logical shard (a move flipped the map). Nothing ran:
    reload the map and call the new owner."""

    def __init__(self, shard: int, server: str, have: int = 0, current: int = 0) -> None:
        RuntimeError.__init__(self, f"logical shard {shard} is no longer on {server}")
        self.shard = shard
        self.server = server
        self.have = have
        self.current = current
