"""Who is calling: the first argument of every service method, over HTTP or a handle.

Record-level access (OWASP API1): a permission such as `customer:read` reaches every
customer unless the caller's role limits it to a scope, `own` (records the caller
owns) or `team` (records owned by a member of the caller's team). Scopes, the team's
members and the fields hidden from the role travel in the access token; services ask
`owners(permission)` for the owner ids a query may touch and `redact(...)` a record
before they return it.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import Forbidden

Scope = Literal["own", "team"]
M = TypeVar("M", bound=BaseModel)


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: int
    role: str
    permissions: frozenset[str]
    kind: Literal["user", "api_key", "system"] = "user"
    api_key_id: int | None = None
    # Permissions the role limits to the caller's own or team's records; a permission
    # absent here reaches every record.
    scopes: dict[str, Scope] = Field(default_factory=dict)
    # The active members of the caller's team, the caller included (empty: no team).
    team: frozenset[int] = frozenset()
    # Per record type, fields this role never sees (answered as null).
    hidden: dict[str, frozenset[str]] = Field(default_factory=dict)
    # Read-your-writes: the highest write position (LSN) per server this caller has
    # seen; reads use a replica only once it has replayed that far.
    read_after: dict[str, int] = Field(default_factory=dict)
    # The caller's trace context (W3C `traceparent`), so a service's spans join the
    # request's trace across the Ray call (cluster/tracing.py).
    trace: dict[str, str] = Field(default_factory=dict)

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, *permissions: str) -> None:
        missing = [p for p in permissions if p not in self.permissions]
        if missing:
            raise Forbidden(f"missing permission: {', '.join(missing)}")

    def owners(self, permission: str) -> frozenset[int] | None:
        """The owners whose records `permission` reaches for this caller; None for
        every record (unscoped). Records nobody owns are reached only unscoped."""
        scope = self.scopes.get(permission)
        if scope is None:
            return None
        if scope == "own":
            return frozenset((self.user_id,))
        return self.team | {self.user_id}

    def reaches(self, permission: str, owner_id: int | None) -> bool:
        """Whether `permission` reaches a record owned by `owner_id`."""
        owners = self.owners(permission)
        return owners is None or (owner_id is not None and owner_id in owners)

    def redact(self, record_type: str, record: M) -> M:
        """`record` with the fields this role may not see set to null."""
        hidden = self.hidden.get(record_type)
        if not hidden:
            return record
        return record.model_copy(update=dict.fromkeys(hidden & type(record).model_fields.keys()))

    def redact_all(self, record_type: str, records: list[M]) -> list[M]:
        if not self.hidden.get(record_type):
            return records
        return [self.redact(record_type, r) for r in records]
