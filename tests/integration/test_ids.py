"""Global ids (`nextflow_id()`, layout in shards/ids.py) are never made twice, also
when several backends make thousands at once on a busy machine."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest

from cluster.settings import Settings
from shards import ids

pytestmark = pytest.mark.integration
BACKENDS = 5
CALLS = 20
IDS_PER_CALL = 4000


@pytest.mark.asyncio
async def test_concurrent_backends_never_make_the_same_id(
    stack: object, stack_settings: Settings
) -> None:
    """Five backends each make 80,000 ids, a call at a time for a rotating logical shard
    (a bulk import's pattern), with `nextflow_id()` and `nextflow_ids()` in turn. The
    function before migration 0005 made several equal ids in such a run on 2 cores: a
    backend descheduled between taking its sequence value and reading the clock."""
    s = stack_settings
    dsn = s.dsn_for(s.host, s.shard_base_port, "customer")
    conns = [await asyncpg.connect(dsn) for _ in range(BACKENDS)]
    made: list[int] = []

    async def backend(k: int) -> None:
        for call in range(CALLS):
            shard = (call * BACKENDS + k) % 10
            # One id per call of nextflow_id(), and the bulk nextflow_ids(), in turn.
            query = (
                "SELECT array_agg(nextflow_id($1)) FROM generate_series(1, $2)"
                if call % 2
                else "SELECT nextflow_ids($1, $2)"
            )
            made.extend(await conns[k].fetchval(query, shard, IDS_PER_CALL))

    try:
        await asyncio.gather(*(backend(k) for k in range(BACKENDS)))
    finally:
        for conn in conns:
            await conn.close()
    repeated = [i for i, n in Counter(made).items() if n > 1]
    assert len(made) == BACKENDS * CALLS * IDS_PER_CALL
    assert not repeated, [(i, ids.shard_of(i)) for i in repeated[:5]]
    assert {ids.shard_of(i) for i in made} == set(range(10))
