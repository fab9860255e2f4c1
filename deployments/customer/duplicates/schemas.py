"""Likely duplicates as the API shows them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from deployments.customer.duplicates.keys import Kind
from deployments.customer.schemas import ContactRead, CustomerRead
from gateway.listing import ListQuery

MatchKind = Kind
# What a create does about likely duplicates (`?duplicates=`): report them in the
# `NextFlow-Duplicates` header and create anyway, refuse with 409, or not look.
DuplicateMode = Literal["warn", "reject", "ignore"]
HEADER = "NextFlow-Duplicates"


class DuplicateQuery(ListQuery):
    """The duplicates list: groups in the order of their normalised value."""

    sort: str = "key"
    countable: ClassVar[bool] = False
    ascending_only: ClassVar[bool] = True
    sort_fields: ClassVar[dict[str, type]] = {"key": str}


class CustomerDuplicates(BaseModel):
    """Customers sharing a normalised e-mail address, phone number or name."""

    matched_on: MatchKind
    customers: list[CustomerRead] = Field(description="Two or more, oldest first.")


class ContactDuplicates(BaseModel):
    """Contacts sharing a normalised e-mail address or phone number, or a name within
    one customer."""

    matched_on: MatchKind
    contacts: list[ContactRead] = Field(description="Two or more, oldest first.")


class CustomerMatch(BaseModel):
    """A customer that is likely the same as the one asked about."""

    matched_on: list[MatchKind]
    customer: CustomerRead


class ContactMatch(BaseModel):
    """A contact that is likely the same as the one asked about."""

    matched_on: list[MatchKind]
    contact: ContactRead


class CustomerMatches(BaseModel):
    """A customer's likely duplicates (at most 20), oldest first."""

    data: list[CustomerMatch]


class ContactMatches(BaseModel):
    """A contact's likely duplicates (at most 20), oldest first."""

    data: list[ContactMatch]


# The create's response header, as the OpenAPI documents declare it.
HEADER_DOC = {
    HEADER: {
        "description": "The ids of the records the new one likely duplicates (same "
        "normalised e-mail, phone or name), comma-separated; absent when none, or with "
        "`?duplicates=ignore`.",
        "schema": {"type": "string", "pattern": r"^[0-9]+(,[0-9]+)*$"},
    }
}


class KeysBacklog(BaseModel):
    """Records waiting for their match keys to be written (an import's, after it ends;
    a rebuild's): until then the duplicates they have are not found."""

    queued: int = Field(description="Records this rebuild queued (0 for a read).")
    waiting: int = Field(description="Records waiting now, every entry counted.")
