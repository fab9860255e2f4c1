"""The bare baseline for `bench/get_customer.py` and `bench/run`: one uvicorn process,
FastAPI and an asyncpg pool reading the same customer row from the same shard server
(and creating customers there), with no Ray, no auth and no rate limit. The gap to the
full stack is what those layers cost.

Run by the benchmarks as `uvicorn bare_app:app --app-dir bench`; it reads
`BARE_DSN` (the shard server's `customer` database) and `BARE_POOL_SIZE`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from starlette.responses import Response

# The columns the Customer service selects (deployments/customer/repo.py).
_SELECT = (
    "SELECT id, name, email, phone, website, industry, tags, custom_fields, owner_id,"
    " version, created_at, updated_at FROM customers WHERE id = $1 AND deleted_at IS NULL"
)
_ID_FIELDS = ("id", "owner_id")
_INSERT = (
    "INSERT INTO customers (id, name, email, tags) VALUES (nextflow_id($1), $2, $3, $4)"
    " RETURNING id, name, email, phone, website, industry, tags, custom_fields, owner_id,"
    " version, created_at, updated_at"
)


class _NewCustomer(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = None
    tags: list[str] = Field(default_factory=list)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb decoded as the ShardManager does, so both targets do the same work.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
        format="text",
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("BARE_POOL_SIZE", "8"))
    app.state.pool = await asyncpg.create_pool(
        os.environ["BARE_DSN"], min_size=size, max_size=size, init=_init_connection
    )
    # A logical shard this server owns, for the ids of created customers.
    app.state.shard = (
        await app.state.pool.fetchval("SELECT (id >> 12) & 1023 FROM customers LIMIT 1") or 0
    )
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=_lifespan)


@app.get("/v1/customers/{customer_id}")
async def get_customer(customer_id: int) -> Response:
    pool: asyncpg.Pool = app.state.pool
    row = await pool.fetchrow(_SELECT, customer_id)
    if row is None:
        raise HTTPException(404, "customer not found")
    body: dict[str, Any] = dict(row)
    for field in _ID_FIELDS:
        if body[field] is not None:
            body[field] = str(body[field])  # 64-bit ids as strings, like the API
    return Response(orjson.dumps(body), media_type="application/json")


@app.post("/v1/customers", status_code=201)
async def create_customer(body: _NewCustomer) -> Response:
    pool: asyncpg.Pool = app.state.pool
    row = await pool.fetchrow(_INSERT, app.state.shard, body.name, body.email, body.tags)
    created: dict[str, Any] = dict(row)
    for field in _ID_FIELDS:
        if created[field] is not None:
            created[field] = str(created[field])
    return Response(orjson.dumps(created), status_code=201, media_type="application/json")
