"""Base of every record a service returns."""

from __future__ import annotations

from pydantic import BaseModel, PrivateAttr


class Record(BaseModel):
    """A stored record. After a write it also carries, outside its fields, the write
    positions to read after (server -> LSN); the gateway turns them into the
    read-your-writes header, and a handle caller can pass them on in `Principal`."""

    _read_after: dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def read_after(self) -> dict[str, int]:
        return dict(self._read_after)
