"""All SQL of the customer service. Each function runs inside the one transaction
that the ShardManager opened on the record's shard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from deployments._kit.custom_fields import CustomSort, TypedFilter, filter_sql
from deployments._kit.events import emit, record_data
from deployments._kit.history import diff, record_change
from deployments._kit.sql import (
    Denied,
    Params,
    Stale,
    by_id,
    escape_like,
    keyset_page,
    on_shards,
    owned_by,
)
from deployments._kit.versioned import (
    Updated,
    Versioned,
    restore_row,
    soft_delete_row,
    update_row,
)
from deployments.customer.schemas import (
    ContactCreate,
    ContactRead,
    CustomerCreate,
    CustomerListQuery,
    CustomerRead,
)
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement

_CUSTOMER = (
    "id, name, email, phone, website, industry, tags, custom_fields, owner_id,"
    " external_id, version, created_at, updated_at"
)
_CONTACT = (
    "id, customer_id, first_name, last_name, email, phone, title, custom_fields, version,"
    " created_at, updated_at"
)
# Each record type's columns, as its read model takes them.
COLUMNS = {"customer": _CUSTOMER, "contact": _CONTACT}
M = TypeVar("M", bound=BaseModel)
_SORT_COLUMNS = {"created_at": "created_at", "name": "name"}
_CUSTOMER_UPDATABLE = {
    "name",
    "email",
    "phone",
    "website",
    "industry",
    "tags",
    "custom_fields",
    "owner_id",
}
_CONTACT_UPDATABLE = {"first_name", "last_name", "email", "phone", "title", "custom_fields"}
# Audited (change history), under their API names.
CUSTOMER_AUDITED = ("name", "email", "phone", "website", "industry", "tags", "owner_id")
CONTACT_AUDITED = ("first_name", "last_name", "email", "phone", "title")


def _audited(row: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The audited fields of a row; a user id as a string, as the API shows ids."""
    out = {name: row[name] for name in fields}
    if out.get("owner_id") is not None:
        out["owner_id"] = str(out["owner_id"])
    return out


# -- customers ---------------------------------------------------------------------
async def create_customer(
    conn: WriteConn, shard: int, data: CustomerCreate, owner_id: int | None, actor_id: int | None
) -> CustomerRead:
    row = await conn.fetchrow(
        f"""INSERT INTO customers
               (id, name, email, phone, website, industry, tags, custom_fields, owner_id)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING {_CUSTOMER}""",
        shard,
        data.name,
        data.email,
        data.phone,
        data.website,
        data.industry,
        data.tags,
        data.custom_fields,
        owner_id,
    )
    created = CustomerRead.model_validate(dict(row))
    await _record_created(conn, "customer", created, CUSTOMER_AUDITED, actor_id)
    await _emit(conn, "customer.created", created, actor_id)
    return created


async def create_customer_from_source(
    conn: WriteConn,
    shard: int,
    source_key: str,
    data: CustomerCreate,
    owner_id: int | None,
    actor_id: int | None,
) -> CustomerRead:
    """The customer made for `source_key`: a new one, or the one an earlier call made
    (deleted or not: the caller decides what a deleted one means)."""
    row = await conn.fetchrow(
        f"""INSERT INTO customers
               (id, name, email, phone, website, industry, tags, custom_fields, owner_id,
                source_key)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (source_key) WHERE source_key IS NOT NULL DO NOTHING
            RETURNING {_CUSTOMER}""",
        shard, data.name, data.email, data.phone, data.website, data.industry, data.tags,
        data.custom_fields, owner_id, source_key,
    )  # fmt: skip
    if row is None:
        row = await conn.fetchrow(
            f"SELECT {_CUSTOMER} FROM customers WHERE source_key = $1", source_key
        )
        return CustomerRead.model_validate(dict(row))
    created = CustomerRead.model_validate(dict(row))
    await _record_created(conn, "customer", created, CUSTOMER_AUDITED, actor_id)
    await _emit(conn, "customer.created", created, actor_id)
    return created


