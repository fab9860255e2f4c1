"""The bare baseline for `bench/get_customer.py`: one uvicorn process, FastAPI and an
asyncpg pool reading the same customer row from the same shard server, with no Ray,
no auth and no rate limit. The gap to the full stack is what those layers cost.

Run by the benchmark as `uvicorn bare_app:app --app-dir bench`; it reads
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
from starlette.responses import Response

# The columns the Customer service selects (deployments/customer/repo.py).
_SELECT = (
    "SELECT id, name, email, phone, website, industry, tags, custom_fields, owner_id,"
    " version, created_at, updated_at FROM customers WHERE id = $1 AND deleted_at IS NULL"
)
_ID_FIELDS = ("id", "owner_id")


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
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=_lifespan)


@app.get("/customers/{customer_id}")
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
