"""Customer and contact models, shared by HTTP routes and deployment handles."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import EmailStr, Field, field_validator

from deployments._kit.types import Id
from gateway.inputs import Input, JsonObject, Patch
from gateway.listing import ListQuery, SearchBody, search_body
from gateway.records import Record


class CustomerCreate(Input):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=50)
    website: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=100)
    tags: list[str] = Field(default_factory=list, max_length=50)
    custom_fields: JsonObject = Field(default_factory=dict, max_length=100)
    owner_id: Id | None = Field(
        default=None, description="Defaults to the caller; needs `customer:assign` otherwise."
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return _check_tags(tags)


class CustomerUpdate(Patch, creates=CustomerCreate):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=50)
    website: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=100)
    tags: list[str] | None = Field(default=None, max_length=50)
    custom_fields: JsonObject | None = Field(default=None, max_length=100)
    owner_id: Id | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else _check_tags(tags)


class CustomerRead(Record):
    id: Id
    name: str
    email: str | None
    phone: str | None
    website: str | None
    industry: str | None
    tags: list[str]
    custom_fields: dict[str, Any]
    owner_id: Id | None
    external_id: str | None = Field(default=None, description="Set by bulk imports.")
    version: int
    created_at: datetime
    updated_at: datetime


class CustomerListQuery(ListQuery):
    name_prefix: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[str] | None = Field(default=None, max_length=20, description="Any of these tags.")
    owner_id: Id | None = None
    created_from: datetime | None = Field(default=None, description="created_at >= this")
    created_before: datetime | None = Field(default=None, description="created_at < this")

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "name[prefix]": "name_prefix",
        "tag": "tags",
        "tag[in]": "tags",
        "owner_id": "owner_id",
        "owner_id[eq]": "owner_id",
        "created_at[gte]": "created_from",
        "created_at[lt]": "created_before",
    }
    list_params: ClassVar[frozenset[str]] = frozenset({"tags"})
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime, "name": str}


if TYPE_CHECKING:  # made at import (`search_body`); typed as its base
    CustomerSearch = SearchBody
else:
    CustomerSearch = search_body(CustomerListQuery)


class ContactCreate(Input):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=50)
    title: str | None = Field(default=None, max_length=100)


class ContactUpdate(Patch, creates=ContactCreate):
    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=50)
    title: str | None = Field(default=None, max_length=100)


class ContactRead(Record):
    id: Id
    customer_id: Id
    first_name: str
    last_name: str | None
    email: str | None
    phone: str | None
    title: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class ContactListQuery(ListQuery):
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime}


def _check_tags(tags: list[str]) -> list[str]:
    cleaned = []
    for tag in tags:
        tag = tag.strip()
        if not tag or len(tag) > 50 or "," in tag:
            raise ValueError("tags are 1-50 characters without commas")
        if tag not in cleaned:
            cleaned.append(tag)
    return cleaned
