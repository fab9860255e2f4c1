"""All SQL of the product service (the unsharded `product` database). Each function
runs inside the one transaction that the catalog's ShardManager opened."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from deployments._kit.custom_fields import CustomSort, TypedFilter, filter_sql
from deployments._kit.history import diff, record_change
from deployments._kit.sql import Params, Stale, escape_like, keyset_page
from deployments._kit.versioned import Merge
from deployments.product.schemas import (
    PriceBookCreate,
    PriceBookListQuery,
    PriceBookRead,
    PriceRead,
    ProductCreate,
    ProductListQuery,
    ProductRead,
    QuoteLine,
)
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement

M = TypeVar("M", bound=BaseModel)

_PRODUCT = (
    "id, sku, name, description, family, unit, tax_percent, is_active, custom_fields,"
    " version, created_at, updated_at"
)
_BOOK = "id, name, currency, description, is_active, version, created_at, updated_at"
_PRICE = (
    "p.price_book_id, p.product_id, b.currency, p.unit_price, p.is_active, p.version,"
    " p.created_at, p.updated_at"
)
PRODUCT_AUDITED = ("sku", "name", "description", "family", "unit", "tax_percent", "is_active")
BOOK_AUDITED = ("name", "description", "is_active")
_PRODUCT_SORTS = {"created_at": "created_at", "name": "name", "sku": "sku"}
_BOOK_SORTS = {"created_at": "created_at", "name": "name"}


# -- products ----------------------------------------------------------------------
async def create_product(conn: WriteConn, data: ProductCreate, actor_id: int) -> ProductRead:
    row = await conn.fetchrow(
        f"""INSERT INTO products
               (sku, name, description, family, unit, tax_percent, is_active, custom_fields)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_PRODUCT}""",
        data.sku, data.name, data.description, data.family, data.unit, data.tax_percent,
        data.is_active, data.custom_fields,
    )  # fmt: skip
    product = ProductRead.model_validate(dict(row))
    await _history(conn, "product", product.id, "created", None, dict(row), actor_id)
    return product


@single_statement
async def get_product(conn: ReadConn, product_id: int) -> ProductRead | None:
    row = await conn.fetchrow(
        f"SELECT {_PRODUCT} FROM products WHERE id = $1 AND deleted_at IS NULL", product_id
    )
    return None if row is None else ProductRead.model_validate(dict(row))


@single_statement
async def get_products(conn: ReadConn, product_ids: list[int]) -> list[ProductRead]:
    rows = await conn.fetch(
        f"SELECT {_PRODUCT} FROM products WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL",
        product_ids,
    )
    return [ProductRead.model_validate(dict(r)) for r in rows]


async def update_product(
    conn: WriteConn,
    product_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int,
) -> ProductRead | Stale | None:
    return await _update(
        conn, "products", "product", _PRODUCT, PRODUCT_AUDITED, product_id, changes, if_version,
        actor_id, ProductRead,
    )  # fmt: skip


async def set_product_deleted(
    conn: WriteConn, product_id: int, deleted: bool, if_version: int | None, actor_id: int
) -> ProductRead | Stale | None:
    return await _set_deleted(
        conn, "products", "product", _PRODUCT, product_id, deleted, if_version, actor_id,
        ProductRead,
    )  # fmt: skip


@single_statement
async def list_products(
    conn: ReadConn,
    query: ProductListQuery,
    order: Order,
    position: Position | None,
    custom: Sequence[TypedFilter] = (),
    sort: CustomSort | None = None,
) -> list[ProductRead]:
    params = Params()
    where = ["deleted_at IS NULL", *filter_sql(params, "custom_fields", custom)]
    if query.sku is not None:
        where.append(f"lower(sku) = {params(query.sku.lower())}")
    if query.name_prefix:
        where.append(f"name LIKE {params(escape_like(query.name_prefix) + '%')}")
    if query.family is not None:
        where.append(f"family = {params(query.family)}")
    if query.is_active is not None:
        where.append(f"is_active = {params(query.is_active)}")
    column = sort.sql() if sort else _PRODUCT_SORTS[order.field]
    sql = keyset_page("products", _PRODUCT, where, column, order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [ProductRead.model_validate(dict(r)) for r in rows]


# -- price books ---------------------------------------------------------------------
async def create_price_book(conn: WriteConn, data: PriceBookCreate, actor_id: int) -> PriceBookRead:
    row = await conn.fetchrow(
        f"""INSERT INTO price_books (name, currency, description, is_active)
            VALUES ($1, $2, $3, $4) RETURNING {_BOOK}""",
        data.name, data.currency, data.description, data.is_active,
    )  # fmt: skip
    book = PriceBookRead.model_validate(dict(row))
    audited = (*BOOK_AUDITED, "currency")
    await _history(conn, "price_book", book.id, "created", None, dict(row), actor_id, audited)
    return book


async def get_price_book(conn: ReadConn, book_id: int) -> PriceBookRead | None:
    row = await conn.fetchrow(
        f"SELECT {_BOOK} FROM price_books WHERE id = $1 AND deleted_at IS NULL", book_id
    )
    return None if row is None else PriceBookRead.model_validate(dict(row))


async def update_price_book(
    conn: WriteConn, book_id: int, changes: dict[str, Any], if_version: int | None, actor_id: int
) -> PriceBookRead | Stale | None:
    return await _update(
        conn, "price_books", "price_book", _BOOK, BOOK_AUDITED, book_id, changes, if_version,
        actor_id, PriceBookRead,
    )  # fmt: skip


async def set_price_book_deleted(
    conn: WriteConn, book_id: int, deleted: bool, if_version: int | None, actor_id: int
) -> PriceBookRead | Stale | None:
    return await _set_deleted(
        conn, "price_books", "price_book", _BOOK, book_id, deleted, if_version, actor_id,
        PriceBookRead,
    )  # fmt: skip


async def list_price_books(
    conn: ReadConn, query: PriceBookListQuery, order: Order, position: Position | None
) -> list[PriceBookRead]:
    params = Params()
    where = ["deleted_at IS NULL"]
    if query.currency is not None:
        where.append(f"currency = {params(query.currency)}")
    if query.is_active is not None:
        where.append(f"is_active = {params(query.is_active)}")
    column = _BOOK_SORTS[order.field]
    sql = keyset_page("price_books", _BOOK, where, column, order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [PriceBookRead.model_validate(dict(r)) for r in rows]


# -- prices --------------------------------------------------------------------------
class Missing(Exception):
    """A price names a book or product that does not exist (or is deleted)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


