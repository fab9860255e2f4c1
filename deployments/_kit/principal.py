"""Who is calling: the first argument of every service method, over HTTP or a handle."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from deployments._kit.errors import Forbidden


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: int
    role: str
    permissions: frozenset[str]
    kind: Literal["user", "api_key", "system"] = "user"
    api_key_id: int | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, *permissions: str) -> None:
        missing = [p for p in permissions if p not in self.permissions]
        if missing:
            raise Forbidden(f"missing permission: {', '.join(missing)}")
