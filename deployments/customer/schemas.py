"""Customer and contact models, shared by HTTP routes and deployment handles."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import EmailStr, Field, field_validator

from deployments._kit.batch import (
    Batch,
    BatchCreate,
    BatchResult,
    BatchUpdate,
    ItemResult,
)
from deployments._kit.types import Id, Tag, distinct
from gateway.inputs import Input, JsonObject, Patch
from gateway.listing import ListQuery, SearchBody, search_body
from gateway.records import Record


class CustomerCreate(Input):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=50)
    website: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=100)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    custom_fields: JsonObject = Field(default_factory=dict, max_length=100)
    owner_id: Id | None = Field(
        default=None, description="Defaults to the caller; needs `customer:assign` otherwise."
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return distinct(tags)


class CustomerUpdate(Patch, creates=CustomerCreate):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=50)
    website: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=100)
    tags: list[Tag] | None = Field(default=None, max_length=50)
    custom_fields: JsonObject | None = Field(default=None, max_length=100)
    owner_id: Id | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else distinct(tags)


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
    view_object: ClassVar[str | None] = "customers"
    custom_fields: ClassVar[str | None] = "customers"
    name_prefix: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[str] | None = Field(default=None, max_length=40, description="Any of these tags.")
    owner_id: Id | None = None
    created_from: datetime | None = Field(default=None, description="created_at >= this")
    created_before: datetime | None = Field(default=None, description="created_at < this")

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "name[prefix]": "name_prefix",
        "tag": "tags",
        "tag[in]": "tags",
        "owner_id": "owner_id",
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
    custom_fields: JsonObject = Field(default_factory=dict, max_length=100)


class ContactUpdate(Patch, creates=ContactCreate):
    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=50)
    title: str | None = Field(default=None, max_length=100)
    custom_fields: JsonObject | None = Field(
        default=None, max_length=100, description="The keys given change; null clears one."
    )


class ContactRead(Record):
    id: Id
    customer_id: Id
    first_name: str
    last_name: str | None
    email: str | None
    phone: str | None
    title: str | None
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    version: int
    created_at: datetime
    updated_at: datetime


class ContactListQuery(ListQuery):
    countable: ClassVar[bool] = False
    custom_fields: ClassVar[str | None] = "contacts"
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime}


class CustomerBatchCreate(BatchCreate[CustomerCreate]):
    pass


class CustomerBatchUpdate(BatchUpdate[CustomerUpdate]):
    pass


class CustomerBatch(Batch[CustomerBatchCreate, CustomerBatchUpdate]):
    """Up to 100 creates, updates and deletes of customers, each with its own result
    (`POST /v1/customers/batch`, deployments/_kit/batch.py)."""


class CustomerBatchItem(ItemResult[CustomerRead]):
    pass


class CustomerBatchResult(BatchResult[CustomerRead]):
    results: Sequence[CustomerBatchItem]


class ContactBatchCreate(BatchCreate[ContactCreate]):
    customer_id: Id = Field(description="The customer the new contact belongs to.")


class ContactBatchUpdate(BatchUpdate[ContactUpdate]):
    pass


class ContactBatch(Batch[ContactBatchCreate, ContactBatchUpdate]):
    """Up to 100 creates, updates and deletes of contacts, each with its own result
    (`POST /v1/customers/contacts/batch`, deployments/_kit/batch.py)."""


class ContactBatchItem(ItemResult[ContactRead]):
    pass


class ContactBatchResult(BatchResult[ContactRead]):
    results: Sequence[ContactBatchItem]