async def set_price(
    conn: WriteConn,
    book_id: int,
    product_id: int,
    unit_price: Any,
    is_active: bool,
    actor_id: int,
) -> PriceRead:
    """Create or replace the price of a product in a book (raises `Missing`)."""
    book = await conn.fetchval(
        "SELECT 1 FROM price_books WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE", book_id
    )
    if not book:
        raise Missing("price_book")
    product = await conn.fetchval(
        "SELECT 1 FROM products WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE", product_id
    )
    if not product:
        raise Missing("product")
    before = await conn.fetchrow(
        "SELECT unit_price, is_active FROM prices WHERE price_book_id = $1 AND product_id = $2",
        book_id, product_id,
    )  # fmt: skip
    await conn.execute(
        """INSERT INTO prices (price_book_id, product_id, unit_price, is_active)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (price_book_id, product_id) DO UPDATE
           SET unit_price = EXCLUDED.unit_price, is_active = EXCLUDED.is_active,
               version = prices.version + 1, updated_at = now()""",
        book_id, product_id, unit_price, is_active,
    )  # fmt: skip
    price = await _price(conn, book_id, product_id)
    assert price is not None  # written just above, in this transaction
    after = {"price_book_id": book_id, "unit_price": unit_price, "is_active": is_active}
    changes = diff(None if before is None else {"price_book_id": book_id, **dict(before)},
                   after, ("price_book_id", "unit_price", "is_active"))  # fmt: skip
    changes.setdefault("price_book_id", [book_id, book_id])
    action = "created" if before is None else "updated"
    await record_change(conn, "price", product_id, action, changes, actor_id, sharded=False)
    return price


async def delete_price(
    conn: WriteConn, book_id: int, product_id: int, actor_id: int
) -> PriceRead | None:
    """The price as it was before this delete, or None when there was none."""
    price = await _price(conn, book_id, product_id)
    if price is None:
        return None
    await conn.execute(
        "DELETE FROM prices WHERE price_book_id = $1 AND product_id = $2", book_id, product_id
    )
    changes: dict[str, list[Any]] = {
        "price_book_id": [book_id, book_id],
        "unit_price": [str(price.unit_price), None],
    }
    await record_change(conn, "price", product_id, "deleted", changes, actor_id, sharded=False)
    return price


async def _price(conn: ReadConn, book_id: int, product_id: int) -> PriceRead | None:
    row = await conn.fetchrow(
        f"""SELECT {_PRICE} FROM prices p JOIN price_books b ON b.id = p.price_book_id
            WHERE p.price_book_id = $1 AND p.product_id = $2""",
        book_id, product_id,
    )  # fmt: skip
    return None if row is None else PriceRead.model_validate(dict(row))


