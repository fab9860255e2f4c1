"""Who is calling: the first argument of every service method, over HTTP or a handle."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments._kit.errors import Forbidden


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: int
    role: str
    permissions: frozenset[str]
    kind: Literal["user", "api_key", "system"] = "user"
    api_key_id: int | None = None
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
