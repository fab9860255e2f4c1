"""Product logic: permissions, the cache in front of reads, quotes for orders.
No SQL here (that is repo.py) and no Ray or FastAPI (that is deployment.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from deployments._kit.custom_fields import Definitions, ObjectFields, ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery, list_changes
from deployments._kit.sql import written
from deployments._kit.unique_values import Records
from deployments.product import repo
from deployments.product.cache import CatalogCache
from deployments.product.schemas import (
    PriceBookCreate,
    PriceBookListQuery,
    PriceBookRead,
    PriceBookUpdate,
    PriceListQuery,
    PriceRead,
    PriceSet,
    ProductCreate,
    ProductListQuery,
    ProductRead,
    ProductUpdate,
    Quote,
    QuoteLine,
)
from gateway.errors import NotFound, Validation
from gateway.listing import (
    Page,
    decode_cursor,
    encode_cursor,
    merge_pages,
    row_key,
    validate_sort,
)
from gateway.principal import Principal
from shards.client import Database

T = TypeVar("T")
MAX_QUOTE_LINES = 200


class ProductService:
    def __init__(
        self, db: Database, cache: CatalogCache, fields: Definitions | None = None
    ) -> None:
        """`fields`: the custom field definitions (None: products' kept unchecked)."""
        self.db = db
        self.cache = cache
        self.product_fields = ObjectFields("products", fields, Records(db, "products"))

    async def purge_custom_field(self, principal: Principal, object_name: str, key: str) -> int:
        """Remove a deleted custom field's values from every product (the auth
        service's purge, `field:write`); how many records held one."""
        principal.require("field:write")
        try:
            return await self.product_fields.purge(key)
        finally:  # products are cached with their custom fields (as `_write` does)
            await self.cache.invalidate()

    async def product_schema(self, principal: Principal) -> ObjectSchema:
        """The product create body as JSON Schema with the live custom fields."""
        principal.require("product:read")
        return await self.product_fields.schema(ProductCreate)

    async def _write(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """A write, then the cache generation bump (only once it has committed)."""
        try:
            return await self.db.write(fn, *args)
        finally:
            # Also after a failure: a write whose outcome is unknown may have committed.
            await self.cache.invalidate()

    # -- products --------------------------------------------------------------------
    async def create_product(self, principal: Principal, data: ProductCreate) -> ProductRead:
        principal.require("product:write")
        data = await self.product_fields.create(data)
        async with await self.product_fields.claim(data.custom_fields):
            made = await self._write(repo.create_product, data, principal.user_id)
        return await self.product_fields.shown(made)

    async def get_product(self, principal: Principal, product_id: int) -> ProductRead:
        principal.require("product:read")
        found = await self.cache.get_many("product", [product_id], ProductRead, self._fill_products)
        product = found[product_id]
        if product is None:
            raise NotFound(f"product {product_id} not found")
        return await self.product_fields.shown(product)

    async def _fill_products(self, ids: list[int]) -> dict[Any, ProductRead | None]:
        rows = await self.db.read_primary(repo.get_products, ids)
        by_id: dict[Any, ProductRead | None] = {p.id: p for p in rows}
        return {i: by_id.get(i) for i in ids}

    async def update_product(
        self,
        principal: Principal,
        product_id: int,
        data: ProductUpdate,
        if_version: int | None = None,
    ) -> ProductRead:
        principal.require("product:write")
        changes = await self.product_fields.changes(data.model_dump(exclude_unset=True))
        async with await self.product_fields.claim(changes.get("custom_fields"), record=product_id):
            outcome = await self._write(
                repo.update_product, product_id, changes, if_version, principal.user_id
            )
            updated = written(outcome, "product", product_id)
        return await self.product_fields.shown(updated)

    async def delete_product(
        self, principal: Principal, product_id: int, if_version: int | None = None
    ) -> ProductRead:
        principal.require("product:delete")
        outcome = await self._write(
            repo.set_product_deleted, product_id, True, if_version, principal.user_id
        )
        return await self.product_fields.shown(written(outcome, "product", product_id))

    async def restore_product(self, principal: Principal, product_id: int) -> ProductRead:
        principal.require("product:delete")
        async with await self.product_fields.claim_restore(product_id):
            outcome = await self._write(
                repo.set_product_deleted, product_id, False, None, principal.user_id
            )
            restored = written(outcome, "product", product_id)
        return await self.product_fields.shown(restored)

    async def list_products(
        self, principal: Principal, query: ProductListQuery
    ) -> Page[ProductRead]:
        principal.require("product:read")
        order = validate_sort(query)
        sort = await self.product_fields.sort(order)
        position = decode_cursor(query)
        position = sort.position(position) if sort else position
        custom = await self.product_fields.filters(query.custom)
        rows = await self.db.read(repo.list_products, query, order, position, custom, sort)
        key = sort.row_key if sort else row_key(order.field)
        items, cursor = merge_pages([rows], key, order, query.limit)
        items = await self.product_fields.shown_all(items)
        return Page[ProductRead](data=items, next_cursor=cursor)

    async def product_history(
        self, principal: Principal, product_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        principal.require("product:read")
        return await self._history("product", product_id, query)

    async def product_prices(self, principal: Principal, product_id: int) -> list[PriceRead]:
        """The product's price in every book (active or not)."""
        principal.require("product:read")
        await self.get_product(principal, product_id)
        return await self.db.read(repo.prices_of_product, product_id)

    # -- price books -----------------------------------------------------------------
    async def create_price_book(self, principal: Principal, data: PriceBookCreate) -> PriceBookRead:
        principal.require("product:write")
        return await self._write(repo.create_price_book, data, principal.user_id)

    async def get_price_book(self, principal: Principal, book_id: int) -> PriceBookRead:
        principal.require("product:read")
        found = await self.cache.get_many("book", [book_id], PriceBookRead, self._fill_books)
        book = found[book_id]
        if book is None:
            raise NotFound(f"price book {book_id} not found")
        return book

    async def _fill_books(self, ids: list[int]) -> dict[Any, PriceBookRead | None]:
        return {i: await self.db.read_primary(repo.get_price_book, i) for i in ids}

    async def update_price_book(
        self,
        principal: Principal,
        book_id: int,
        data: PriceBookUpdate,
        if_version: int | None = None,
    ) -> PriceBookRead:
        principal.require("product:write")
        changes = data.model_dump(exclude_unset=True)
        outcome = await self._write(
            repo.update_price_book, book_id, changes, if_version, principal.user_id
        )
        return written(outcome, "price book", book_id)

    async def delete_price_book(
        self, principal: Principal, book_id: int, if_version: int | None = None
    ) -> PriceBookRead:
        principal.require("product:delete")
        outcome = await self._write(
            repo.set_price_book_deleted, book_id, True, if_version, principal.user_id
        )
        return written(outcome, "price book", book_id)

    async def restore_price_book(self, principal: Principal, book_id: int) -> PriceBookRead:
        principal.require("product:delete")
        outcome = await self._write(
            repo.set_price_book_deleted, book_id, False, None, principal.user_id
        )
        return written(outcome, "price book", book_id)

    async def list_price_books(
        self, principal: Principal, query: PriceBookListQuery
    ) -> Page[PriceBookRead]:
        principal.require("product:read")
        order = validate_sort(query)
        rows = await self.db.read(repo.list_price_books, query, order, decode_cursor(query))
        items, cursor = merge_pages([rows], row_key(order.field), order, query.limit)
        return Page[PriceBookRead](data=items, next_cursor=cursor)

    async def price_book_history(
        self, principal: Principal, book_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        principal.require("product:read")
        return await self._history("price_book", book_id, query)

    # -- prices ----------------------------------------------------------------------
    async def set_price(
        self, principal: Principal, book_id: int, product_id: int, data: PriceSet
    ) -> PriceRead:
        principal.require("product:write")
        try:
            return await self._write(
                repo.set_price, book_id, product_id, data.unit_price, data.is_active,
                principal.user_id,
            )  # fmt: skip
        except repo.Missing as missing:
            record_id = book_id if missing.what == "price_book" else product_id
            raise NotFound(f"{missing.what.replace('_', ' ')} {record_id} not found") from None

    async def delete_price(self, principal: Principal, book_id: int, product_id: int) -> PriceRead:
        principal.require("product:write")
        gone = await self._write(repo.delete_price, book_id, product_id, principal.user_id)
        if gone is None:
            raise NotFound(f"product {product_id} has no price in price book {book_id}")
        return gone

    async def list_prices(
        self, principal: Principal, book_id: int, query: PriceListQuery
    ) -> Page[PriceRead]:
        principal.require("product:read")
        order = validate_sort(query)
        position = decode_cursor(query)
        after = None if position is None else position.id
        rows = await self.db.read(repo.list_prices, book_id, query.limit, after)
        if rows is None:
            raise NotFound(f"price book {book_id} not found")
        page = rows[: query.limit]
        cursor = None
        if len(rows) > query.limit:
            last = page[-1].product_id
            cursor = encode_cursor(order, last, last)
        return Page[PriceRead](data=page, next_cursor=cursor)

    async def quote(self, principal: Principal, book_id: int, product_ids: list[int]) -> Quote:
        """The live price of each product in a book, for pricing order lines. Every
        product must be active with an active price in the book (else 422 naming them)."""
        principal.require("product:read")
        wanted = list(dict.fromkeys(product_ids))
        if not wanted or len(wanted) > MAX_QUOTE_LINES:
            raise Validation(
                "a quote names 1-200 products", [{"field": "product_ids", "message": "1-200"}]
            )
        book = await self.get_price_book(principal, book_id)
        if not book.is_active:
            raise Validation(
                f"price book {book_id} is not active",
                [{"field": "price_book_id", "message": "inactive price book"}],
            )

        async def fill(keys: list[str]) -> dict[Any, QuoteLine | None]:
            ids = [int(k.split(":")[1]) for k in keys]
            _, lines = await self.db.read_primary(repo.quote_lines, book_id, ids)
            by_id = {line.product_id: line for line in lines}
            return {k: by_id.get(int(k.split(":")[1])) for k in keys}

        keys = [f"{book_id}:{pid}" for pid in wanted]
        found = await self.cache.get_many("line", keys, QuoteLine, fill)
        absent = [pid for pid, key in zip(wanted, keys, strict=True) if found[key] is None]
        if absent:
            raise Validation(
                f"no active price in price book {book_id} for some products",
                [
                    {"field": "product_id", "message": f"product {pid}: no active price"}
                    for pid in absent
                ],
            )
        lines = [line for key in keys if (line := found[key]) is not None]
        return Quote(price_book_id=book_id, currency=book.currency, lines=lines)

    # -- shared ----------------------------------------------------------------------
    async def cache_stats(self) -> dict[str, int]:
        """This replica's catalog cache hits and misses (for tests and benchmarks)."""
        return {"hits": self.cache.hits, "misses": self.cache.misses}

    async def _history(
        self, record_type: str, record_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        order = validate_sort(query)
        rows = await self.db.read(
            list_changes, record_type, record_id, query.limit, order, decode_cursor(query)
        )
        items, cursor = merge_pages([rows], row_key("created_at"), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)
