"""All SQL of the customer service. Each function runs inside the one transaction
that the ShardManager opened on the record's shard."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from deployments._kit.events import emit, record_data
from deployments._kit.listing import Order, Position
from deployments._kit.sql import Params, Stale, escape_like, keyset_after, on_shards, order_by
from deployments.customer.schemas import (
    ContactCreate,
    ContactRead,
    CustomerCreate,
    CustomerListQuery,
    CustomerRead,
)
from shards import ReadConn, WriteConn

_CUSTOMER = (
    "id, name, email, phone, website, industry, tags, custom_fields, owner_id,"
    " version, created_at, updated_at"
)
_CONTACT = (
    "id, customer_id, first_name, last_name, email, phone, title, version, created_at, updated_at"
)
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
_CONTACT_UPDATABLE = {"first_name", "last_name", "email", "phone", "title"}


# -- customers ---------------------------------------------------------------------
async def create_customer(
    conn: WriteConn,
    shard: int,
    data: CustomerCreate,
    owner_id: int | None,
    actor_id: int | None = None,
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
    customer = CustomerRead.model_validate(dict(row))
    await _emit(conn, "customer.created", customer, actor_id)
    return customer


async def create_customer_from_source(
    conn: WriteConn,
    shard: int,
    source_key: str,
    data: CustomerCreate,
    owner_id: int | None,
    actor_id: int | None = None,
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
    customer = CustomerRead.model_validate(dict(row))
    await _emit(conn, "customer.created", customer, actor_id)
    return customer


async def get_customer(conn: ReadConn, customer_id: int) -> CustomerRead | None:
    row = await conn.fetchrow(
        f"SELECT {_CUSTOMER} FROM customers WHERE id = $1 AND deleted_at IS NULL", customer_id
    )
    return None if row is None else CustomerRead.model_validate(dict(row))


async def update_customer(
    conn: WriteConn,
    customer_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None = None,
) -> CustomerRead | Stale | None:
    return await _update(
        conn,
        "customers",
        _CUSTOMER,
        _CUSTOMER_UPDATABLE,
        customer_id,
        changes,
        if_version,
        CustomerRead,
        actor_id,
    )


async def delete_customer(
    conn: WriteConn, customer_id: int, if_version: int | None, actor_id: int | None = None
) -> CustomerRead | Stale | None:
    deleted = await _soft_delete(
        conn, "customers", _CUSTOMER, customer_id, if_version, CustomerRead
    )
    if isinstance(deleted, CustomerRead):
        await _emit(conn, "customer.deleted", deleted, actor_id)
    return deleted


async def restore_customer(conn: WriteConn, customer_id: int) -> CustomerRead | None:
    row = await conn.fetchrow(
        f"""UPDATE customers SET deleted_at = NULL, version = version + 1, updated_at = now()
            WHERE id = $1 AND deleted_at IS NOT NULL RETURNING {_CUSTOMER}""",
        customer_id,
    )
    if row is None:
        return await get_customer(conn, customer_id)
    return CustomerRead.model_validate(dict(row))


def _customer_filters(query: CustomerListQuery, shards: list[int], params: Params) -> list[str]:
    where = ["deleted_at IS NULL", on_shards(params, shards)]
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


async def list_customers(
    conn: ReadConn,
    shards: list[int],
    query: CustomerListQuery,
    order: Order,
    position: Position | None,
) -> list[CustomerRead]:
    """Up to `limit + 1` customers on this server after `position` (the caller merges)."""
    params = Params()
    column = _SORT_COLUMNS[order.field]
    where = _customer_filters(query, shards, params)
    after = keyset_after(column, order, position, params)
    if after:
        where.append(after)
    rows = await conn.fetch(
        f"SELECT {_CUSTOMER} FROM customers WHERE {' AND '.join(where)}"
        f" {order_by(column, order)} LIMIT {params(query.limit + 1)}",
        *params.values,
    )
    return [CustomerRead.model_validate(dict(r)) for r in rows]


async def count_customers(conn: ReadConn, shards: list[int], query: CustomerListQuery) -> int:
    params = Params()
    where = _customer_filters(query, shards, params)
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
    actor_id: int | None = None,
) -> ContactRead | None:
    """None when the customer does not exist (or is deleted)."""
    alive = await conn.fetchval(
        "SELECT 1 FROM customers WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE", customer_id
    )
    if not alive:
        return None
    row = await conn.fetchrow(
        f"""INSERT INTO contacts (id, customer_id, first_name, last_name, email, phone, title)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7) RETURNING {_CONTACT}""",
        shard,
        customer_id,
        data.first_name,
        data.last_name,
        data.email,
        data.phone,
        data.title,
    )
    contact = ContactRead.model_validate(dict(row))
    await _emit(conn, "contact.created", contact, actor_id)
    return contact


async def create_contact_from_source(
    conn: WriteConn,
    shard: int,
    source_key: str,
    customer_id: int,
    data: ContactCreate,
    actor_id: int | None = None,
) -> ContactRead | None:
    """The contact made for `source_key` (new, or the one an earlier call made); None
    when the customer is absent and no contact was made for the key before."""
    existing = await conn.fetchrow(
        f"SELECT {_CONTACT} FROM contacts WHERE source_key = $1", source_key
    )
    if existing is not None:
        return ContactRead.model_validate(dict(existing))
    alive = await conn.fetchval(
        "SELECT 1 FROM customers WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE", customer_id
    )
    if not alive:
        return None
    row = await conn.fetchrow(
        f"""INSERT INTO contacts
               (id, customer_id, first_name, last_name, email, phone, title, source_key)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (source_key) WHERE source_key IS NOT NULL DO NOTHING
            RETURNING {_CONTACT}""",
        shard, customer_id, data.first_name, data.last_name, data.email, data.phone,
        data.title, source_key,
    )  # fmt: skip
    if row is None:  # made by a concurrent call for the same key a moment ago
        row = await conn.fetchrow(
            f"SELECT {_CONTACT} FROM contacts WHERE source_key = $1", source_key
        )
        return ContactRead.model_validate(dict(row))
    contact = ContactRead.model_validate(dict(row))
    await _emit(conn, "contact.created", contact, actor_id)
    return contact


async def get_contact(conn: ReadConn, contact_id: int) -> ContactRead | None:
    row = await conn.fetchrow(
        f"""SELECT {_CONTACT} FROM contacts c
            WHERE id = $1 AND deleted_at IS NULL
              AND EXISTS (SELECT 1 FROM customers p
                          WHERE p.id = c.customer_id AND p.deleted_at IS NULL)""",
        contact_id,
    )
    return None if row is None else ContactRead.model_validate(dict(row))


async def update_contact(
    conn: WriteConn,
    contact_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int | None = None,
) -> ContactRead | Stale | None:
    return await _update(
        conn, "contacts", _CONTACT, _CONTACT_UPDATABLE, contact_id, changes, if_version,
        ContactRead, actor_id,
    )  # fmt: skip


async def delete_contact(
    conn: WriteConn, contact_id: int, if_version: int | None
) -> ContactRead | Stale | None:
    return await _soft_delete(conn, "contacts", _CONTACT, contact_id, if_version, ContactRead)


async def restore_contact(conn: WriteConn, contact_id: int) -> ContactRead | None:
    row = await conn.fetchrow(
        f"""UPDATE contacts SET deleted_at = NULL, version = version + 1, updated_at = now()
            WHERE id = $1 AND deleted_at IS NOT NULL RETURNING {_CONTACT}""",
        contact_id,
    )
    if row is None:
        return await get_contact(conn, contact_id)
    return ContactRead.model_validate(dict(row))


async def list_contacts(
    conn: ReadConn, customer_id: int, limit: int, order: Order, position: Position | None
) -> list[ContactRead] | None:
    """None when the customer is absent; else up to `limit + 1` contacts after `position`."""
    alive = await conn.fetchval(
        "SELECT 1 FROM customers WHERE id = $1 AND deleted_at IS NULL", customer_id
    )
    if not alive:
        return None
    params = Params()
    where = [f"customer_id = {params(customer_id)}", "deleted_at IS NULL"]
    after = keyset_after("created_at", order, position, params)
    if after:
        where.append(after)
    rows = await conn.fetch(
        f"SELECT {_CONTACT} FROM contacts WHERE {' AND '.join(where)}"
        f" {order_by('created_at', order)} LIMIT {params(limit + 1)}",
        *params.values,
    )
    return [ContactRead.model_validate(dict(r)) for r in rows]


# -- shared by both tables -----------------------------------------------------------
async def _update(
    conn: WriteConn,
    table: str,
    columns: str,
    updatable: set[str],
    record_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    model: type[M],
    actor_id: int | None = None,
) -> M | Stale | None:
    """Emits `<customer|contact>.updated` with {field: [old, new]} of what changed."""
    before = await conn.fetchrow(
        f"SELECT {columns} FROM {table} WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        record_id,
    )
    params = Params()
    sets = [f"{name} = {params(value)}" for name, value in changes.items() if name in updatable]
    sets += ["version = version + 1", "updated_at = now()"]
    where = [f"id = {params(record_id)}", "deleted_at IS NULL"]
    if if_version is not None:
        where.append(f"version = {params(if_version)}")
    row = await conn.fetchrow(
        f"UPDATE {table} SET {', '.join(sets)} WHERE {' AND '.join(where)} RETURNING {columns}",
        *params.values,
    )
    if row is not None:
        record = model.model_validate(dict(row))
        old = model.model_validate(dict(before)).model_dump(mode="json") if before else {}
        new = record.model_dump(mode="json")
        changed = {k: [old.get(k), new[k]] for k in sorted(updatable) if old.get(k) != new.get(k)}
        await _emit(conn, f"{_AGGREGATE[table]}.updated", record, actor_id, changed)  # type: ignore[arg-type]
        return record
    return await _missing_or_stale(conn, table, record_id)


_AGGREGATE = {"customers": "customer", "contacts": "contact"}


async def _emit(
    conn: WriteConn,
    type: str,
    record: CustomerRead | ContactRead,
    actor_id: int | None,
    changes: dict[str, Any] | None = None,
) -> None:
    name = type.split(".", 1)[0]
    await emit(conn, type, name, record.id, record_data(name, record, changes), actor_id)


async def _soft_delete(
    conn: WriteConn,
    table: str,
    columns: str,
    record_id: int,
    if_version: int | None,
    model: type[M],
) -> M | Stale | None:
    """The record as deleted, Stale for a stale `if_version`, None when absent."""
    params = Params()
    where = [f"id = {params(record_id)}", "deleted_at IS NULL"]
    if if_version is not None:
        where.append(f"version = {params(if_version)}")
    row = await conn.fetchrow(
        f"UPDATE {table} SET deleted_at = now(), version = version + 1, updated_at = now()"
        f" WHERE {' AND '.join(where)} RETURNING {columns}",
        *params.values,
    )
    if row is not None:
        return model.model_validate(dict(row))
    return await _missing_or_stale(conn, table, record_id)


async def _missing_or_stale(conn: WriteConn, table: str, record_id: int) -> Stale | None:
    version = await conn.fetchval(
        f"SELECT version FROM {table} WHERE id = $1 AND deleted_at IS NULL", record_id
    )
    return None if version is None else Stale(version)
