"""File models, shared by HTTP routes and deployment handles."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments._kit.types import Id
from gateway.listing import ListQuery
from gateway.records import Record

OwnerType = Literal["customer", "contact", "deal", "ticket", "lead"]
# The permission prefix of each owner type: reading a file needs `<prefix>:read` on
# its owner, uploading or deleting one `<prefix>:write`.
OWNER_PERMISSION: dict[str, str] = {
    "customer": "customer",
    "contact": "contact",
    "deal": "deal",
    "ticket": "ticket",
    "lead": "lead",
}


class Owner(BaseModel):
    """The record a file is attached to."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    owner_type: OwnerType
    owner_id: Id


class FileCommit(BaseModel):
    """What the gateway stored and measured; the service verifies it, then records it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    owner: Owner
    blob_key: str = Field(min_length=1, max_length=200)
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(min_length=1, max_length=300)
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FileRead(Record):
    id: Id
    owner_type: OwnerType
    owner_id: Id
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    uploaded_by: Id | None
    version: int
    created_at: datetime
    updated_at: datetime


class FileContent(BaseModel):
    """Metadata plus where the content is (for the gateway that streams it)."""

    file: FileRead
    blob_key: str


class FileListQuery(ListQuery):
    countable: ClassVar[bool] = False
    owner_type: OwnerType
    owner_id: Id

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "owner_type": "owner_type",
        "owner_id": "owner_id",
    }
