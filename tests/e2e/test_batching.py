"""Micro-batched calls on the deployed application: many concurrent requests share
actor calls (CustomerService -> ShardManager), and each still gets exactly its own
answer: its record, its 404, its 403, its own write read back at once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shards import ids

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def test_concurrent_requests_each_get_their_own_answer(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    made = []
    for n in range(4):
        created = http.post("/v1/customers", headers=admin, json={"name": f"Storm {n}"})
        assert created.status_code == 201, created.text
        made.append(created.json())
    missing = [str(ids.make_id(ids.EPOCH_MS + 1 + n, n, n)) for n in range(8)]

    async def storm() -> None:
        async with httpx.AsyncClient(
            base_url=str(http.base_url),
            timeout=60,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        ) as client:

            async def read(customer: dict[str, str]) -> None:
                got = await client.get(f"/v1/customers/{customer['id']}", headers=admin)
                assert got.status_code == 200, got.text
                assert got.json()["name"] == customer["name"]
                assert got.headers["etag"] == f'"{customer["version"]}"'

            async def read_missing(customer_id: str) -> None:
                got = await client.get(f"/v1/customers/{customer_id}", headers=admin)
                assert got.status_code == 404, got.text
                assert got.headers["content-type"] == PROBLEM
                assert customer_id in got.json()["detail"]

            async def forbidden_write(customer: dict[str, str]) -> None:
                got = await client.patch(
                    f"/v1/customers/{customer['id']}", headers=viewer, json={"name": "No"}
                )
                assert got.status_code == 403, got.text

            async def write_then_read(n: int) -> None:
                name = f"Storm write {n}"
                created = await client.post("/v1/customers", headers=admin, json={"name": name})
                assert created.status_code == 201, created.text
                assert created.json()["name"] == name
                # Read-your-writes: visible to its writer at once, whatever the replica.
                again = await client.get(f"/v1/customers/{created.json()['id']}", headers=admin)
                assert again.status_code == 200 and again.json()["name"] == name

            await asyncio.gather(
                *(read(c) for c in made * 10),
                *(read_missing(m) for m in missing),
                *(forbidden_write(c) for c in made * 2),
                *(write_then_read(n) for n in range(12)),
            )

    asyncio.run(storm())
    for customer in made:  # the viewers' refused updates changed nothing
        assert (
            http.get(f"/v1/customers/{customer['id']}", headers=admin).json()["name"]
            == (customer["name"])
        )
