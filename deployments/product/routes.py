"""Products, price books and prices, under `/v1/products` (the product application's
prefix). Path: this file -> deployments/product/service.py ->
deployments/product/repo.py -> the `product` database (reads through Redis).

The `/price-books` routes come before the `/{product_id}` ones: `product_id` is an
int path parameter, so `/price-books` matched against it first would answer 422."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from deployments._kit.custom_fields import ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery
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
)
from deployments.product.service import ProductService
from gateway.context import (
    CurrentPrincipal,
    IfMatch,
    RecordId,
    json,
    list_params,
    no_content,
    record,
    service,
)
from gateway.listing import Page, query_parameters

router = APIRouter(tags=["products"])
Service = Annotated[ProductService, Depends(service)]


# -- products ----------------------------------------------------------------------
@router.post("/", status_code=201, response_model=ProductRead)
async def create_product(
    body: ProductCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Create a product; its SKU must be unused by any live product (409 otherwise)."""
    product = await svc.create_product(principal, body)
    return record(product, 201, f"/v1/products/{product.id}")


@router.get("/", response_model=Page[ProductRead], openapi_extra=query_parameters(ProductListQuery))
async def list_products(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Filters: `sku`, `name[prefix]`, `family`, `is_active`; `sort` = `created_at`,
    `name`, `sku` (prefix `-` for descending); `limit`, `cursor`."""
    query = await list_params(request, ProductListQuery)
    return json(await svc.list_products(principal, query))


# -- price books -------------------------------------------------------------------
@router.post("/price-books", status_code=201, response_model=PriceBookRead)
async def create_price_book(
    body: PriceBookCreate, principal: CurrentPrincipal, svc: Service
) -> Response:
    """A price book holds prices in one currency (fixed once created)."""
    book = await svc.create_price_book(principal, body)
    return record(book, 201, f"/v1/products/price-books/{book.id}")


@router.get(
    "/price-books",
    response_model=Page[PriceBookRead],
    openapi_extra=query_parameters(PriceBookListQuery),
)
async def list_price_books(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Filters: `currency`, `is_active`; `sort` = `created_at`, `name` (±)."""
    query = await list_params(request, PriceBookListQuery)
    return json(await svc.list_price_books(principal, query))


@router.get("/price-books/{book_id}", response_model=PriceBookRead)
async def get_price_book(book_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_price_book(principal, book_id))


@router.patch("/price-books/{book_id}", response_model=PriceBookRead)
async def update_price_book(
    book_id: RecordId,
    body: PriceBookUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    return record(await svc.update_price_book(principal, book_id, body, version))


@router.delete("/price-books/{book_id}", status_code=204)
async def delete_price_book(
    book_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    return no_content(await svc.delete_price_book(principal, book_id, version))


@router.post("/price-books/{book_id}/restore", response_model=PriceBookRead)
async def restore_price_book(
    book_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.restore_price_book(principal, book_id))


@router.get(
    "/price-books/{book_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def price_book_history(
    book_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    query = await list_params(request, HistoryQuery)
    return json(await svc.price_book_history(principal, book_id, query))


# -- prices ------------------------------------------------------------------------
@router.get(
    "/price-books/{book_id}/prices",
    response_model=Page[PriceRead],
    openapi_extra=query_parameters(PriceListQuery),
)
async def list_prices(
    book_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The book's prices in product id order; `limit`, `cursor`."""
    query = await list_params(request, PriceListQuery)
    return json(await svc.list_prices(principal, book_id, query))


@router.put("/price-books/{book_id}/prices/{product_id}", response_model=PriceRead)
async def set_price(
    book_id: RecordId,
    product_id: RecordId,
    body: PriceSet,
    principal: CurrentPrincipal,
    svc: Service,
) -> Response:
    """Set (create or replace) the product's unit price in this book:
    `{"unit_price": "19.99", "is_active": true}`, in the book's currency."""
    price = await svc.set_price(principal, book_id, product_id, body)
    return record(price)


@router.delete("/price-books/{book_id}/prices/{product_id}", status_code=204)
async def delete_price(
    book_id: RecordId, product_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return no_content(await svc.delete_price(principal, book_id, product_id))


# -- products by id (after /price-books) -------------------------------------------
@router.get("/schema", response_model=ObjectSchema)
async def product_schema(principal: CurrentPrincipal, svc: Service) -> Response:
    """The product create body as JSON Schema with its live custom fields."""
    return json(await svc.product_schema(principal))


@router.get("/{product_id}", response_model=ProductRead)
async def get_product(product_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get_product(principal, product_id))


@router.patch("/{product_id}", response_model=ProductRead)
async def update_product(
    product_id: RecordId,
    body: ProductUpdate,
    principal: CurrentPrincipal,
    svc: Service,
    version: IfMatch,
) -> Response:
    return record(await svc.update_product(principal, product_id, body, version))


@router.delete("/{product_id}", status_code=204)
async def delete_product(
    product_id: RecordId, principal: CurrentPrincipal, svc: Service, version: IfMatch
) -> Response:
    """Soft delete: the SKU becomes free; the product drops out of quotes."""
    return no_content(await svc.delete_product(principal, product_id, version))


@router.post("/{product_id}/restore", response_model=ProductRead)
async def restore_product(
    product_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    return record(await svc.restore_product(principal, product_id))


@router.get(
    "/{product_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def product_history(
    product_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    query = await list_params(request, HistoryQuery)
    return json(await svc.product_history(principal, product_id, query))


@router.get("/{product_id}/prices", response_model=Page[PriceRead])
async def product_prices(
    product_id: RecordId, principal: CurrentPrincipal, svc: Service
) -> Response:
    """The product's price in every price book: one page, all of them."""
    return json(Page[PriceRead](data=await svc.product_prices(principal, product_id)))