async def list_prices(
    conn: ReadConn, book_id: int, limit: int, after_product: int | None
) -> list[PriceRead] | None:
    """None when the book is absent; else up to `limit + 1` prices by product id."""
    if not await conn.fetchval(
        "SELECT 1 FROM price_books WHERE id = $1 AND deleted_at IS NULL", book_id
    ):
        return None
    rows = await conn.fetch(
        f"""SELECT {_PRICE} FROM prices p JOIN price_books b ON b.id = p.price_book_id
            JOIN products r ON r.id = p.product_id AND r.deleted_at IS NULL
            WHERE p.price_book_id = $1 AND p.product_id > $2
            ORDER BY p.product_id LIMIT $3""",
        book_id, after_product or 0, limit + 1,
    )  # fmt: skip
    return [PriceRead.model_validate(dict(r)) for r in rows]


async def prices_of_product(conn: ReadConn, product_id: int) -> list[PriceRead]:
    rows = await conn.fetch(
        f"""SELECT {_PRICE} FROM prices p JOIN price_books b ON b.id = p.price_book_id
            WHERE p.product_id = $1 AND b.deleted_at IS NULL ORDER BY b.name, b.id""",
        product_id,
    )
    return [PriceRead.model_validate(dict(r)) for r in rows]


async def quote_lines(
    conn: ReadConn, book_id: int, product_ids: list[int]
) -> tuple[PriceBookRead | None, list[QuoteLine]]:
    """The book and the live (active product, active price) lines for these products."""
    book = await get_price_book(conn, book_id)
    if book is None:
        return None, []
    rows = await conn.fetch(
        """SELECT r.id AS product_id, r.sku, r.name, r.unit, r.tax_percent, p.unit_price
           FROM products r JOIN prices p ON p.product_id = r.id AND p.price_book_id = $1
           WHERE r.id = ANY($2::bigint[]) AND r.deleted_at IS NULL
             AND r.is_active AND p.is_active""",
        book_id, product_ids,
    )  # fmt: skip
    return book, [QuoteLine.model_validate(dict(r)) for r in rows]


# -- shared ------------------------------------------------------------------------
async def _history(
    conn: WriteConn,
    record_type: str,
    record_id: int,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    actor_id: int,
    audited: tuple[str, ...] = PRODUCT_AUDITED,
) -> None:
    changes = diff(before, after, audited)
    await record_change(conn, record_type, record_id, action, changes, actor_id, sharded=False)


async def _update(
    conn: WriteConn,
    table: str,
    record_type: str,
    columns: str,
    audited: tuple[str, ...],
    record_id: int,
    changes: dict[str, Any],
    if_version: int | None,
    actor_id: int,
    model: type[M],
) -> M | Stale | None:
    before = await conn.fetchrow(
        f"SELECT {columns} FROM {table} WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        record_id,
    )
    if before is None:
        return None
    if if_version is not None and before["version"] != if_version:
        return Stale(before["version"])
    params = Params()
    sets = [f"{name} = {params(value)}" for name, value in changes.items() if name in audited]
    if isinstance(custom := changes.get("custom_fields"), Merge):  # the keys given change
        sets.append(
            f"custom_fields = (custom_fields || {params(custom.set)}::jsonb)"
            f" - {params(list(custom.remove))}::text[]"
        )
    sets += ["version = version + 1", "updated_at = now()"]
    row = await conn.fetchrow(
        f"UPDATE {table} SET {', '.join(sets)} WHERE id = {params(record_id)} RETURNING {columns}",
        *params.values,
    )
    await _history(conn, record_type, record_id, "updated", dict(before), dict(row), actor_id,
                   audited)  # fmt: skip
    return model.model_validate(dict(row))


async def _set_deleted(
    conn: WriteConn,
    table: str,
    record_type: str,
    columns: str,
    record_id: int,
    deleted: bool,
    if_version: int | None,
    actor_id: int,
    model: type[M],
) -> M | Stale | None:
    """Soft delete (or restore): the record as it now is, Stale, or None when absent.
    Restoring a live record returns it unchanged."""
    current = await conn.fetchrow(
        f"SELECT version, deleted_at FROM {table} WHERE id = $1 FOR UPDATE", record_id
    )
    if current is None or (deleted and current["deleted_at"] is not None):
        return None
    if not deleted and current["deleted_at"] is None:
        row = await conn.fetchrow(f"SELECT {columns} FROM {table} WHERE id = $1", record_id)
        return model.model_validate(dict(row))
    if if_version is not None and current["version"] != if_version:
        return Stale(current["version"])
    row = await conn.fetchrow(
        f"""UPDATE {table} SET deleted_at = {"now()" if deleted else "NULL"},
                version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {columns}""",
        record_id,
    )
    action = "deleted" if deleted else "restored"
    await record_change(conn, record_type, record_id, action, {}, actor_id, sharded=False)
    return model.model_validate(dict(row))
