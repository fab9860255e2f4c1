"""The search index: kept up to date from the event stream, rebuilt by a job, read by
`GET /v1/ai/search`. Every piece of work is a Ray task (ai/tasks.py); this
module plans, submits and gathers.

- **Stored with the records.** Each record's document (`search_documents`, migration
  `_sharded/0006`) lives on its shard, in its record's database, and moves with it.
- **Kept fresh by events.** Every AIService replica is a member of the consumer group
  `ai`; the customer, contact and ticket events of one read of the stream (up to
  200, gathered for up to `ai_index_linger_ms`, and each batch of a bulk import) make
  one `index_records` task per shard server and kind read those records on their
  primary and write their documents.
  The task reads the record as it is now, not the event's copy, so events handled
  twice or out of order leave the newest state, and a document indexed from an
  older state never replaces a newer one (`source_updated_at`). Delivery is the
  stream's: at-least-once, so nothing written is left unindexed.
- **Bulk writes later, after the import.** A bulk import's batches are not indexed
  when their events arrive: their ids wait in a Redis list (`IMPORTED`), and the
  backlog (`embed_backlog`), which one AIService replica at a time works through,
  indexes them (words and embeddings), indexes again the documents an older
  tokenizer made, and embeds any document still without an embedding, **but not
  while an import runs**: indexing costs about as much CPU per
  row as the import itself, and on shared cores it halved the import's rate
  (measured: 0.24x raw COPY with indexing alongside). Other writes' events are
  indexed at once, import or not.
- **Rebuilt by a job** (`POST /v1/ai/search/reindex`): every live record, shard by
  shard in pages of `ai_index_batch_size`, for a new model, a changed tokenizer, or
  data written before this index existed.
- **Searched** per shard server, over the logical shards it holds, merged here
  (search.py: re-scoring a few dozen candidates, less work than another task hop):
  words by one task per server (BM25 on the GIN-indexed words), meaning by the
  server's vector actor (ai/vectors.py: the stored embeddings held in memory, kept
  current from `indexed_at`, candidates checked against their live records).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis

from ai import embed, search
from ai.fanout import FanOut, by_server, planned_once_more_if_stale
from ai.runtime import task_options
from ai.search import KINDS
from ai.tasks import index_records, lexical_server
from ai.vectors import vector_index
from deployments._kit.events import Event
from deployments.ai import repo
from deployments.ai.runs import JobRun
from shards import consistency
from shards.client import Shards
from shards.ids import shard_of
from shards.routing import ShardMap

log = logging.getLogger("nextflow.ai")
MODES = ("hybrid", "semantic", "lexical")
# Imported records waiting for the backlog: one entry per `customer.imported` event,
# {"kind": ..., "ids": [...]}, oldest first.
IMPORTED = "nextflow:ai:imported"
# Event type -> the kind of record whose document it changes.
INDEXED_EVENTS: Mapping[str, str] = {
    "customer.created": "customer",
    "customer.updated": "customer",
    "customer.imported": "customer",
    "contact.created": "contact",
    "contact.updated": "contact",
    "ticket.created": "ticket",
    "ticket.updated": "ticket",
}


def event_records(event: Event) -> tuple[str, list[int]] | None:
    """(kind, record ids) an event asks to index, or None."""
    kind = INDEXED_EVENTS.get(event.type)
    if kind is None:
        return None
    if event.type == "customer.imported":
        ids = [int(i) for key in ("created", "updated") for i in event.data.get(key) or ()]
        return kind, ids
    return kind, [int(event.aggregate_id)]


class SearchIndex:
    def __init__(
        self,
        shards: Shards,
        batch_size: int,
        in_flight: int,
        redis: aioredis.Redis,
        bulk_writes_running: Callable[[], Awaitable[bool]],
    ) -> None:
        """`shards`: any sharded database's client (only its shard map is used);
        `bulk_writes_running`: whether the backlog should wait (an import runs)."""
        self.shards = shards
        self.batch_size = batch_size
        self.in_flight = in_flight
        self.redis = redis
        self.bulk_writes_running = bulk_writes_running

    @staticmethod
    def embeddings() -> bool:
        return embed.available()

    # -- indexing -----------------------------------------------------------------------
    async def handle(self, events: list[Event]) -> None:
        """Index what a batch of events changed (the consumer group `ai`'s handler):
        each record once, a task per logical shard and kind. A bulk import's records
        are queued for the backlog instead (before the events are acknowledged, so
        none is lost; one queued twice is indexed twice, to the same document)."""
        wanted: dict[str, set[int]] = defaultdict(set)
        imported = []
        for event in events:
            found = event_records(event)
            if found is None:
                continue
            kind, ids = found
            if event.type == "customer.imported":
                imported.append(orjson.dumps({"kind": kind, "ids": ids}))
            else:
                wanted[kind].update(ids)
        if imported:
            await self.redis.rpush(IMPORTED, *imported)
        await asyncio.gather(*(self.index(kind, ids) for kind, ids in wanted.items() if ids))

    async def index(self, kind: str, ids: Iterable[int], embeddings: bool = True) -> int:
        """Index these records now (each once, on its shard), with their embeddings when
        `embeddings` and they are on; how many documents were written."""
        embeddings = embeddings and self.embeddings()
        seen = self.shards.map
        by_server: dict[str, list[int]] = defaultdict(list)
        for record_id in sorted(set(ids)):
            by_server[seen.server_for_shard(shard_of(record_id)).name].append(record_id)
        batches = [
            chunk[i : i + self.batch_size]
            for chunk in by_server.values()
            for i in range(0, len(chunk), self.batch_size)
        ]
        results = await asyncio.gather(
            *(self._index_ids(kind, batch, embeddings=embeddings) for batch in batches)
        )
        return sum(results)

    async def _index_ids(self, kind: str, ids: list[int], *, embeddings: bool) -> int:
        """Index records that were on one server: one task for all of them (each task
        costs a Ray submission, two manager calls and an embedding call, so a server's
        records go together, whatever logical shards they are on), or one per logical
        shard when the map changed under them (a shard moved to another server)."""
        shards = sorted({shard_of(i) for i in ids})

        async def submit(seen: ShardMap) -> int:
            if len({seen.server_for_shard(s).name for s in shards}) > 1:
                split = await asyncio.gather(
                    *(
                        self._index_batch(kind, shard, [i for i in ids if shard_of(i) == shard],
                                          embeddings=embeddings)
                        for shard in shards
                    )
                )  # fmt: skip
                return sum(int(r["written"]) for r in split)
            result: dict[str, Any] = await index_records.options(**task_options()).remote(
                seen.server_for_shard(shards[0]), seen.route(shards), shards, kind, ids,
                0, self.batch_size, embeddings,
            )  # fmt: skip
            return int(result["written"])

        return await planned_once_more_if_stale(self.shards, submit)

    async def _index_batch(
        self,
        kind: str,
        shard: int,
        ids: list[int] | None,
        after: int = 0,
        *,
        embeddings: bool,
        run: JobRun | None = None,
    ) -> dict[str, Any]:
        """One task; planned again on a fresh map when the shard moved meanwhile. A
        job's task is in its `run`, so cancelling the job cancels it where it is."""

        async def submit(seen: ShardMap) -> dict[str, Any]:
            ref = index_records.options(**task_options()).remote(
                seen.server_for_shard(shard), seen.route([shard]), [shard], kind, ids,
                after, self.batch_size, embeddings,
            )  # fmt: skip
            if run is not None:
                run.refs.add(ref)
            try:
                result: dict[str, Any] = await ref
            finally:
                if run is not None:
                    run.refs.discard(ref)
            return result

        return await planned_once_more_if_stale(self.shards, submit)

    async def rebuild(self, run: JobRun) -> dict[str, Any]:
        """Index every live record of every kind on every logical shard (a job)."""
        fanout = FanOut(self.shards)
        run.fanouts.append(fanout)
        counted = await fanout.each_shard(
            lambda s: [(repo.SOURCES[k][0], repo.count_sources, (k, s)) for k in KINDS]
        )
        run.total = sum(sum(r.values) for r in counted)
        run.check()
        work = [(r.shard, kind) for r in counted for kind in KINDS]
        slots = asyncio.Semaphore(self.in_flight)
        written = 0

        async def walk(shard: int, kind: str) -> None:
            nonlocal written
            after = 0
            while True:
                async with slots:
                    run.check()
                    page = await self._index_batch(
                        kind, shard, None, after, embeddings=self.embeddings(), run=run
                    )
                run.done += int(page["indexed"])
                written += int(page["written"])
                if page["last_id"] is None or page["indexed"] < self.batch_size:
                    return
                after = int(page["last_id"])

        walks = [asyncio.ensure_future(walk(s, k)) for s, k in work]
        try:
            await asyncio.gather(*walks)
        finally:
            for w in walks:
                w.cancel()
        return {
            "indexed": run.done,
            "written": written,
            "embeddings": embed.MODEL_NAME if self.embeddings() else None,
        }

    async def embed_backlog(self) -> int:
        """One round of the backlog, unless a bulk write runs: the oldest imported
        batch waiting (indexed, with embeddings when they are on), or else up to a
        batch of documents without an embedding per logical shard and kind. Returns
        how many records it worked on (0: nothing waits, or an import runs)."""
        if await self.bulk_writes_running():
            return 0
        entry = await self.redis.lindex(IMPORTED, 0)
        if entry is not None:
            item = orjson.loads(entry)
            await self.index(item["kind"], item["ids"])
            # That entry, not "the first": a round run by hand may race the lease holder's.
            await self.redis.lrem(IMPORTED, 1, entry)  # type: ignore[arg-type]  # bytes work
            return max(len(item["ids"]), 1)
        # Documents an older tokenizer made (no `words`: migration _sharded/0010).
        refolded = await self._index_waiting(repo.unfolded_ids, embeddings=self.embeddings())
        if refolded or not self.embeddings():
            return refolded
        return await self._index_waiting(repo.unembedded_ids, embeddings=True)

    async def _index_waiting(self, waiting_ids: Any, *, embeddings: bool) -> int:
        """Index up to a batch of the documents `waiting_ids` names per logical shard
        and kind; how many were written."""
        waiting = await FanOut(self.shards).each_shard(
            lambda s: [(repo.SOURCES[k][0], waiting_ids, (k, s, self.batch_size)) for k in KINDS]
        )
        slots = asyncio.Semaphore(self.in_flight)

        async def embed_batch(kind: str, shard: int, ids: list[int]) -> int:
            async with slots:
                page = await self._index_batch(kind, shard, ids, embeddings=embeddings)
            return int(page["written"])

        done = await asyncio.gather(
            *(
                embed_batch(kind, r.shard, ids)
                for r in waiting
                for kind, ids in zip(KINDS, r.values, strict=True)
                if ids
            )
        )
        return sum(done)

    # -- searching ----------------------------------------------------------------------
    async def search(
        self,
        query: str,
        kinds: list[str],
        limit: int,
        mode: str,
        owners: Mapping[str, list[int]],
        hidden: Mapping[str, list[str]],
        near: bool = True,
    ) -> list[dict[str, Any]]:
        """The best `limit` records for `query` by `mode` (hybrid, semantic, lexical);
        `near`: words a query word begins and words one typo away match too."""
        # Fusing needs each list deeper than the answer.
        depth = limit * 2 if mode == "hybrid" else limit
        vector = embed.embedder().encode.remote([query]) if mode != "lexical" else None

        async def submit(seen: ShardMap) -> list[Any]:
            # Per shard server and mode, over the logical shards it holds: its indexes
            # narrow the read to the matches, and fewer calls answer sooner.
            # Each server's reads wait for the caller's writes there (read-your-writes:
            # a record the caller just deleted or changed is not found as it was).
            groups = by_server(seen, range(seen.logical_shards))
            lexical = [
                lexical_server.options(**task_options()).remote(
                    server, seen.route(group), group, query, kinds, depth, owners, hidden,
                    consistency.min_lsn_for(server.name), near,
                )
                for server, group in groups
                if mode in ("hybrid", "lexical")
            ]  # fmt: skip
            semantic = [
                vector_index(server.name).nearest.remote(
                    server, seen.route(group), group, vector, kinds, depth, owners,
                    consistency.min_lsn_for(server.name),
                )
                for server, group in groups
                if vector is not None
            ]  # fmt: skip
            parts = await asyncio.gather(*lexical, *semantic)
            return [parts[: len(lexical)] if lexical else None,
                    parts[len(lexical) :] if semantic else None]  # fmt: skip

        lexical, semantic = await planned_once_more_if_stale(self.shards, submit)
        # Merged here: re-scoring a few dozen candidates is less work than a task hop.
        words = search.merge(list(lexical), depth) if lexical else []
        meaning = search.merge_nearest(semantic, depth) if semantic else []
        if mode == "hybrid":
            return search.fuse([words, meaning], limit)
        return (words if mode == "lexical" else meaning)[:limit]
