"""The stored embeddings of one shard server, held in memory by one actor per server,
so a semantic search multiplies the query with a matrix in RAM instead of reading
every embedding from PostgreSQL on every query (the first version did: 0.9 s at
60,000 records, and linear in them).

- **The database stays the truth.** A block (one kind of record on one logical shard)
  is read whole the first time it is asked for, then, before every answer, only the
  documents indexed since its last read (`indexed_at`, less `REFRESH_SLACK_S` or
  twice `max_replica_lag_s`, for a write whose transaction began before, and
  committed after, a later one, or that a standby had not replayed yet). So a
  document is found as soon as its index write committed, and a shard that moved
  here is read from here.
- **Exact.** The same float32 cosines as a full read; the candidates are then checked
  against their live records and the caller's scope (a deleted record, or one the
  caller may not read, is never found) and, when fewer survive than asked for, the
  candidates widen, up to `MAX_CANDIDATES`; past that the database answers over just
  the records the caller may see (`exact`): a scope that narrow holds few.
- **Cheap to hold.** No CPU is reserved (`num_cpus=0`, a sliver of `ai` so it lives
  on the AI nodes), and it is created by the first search that needs it.

    hits = ray.get(vector_index(server.name).nearest.remote(
        server, route, shards, query_vector, ["customer"], 10, {}))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ai import embed, search
from ai.embed import DIMENSIONS, MODEL_NAME
from ai.runtime import cluster_actor, read_on
from cluster.settings import get_settings
from deployments.ai import repo
from shards.ids import shard_of
from shards.routing import ServerSpec

REFRESH_SLACK_S = 10.0
LOAD_PAGE = 5_000
# Candidates checked against their records before the exact read takes over.
MAX_CANDIDATES = 4_096


class VectorBlock:
    """The embeddings of one kind of record on one logical shard: one unit-length
    float32 row per document (zeros for a document without an embedding by the
    current model, which the record check then drops)."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.matrix = np.zeros((0, DIMENSIONS), dtype=np.float32)
        self.size = 0
        self.rows: dict[int, int] = {}
        self.seen: datetime | None = None  # documents indexed up to here are held

    def upsert(self, rows: Sequence[tuple[int, bytes | None, str | None]]) -> None:
        """Each (id, embedding, model) as the row of its id, added or replaced."""
        if not rows:
            return
        new = sum(1 for record_id, _, _ in rows if record_id not in self.rows)
        if self.size + new > len(self.ids):
            capacity = max(self.size + new, 2 * len(self.ids), 1024)
            ids = np.zeros(capacity, dtype=np.int64)
            matrix = np.zeros((capacity, DIMENSIONS), dtype=np.float32)
            ids[: self.size], matrix[: self.size] = self.ids[: self.size], self.matrix[: self.size]
            self.ids, self.matrix = ids, matrix
        for record_id, blob, model in rows:
            row = self.rows.get(record_id)
            if row is None:
                row = self.rows[record_id] = self.size
                self.ids[row] = record_id
                self.size += 1
            if blob is None or model != MODEL_NAME:
                self.matrix[row] = 0.0
            else:
                self.matrix[row] = np.frombuffer(blob, dtype="<f4")

    def nearest(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The `k` rows closest to `query`: (id, cosine), best first (ties by id)."""
        n = self.size
        if n == 0 or k <= 0:
            return []
        scores = self.matrix[:n] @ query
        best = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        best = best[np.lexsort((self.ids[best], -scores[best]))]
        return [(int(self.ids[i]), float(scores[i])) for i in best]


def merged(parts: Sequence[list[tuple[int, float]]], k: int) -> list[tuple[int, float]]:
    """The best `k` of several blocks' `nearest` lists."""
    return sorted((hit for part in parts for hit in part), key=lambda h: (-h[1], h[0]))[:k]


class VectorIndex:
    """One shard server's blocks (`vector_index` makes it an actor)."""

    def __init__(self) -> None:
        self.blocks: dict[tuple[str, int], VectorBlock] = {}

    def nearest(
        self,
        server: ServerSpec,
        route: Mapping[int, int],
        shards: list[int],
        query_vector: Any,
        kinds: list[str],
        limit: int,
        owners: Mapping[str, list[int]] | None = None,
        min_lsn: int | None = None,
    ) -> list[dict[str, Any]]:
        """The `limit` documents of `kinds` on these logical shards of `server` closest
        in meaning to the query (its embedding, any shape holding DIMENSIONS numbers),
        each of a live record the caller may see (`owners`: per kind, the users whose
        records the caller's role reaches; absent: every record), read where the
        caller's writes are (`min_lsn`, `read_on`: a record the caller just deleted is
        not found)."""
        query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        hits: list[dict[str, Any]] = []
        for kind in kinds:
            blocks = self._current(server, route, kind, shards, min_lsn)
            scope = (owners or {}).get(kind)
            hits += self._checked(server, route, kind, shards, blocks, query, limit, scope, min_lsn)
        return search.merge_nearest([hits], limit)

    def _current(
        self,
        server: ServerSpec,
        route: Mapping[int, int],
        kind: str,
        shards: list[int],
        min_lsn: int | None,
    ) -> list[VectorBlock]:
        """The blocks of `kind` on `shards`, read whole the first time, then brought up
        to date with the documents indexed since."""
        database = repo.SOURCES[kind][0]
        fresh = [s for s in shards if (kind, s) not in self.blocks]
        if fresh:  # every fresh block's reads start after this moment
            (started,) = read_on(server, route, [(database, repo.database_now, ())], min_lsn)
        for shard in fresh:
            block = VectorBlock()
            block.seen = started
            after = 0
            while True:
                (page,) = read_on(
                    server, route,
                    [(database, repo.embeddings_page, (kind, shard, after, LOAD_PAGE))],
                    min_lsn,
                )  # fmt: skip
                block.upsert(page)
                if len(page) < LOAD_PAGE:
                    break
                after = page[-1][0]
            self.blocks[kind, shard] = block
        held = [s for s in shards if s not in fresh]
        if held:
            # Reads may come from a standby up to max_replica_lag_s behind.
            lag = get_settings().max_replica_lag_s
            slack = timedelta(seconds=max(REFRESH_SLACK_S, 2 * lag))
            since = [self.blocks[kind, s].seen - slack for s in held]  # type: ignore[operator]
            (changed,) = read_on(
                server, route, [(database, repo.embeddings_since, (kind, held, since))], min_lsn
            )
            by_shard: dict[int, list[tuple[int, bytes | None, str | None]]] = {}
            for record_id, blob, model, indexed_at in changed:
                shard = shard_of(record_id)
                by_shard.setdefault(shard, []).append((record_id, blob, model))
                block = self.blocks[kind, shard]
                block.seen = max(block.seen or indexed_at, indexed_at)
            for shard, rows in by_shard.items():
                self.blocks[kind, shard].upsert(rows)
        return [self.blocks[kind, s] for s in shards]

    def _checked(
        self,
        server: ServerSpec,
        route: Mapping[int, int],
        kind: str,
        shards: list[int],
        blocks: list[VectorBlock],
        query: np.ndarray,
        limit: int,
        owners: list[int] | None,
        min_lsn: int | None,
    ) -> list[dict[str, Any]]:
        """The best `limit` candidates whose records are live and in the caller's scope
        (`owners`; None: every record's), widening the candidates while too few
        survive, up to MAX_CANDIDATES; then the database's exact read, which for a
        scope that narrow reads few records. Exact either way: a visible record left
        out of the top k scores no higher than every candidate."""
        held = sum(b.size for b in blocks)
        if held == 0:
            return []
        k = min(held, max(2 * limit, 16))
        database = repo.SOURCES[kind][0]
        while True:
            candidates = merged([b.nearest(query, k) for b in blocks], k)
            ids = [i for i, _ in candidates]
            (visible,) = read_on(
                server, route,
                [(database, repo.visible_embedded, (kind, ids, MODEL_NAME, owners))],
                min_lsn,
            )  # fmt: skip
            titles = dict(visible)
            found = [search.hit(kind, i, titles[i], score) for i, score in candidates
                     if i in titles]  # fmt: skip
            if len(found) >= limit or k >= held:
                return found[:limit]
            if k >= MAX_CANDIDATES:
                return exact(server, route, shards, kind, query, limit, owners, min_lsn)
            k = min(held, 8 * k, MAX_CANDIDATES)


def exact(
    server: ServerSpec,
    route: Mapping[int, int],
    shards: list[int],
    kind: str,
    query: np.ndarray,
    limit: int,
    owners: list[int] | None,
    min_lsn: int | None = None,
) -> list[dict[str, Any]]:
    """The `limit` visible documents closest to `query`, every candidate read from the
    database (the caller's scope applied there, and where its writes are: `min_lsn`)."""
    database = repo.SOURCES[kind][0]
    (found,) = read_on(
        server, route,
        [(database, repo.embedded_documents, (kind, shards, MODEL_NAME, owners))],
        min_lsn,
    )  # fmt: skip
    rows = [(kind, record_id, title) for record_id, title, _ in found]
    return search.nearest(query, rows, embed.from_bytes([b for _, _, b in found]), limit)


_handles: dict[str, Any] = {}


def vector_index(server_name: str) -> Any:
    """The actor holding `server_name`'s vectors, created by the first caller."""
    handle = _handles.get(server_name)
    if handle is None:
        handle = _handles[server_name] = cluster_actor(
            VectorIndex,
            f"vectors-{server_name}",
            max_task_retries=1,  # a search is safe to repeat
            num_cpus=0,
            resources={"ai": 0.01},
        )
    return handle