@single_statement
async def get_customer(
    conn: ReadConn, customer_id: int, owners: frozenset[int] | None = None
) -> CustomerRead | None:
    """The live customer, if `owners` (None: anyone) holds its owner."""
    params = Params()
    where = by_id(params, customer_id, "owner_id", owners)
    row = await conn.fetchrow(
        f"SELECT {_CUSTOMER} FROM customers WHERE {' AND '.join(where)}", *params.values
    )
    return None if row is None else CustomerRead.model_validate(dict(row))


async def update_customer(
    conn: WriteConn,
    customer_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> CustomerRead | Stale | Denied | None:
    return await _update(
        conn, _CUSTOMERS, customer_id, changes, if_version, actor_id, CustomerRead, owners
    )


async def delete_customer(
    conn: WriteConn,
    customer_id: int,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> CustomerRead | Stale | Denied | None:
    return await _soft_delete(
        conn, _CUSTOMERS, customer_id, if_version, actor_id, CustomerRead, owners
    )


async def restore_customer(
    conn: WriteConn, customer_id: int, actor_id: int | None, owners: frozenset[int] | None = None
) -> CustomerRead | None:
    """The restored customer (or the live one); None when absent or its owner is
    outside `owners`."""
    row = await restore_row(conn, _CUSTOMERS, customer_id, owners)
    if row is None:
        return await get_customer(conn, customer_id, owners)
    await record_change(conn, "customer", customer_id, "restored", {}, actor_id)
    restored = CustomerRead.model_validate(dict(row))
    await _emit(conn, "customer.restored", restored, actor_id)
    return restored


def _customer_filters(
    query: CustomerListQuery,
    shards: list[int],
    owners: frozenset[int] | None,
    params: Params,
    custom: Sequence[TypedFilter] = (),
) -> list[str]:
    where = [
        "deleted_at IS NULL",
        on_shards(params, shards),
        *filter_sql(params, "custom_fields", custom),
    ]
    if scope := owned_by("owner_id", owners, params):
        where.append(scope)
    if query.name_prefix:
        where.append(f"lower(name) LIKE {params(escape_like(query.name_prefix.lower()) + '%')}")
    if query.tags:
        where.append(f"tags && {params(list(query.tags))}::text[]")
    if query.owner_id is not None:
        where.append(f"owner_id = {params(query.owner_id)}")
    if query.created_from is not None:
        where.append(f"created_at >= {params(query.created_from)}")
    if query.created_before is not None:
        where.append(f"created_at < {params(query.created_before)}")
    return where


@single_statement
async def list_customers(
    conn: ReadConn,
    shards: list[int],
    query: CustomerListQuery,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
    sort: CustomSort | None = None,
) -> list[CustomerRead]:
    """Up to `limit + 1` customers on this server after `position` (the caller
    merges), of the owners in `owners` (None: anyone's), matching the `cf.` filters,
    in the order of a custom field when `sort` says."""
    params = Params()
    column = sort.sql() if sort else _SORT_COLUMNS[order.field]
    where = _customer_filters(query, shards, owners, params, custom)
    sql = keyset_page("customers", _CUSTOMER, where, column, order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [CustomerRead.model_validate(dict(r)) for r in rows]


@single_statement
async def count_customers(
    conn: ReadConn,
    shards: list[int],
    query: CustomerListQuery,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
) -> int:
    params = Params()
    where = _customer_filters(query, shards, owners, params, custom)
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM customers WHERE {' AND '.join(where)}", *params.values
        )
    )


# -- contacts ----------------------------------------------------------------------
async def create_contact(
    conn: WriteConn,
    shard: int,
    customer_id: int,
    data: ContactCreate,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> ContactRead | None:
    """None when the customer does not exist (or is deleted, or its owner is outside
    `owners`)."""
    if not await customer_alive(conn, customer_id, owners, lock=True):
        return None
    row = await conn.fetchrow(
        f"""INSERT INTO contacts
               (id, customer_id, first_name, last_name, email, phone, title, custom_fields)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8) RETURNING {_CONTACT}""",
        shard,
        customer_id,
        data.first_name,
        data.last_name,
        data.email,
        data.phone,
        data.title,
        data.custom_fields,
    )
    created = ContactRead.model_validate(dict(row))
    await _record_created(conn, "contact", created, CONTACT_AUDITED, actor_id)
    await _emit(conn, "contact.created", created, actor_id)
    return created


async def create_contact_from_source(
    conn: WriteConn,
    shard: int,
    source_key: str,
    customer_id: int,
    data: ContactCreate,
    actor_id: int | None,
) -> ContactRead | None:
    """The contact made for `source_key` (new, or the one an earlier call made); None
    when the customer is absent and no contact was made for the key before."""
    existing = await conn.fetchrow(
        f"SELECT {_CONTACT} FROM contacts WHERE source_key = $1", source_key
    )
    if existing is not None:
        return ContactRead.model_validate(dict(existing))
    if not await customer_alive(conn, customer_id, None, lock=True):
        return None
    row = await conn.fetchrow(
        f"""INSERT INTO contacts
               (id, customer_id, first_name, last_name, email, phone, title, source_key,
                custom_fields)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (source_key) WHERE source_key IS NOT NULL DO NOTHING
            RETURNING {_CONTACT}""",
        shard, customer_id, data.first_name, data.last_name, data.email, data.phone,
        data.title, source_key, data.custom_fields,
    )  # fmt: skip
    if row is None:  # made by a concurrent call for the same key a moment ago
        row = await conn.fetchrow(
            f"SELECT {_CONTACT} FROM contacts WHERE source_key = $1", source_key
        )
        return ContactRead.model_validate(dict(row))
    created = ContactRead.model_validate(dict(row))
    await _record_created(conn, "contact", created, CONTACT_AUDITED, actor_id)
    await _emit(conn, "contact.created", created, actor_id)
    return created


@single_statement
async def get_contact(
    conn: ReadConn, contact_id: int, owners: frozenset[int] | None = None
) -> ContactRead | None:
    """The live contact of a live customer whose owner `owners` (None: anyone) holds:
    a contact is reached through its customer."""
    params = Params()
    parent = ["p.id = c.customer_id", "p.deleted_at IS NULL"]
    if scope := owned_by("p.owner_id", owners, params):
        parent.append(scope)
    row = await conn.fetchrow(
        f"""SELECT {_CONTACT} FROM contacts c
            WHERE id = {params(contact_id)} AND deleted_at IS NULL
              AND EXISTS (SELECT 1 FROM customers p WHERE {" AND ".join(parent)})""",
        *params.values,
    )
    return None if row is None else ContactRead.model_validate(dict(row))


async def update_contact(
    conn: WriteConn,
    contact_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> ContactRead | Stale | Denied | None:
    return await _update(
        conn, _CONTACTS, contact_id, changes, if_version, actor_id, ContactRead, owners
    )


async def delete_contact(
    conn: WriteConn,
    contact_id: int,
    if_version: int | None,
    actor_id: int | None,
    owners: frozenset[int] | None = None,
) -> ContactRead | Stale | Denied | None:
    return await _soft_delete(
        conn, _CONTACTS, contact_id, if_version, actor_id, ContactRead, owners
    )


async def restore_contact(
    conn: WriteConn, contact_id: int, actor_id: int | None, owners: frozenset[int] | None = None
) -> ContactRead | None:
    """The restored contact (or the live one); None when absent or its customer's
    owner is outside `owners`."""
    row = await restore_row(conn, _CONTACTS, contact_id, owners)
    if row is None:
        return await get_contact(conn, contact_id, owners)
    await record_change(conn, "contact", contact_id, "restored", {}, actor_id)
    restored = ContactRead.model_validate(dict(row))
    await _emit(conn, "contact.restored", restored, actor_id)
    return restored


async def list_contacts(
    conn: ReadConn,
    customer_id: int,
    limit: int,
    order: Order,
    position: Position | None,
    owners: frozenset[int] | None = None,
    custom: Sequence[TypedFilter] = (),
    sort: CustomSort | None = None,
) -> list[ContactRead] | None:
    """None when the customer is absent (or its owner outside `owners`); else up to
    `limit + 1` contacts after `position` matching the `cf.` filters."""
    if not await customer_alive(conn, customer_id, owners):
        return None
    params = Params()
    where = [
        f"customer_id = {params(customer_id)}", "deleted_at IS NULL",
        *filter_sql(params, "custom_fields", custom),
    ]  # fmt: skip
    column = sort.sql() if sort else "created_at"
    sql = keyset_page("contacts", _CONTACT, where, column, order, position, limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [ContactRead.model_validate(dict(r)) for r in rows]


async def customer_alive(
    conn: ReadConn | WriteConn, customer_id: int, owners: frozenset[int] | None, lock: bool = False
) -> bool:
    """Whether the customer is live and its owner in `owners` (None: anyone); `lock`
    keeps it from being deleted until the transaction ends."""
    params = Params()
    where = by_id(params, customer_id, "owner_id", owners)
    sql = f"SELECT 1 FROM customers WHERE {' AND '.join(where)}"
    return bool(await conn.fetchval(sql + (" FOR KEY SHARE" if lock else ""), *params.values))


# -- shared by both tables -----------------------------------------------------------
@dataclass(frozen=True)
class _Table(Versioned):
    """A versioned table (deployments/_kit/versioned.py) with its history and events:
    `record_type` names both, `audited` the fields its history rows follow."""

    record_type: str = ""
    audited: tuple[str, ...] = ()


_CUSTOMERS = _Table(
    "customers",
    _CUSTOMER,
    frozenset(_CUSTOMER_UPDATABLE),
    "owner_id",
    record_type="customer",
    audited=CUSTOMER_AUDITED,
)
# A contact belongs to whoever owns its customer.
_CONTACTS = _Table(
    "contacts",
    _CONTACT,
    frozenset(_CONTACT_UPDATABLE),
    "(SELECT p.owner_id FROM customers p WHERE p.id = contacts.customer_id)",
    record_type="contact",
    audited=CONTACT_AUDITED,
)


async def _record_created(
    conn: WriteConn,
    record_type: str,
    record: CustomerRead | ContactRead,
    audited: tuple[str, ...],
    actor_id: int | None,
) -> None:
    changes = diff(None, _audited(record.model_dump(), audited), audited)
    await record_change(conn, record_type, record.id, "created", changes, actor_id)


async def _update(
    conn: WriteConn,
    table: _Table,
    record_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None,
    model: type[M],
    owners: frozenset[int] | None,
) -> M | Stale | Denied | None:
    """The record as updated, Stale for a stale `if_version`, Denied when its owner is
    outside `owners` (None: anyone), None when absent; an "updated" history row when
    an audited field changed."""
    found = await update_row(conn, table, record_id, changes, if_version, owners)
    if not isinstance(found, Updated):
        return found
    before, row = found.before, found.after
    changed = diff(
        _audited(before, table.audited), _audited(dict(row), table.audited), table.audited
    )
    await record_change(conn, table.record_type, record_id, "updated", changed, actor_id)
    record = model.model_validate(dict(row))
    # The event names every changed field (custom fields too), not only audited ones.
    old = model.model_validate(before).model_dump(mode="json")
    new = record.model_dump(mode="json")
    event_changes = {k: [old[k], new[k]] for k in sorted(table.updatable) if old[k] != new[k]}
    await _emit(conn, f"{table.record_type}.updated", record, actor_id, event_changes)
    return record


async def _soft_delete(
    conn: WriteConn,
    table: _Table,
    record_id: int,
    if_version: int | None,
    actor_id: int | None,
    model: type[M],
    owners: frozenset[int] | None,
) -> M | Stale | Denied | None:
    """The record as deleted, Stale for a stale `if_version`, Denied when its owner is
    outside `owners` (None: anyone), None when absent."""
    row = await soft_delete_row(conn, table, record_id, if_version, owners)
    if row is None or isinstance(row, Stale | Denied):
        return row
    await record_change(conn, table.record_type, record_id, "deleted", {}, actor_id)
    record = model.model_validate(dict(row))
    await _emit(conn, f"{table.record_type}.deleted", record, actor_id)
    return record


async def _emit(
    conn: WriteConn,
    type: str,
    record: BaseModel,
    actor_id: int | None,
    changes: dict[str, Any] | None = None,
) -> None:
    """The record's event in the outbox of this transaction (deployments/_kit/events.py)."""
    name = type.split(".", 1)[0]
    record_id = getattr(record, "id")  # noqa: B009  (both record types have one)
    await emit(conn, type, name, record_id, record_data(name, record, changes), actor_id)
