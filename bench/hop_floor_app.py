"""The apps `bench/hop_floor.py` measures: the request path of the stack with nothing
in it but its hops, and the bare baseline, both answering the same row.

Serve (`build(dsn)`): an ingress deployment (FastAPI), a service deployment called through a
Serve handle, and an async actor called from the service, as the stack's Gateway →
CustomerService → ShardManager. None of them authenticates, rate-limits, validates or
routes: each path answers as soon as its last hop has the row.

    /h0/{id}      the ingress answers                       (proxy → Gateway)
    /h1/{id}      ingress → service                         (+ a Serve handle call)
    /h2/{id}      ingress → service → actor                 (+ an actor call)
    /h2db/{id}    ingress → service → actor → PostgreSQL    (+ the SELECT)
    /h2b/{n}/{id}     /h2 with both hops micro-batched (`cluster.batching.Batcher`),
                      each caller keeping up to n batches out at once
    /h2bdb/{n}/{id}   /h2db so
    /a1db/{id}    ingress → actor → PostgreSQL              (one hop: the layout where
                  every service's ingress calls its shard managers itself)

Bare (`bare`): uvicorn + FastAPI in one process, `/noop/{id}` (the row from memory) and
`/db/{id}` (the row from PostgreSQL through an asyncpg pool).

The row has a customer's columns, in table `floor` (made by `bench/hop_floor.py`) of the
database `build(dsn)` and `FLOOR_DSN` (the bare app) name; the actor and the bare app
each hold a pool of 8.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import ray
from fastapi import FastAPI
from ray import serve

from cluster.batching import Batcher, Outcome, run_each

ROW: dict[str, Any] = {
    "id": 1, "name": "Customer 1", "email": "c1@example.com", "phone": "+49 30 1234567",
    "website": None, "industry": "energy", "tags": ["vip"], "custom_fields": {},
    "owner_id": 7, "version": 1, "created_at": "2026-11-30T00:00:00+00:00",
    "updated_at": "2026-11-30T00:00:00+00:00",
}  # fmt: skip
SELECT = "SELECT id, name, email, phone, website, industry, tags, owner_id FROM floor WHERE id = $1"
POOL = 8


async def _pool(dsn: str) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=POOL, max_size=POOL)


async def _read(pool: asyncpg.Pool, item: int, select: str = SELECT) -> dict[str, Any]:
    row = await pool.fetchrow(select, item)
    return dict(row) if row is not None else {}


# Replicas and the actor import this module as `bench.hop_floor_app`, from the checkout.
RUNTIME_ENV = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}}


def _batcher(
    batchers: dict[int, Batcher[Any]], send: Any, target: str, in_flight: int
) -> Batcher[Any]:
    """The caller's batcher that keeps `in_flight` batches out (1 to 64). Above the
    deployments: Serve pickles a deployment class, with the globals it names, when it
    is decorated."""
    in_flight = min(max(in_flight, 1), 64)
    if in_flight not in batchers:
        batchers[in_flight] = Batcher(send, target=target, max_in_flight=in_flight)
    return batchers[in_flight]


@ray.remote(num_cpus=0)
class Store:
    """The ShardManager's place: an async actor that owns the connections."""

    def __init__(self, dsn: str, select: str = SELECT) -> None:
        self._dsn = dsn
        self._select = select
        self._pool: asyncpg.Pool | None = None

    async def get(self, item: int, db: bool) -> dict[str, Any]:
        if not db:
            return dict(ROW, id=item)
        if self._pool is None:
            self._pool = await _pool(self._dsn)
        return await _read(self._pool, item, self._select)

    async def get_many(self, calls: Sequence[tuple[int, bool]]) -> list[Outcome]:
        return await run_each(self.get(item, db) for item, db in calls)


def store(dsn: str, select: str) -> Any:
    """The one Store actor (found by name once made)."""
    return Store.options(  # type: ignore[attr-defined]
        name="floor-store",
        get_if_exists=True,
        lifetime="detached",
        runtime_env=RUNTIME_ENV,
    ).remote(dsn, select)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=200)
class Service:
    """CustomerService's place: called through a Serve handle, calls the actor."""

    def __init__(self, dsn: str, select: str = SELECT) -> None:
        self._store = store(dsn, select)
        self._batchers: dict[int, Batcher[tuple[int, bool]]] = {}

    async def _send(self, calls: list[tuple[int, bool]]) -> list[Outcome]:
        return await self._store.get_many.remote(calls)  # type: ignore[no-any-return]

    async def get(self, item: int, actor: bool, db: bool, in_flight: int = 0) -> dict[str, Any]:
        """`in_flight` > 0: through a batcher sending that many batches at once."""
        if not actor:
            return dict(ROW, id=item)
        if in_flight:
            batcher = _batcher(self._batchers, self._send, "floor-store", in_flight)
            return await batcher.call((item, db))  # type: ignore[no-any-return]
        return await self._store.get.remote(item, db)  # type: ignore[no-any-return]

    async def get_many(self, calls: Sequence[tuple[int, bool, int]]) -> list[Outcome]:
        return await run_each(self.get(item, True, db, n) for item, db, n in calls)


ingress_api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=200)
@serve.ingress(ingress_api)
class Ingress:
    """The Gateway's place: answers HTTP, calls the service through a handle."""

    def __init__(self, service: Any, dsn: str, select: str = SELECT) -> None:
        self._service = service
        self._store = store(dsn, select)
        self._batchers: dict[int, Batcher[tuple[int, bool, int]]] = {}

    async def _send(self, calls: list[tuple[int, bool, int]]) -> list[Outcome]:
        return await self._service.get_many.remote(calls)  # type: ignore[no-any-return]

    async def _batched(self, item: int, db: bool, in_flight: int) -> dict[str, Any]:
        batcher = _batcher(self._batchers, self._send, "floor-service", in_flight)
        return await batcher.call((item, db, in_flight))  # type: ignore[no-any-return]

    @ingress_api.get("/h0/{item}")
    async def h0(self, item: int) -> dict[str, Any]:
        return dict(ROW, id=item)

    @ingress_api.get("/h1/{item}")
    async def h1(self, item: int) -> dict[str, Any]:
        return await self._service.get.remote(item, False, False)  # type: ignore[no-any-return]

    @ingress_api.get("/h2/{item}")
    async def h2(self, item: int) -> dict[str, Any]:
        return await self._service.get.remote(item, True, False)  # type: ignore[no-any-return]

    @ingress_api.get("/h2db/{item}")
    async def h2db(self, item: int) -> dict[str, Any]:
        return await self._service.get.remote(item, True, True)  # type: ignore[no-any-return]

    @ingress_api.get("/a1db/{item}")
    async def a1db(self, item: int) -> dict[str, Any]:
        return await self._store.get.remote(item, True)  # type: ignore[no-any-return]

    @ingress_api.get("/h2b/{in_flight}/{item}")
    async def h2b(self, in_flight: int, item: int) -> dict[str, Any]:
        return await self._batched(item, False, in_flight)

    @ingress_api.get("/h2bdb/{in_flight}/{item}")
    async def h2bdb(self, in_flight: int, item: int) -> dict[str, Any]:
        return await self._batched(item, True, in_flight)


def build(dsn: str, select: str = SELECT) -> Any:
    """`select`: the statement reading one row by id (default: table `floor`)."""
    options = {"num_cpus": 0.1, "runtime_env": RUNTIME_ENV}
    service = Service.options(ray_actor_options=options).bind(dsn, select)
    return Ingress.options(ray_actor_options=options).bind(service, dsn, select)


@asynccontextmanager
async def _lifespan(api: FastAPI) -> AsyncIterator[None]:
    api.state.pool = await _pool(os.environ["FLOOR_DSN"])
    yield
    await api.state.pool.close()


bare = FastAPI(lifespan=_lifespan)


@bare.get("/noop/{item}")
async def noop(item: int) -> dict[str, Any]:
    return dict(ROW, id=item)


@bare.get("/db/{item}")
async def db(item: int) -> dict[str, Any]:
    return await _read(bare.state.pool, item)
