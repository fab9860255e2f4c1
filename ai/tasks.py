"""Ray tasks of the AI service (each submitted with `analytics.tasks.task_options()`:
a CPU share and a share of the `ai` resource).

- `train_leads(*shard_results)`: the gathered rows arrive as the results of the
  per-shard read tasks (Ray passes them task to task; they never go through the
  replica), and the fit runs here.
- `score_batch(...)`: reads one batch of open leads on their shard, scores them with
  the model (one copy in the object store for every batch), writes the scores back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ray

from ai import advice, embed, search
from ai import model as lead_model
from ai.runtime import TaskRuntime, read_on, runtime
from deployments.ai import repo
from shards.manager import manager_handle
from shards.routing import ServerSpec

log = logging.getLogger("nextflow.ai")


@ray.remote(num_cpus=0.25, resources={"ai": 0.25}, max_retries=0)
def train_leads(*shard_results: tuple[list[Any], TaskRuntime]) -> tuple[Any, TaskRuntime]:
    rows = [row for values, _ in shard_results for row in values[0]]
    return lead_model.train(rows), runtime()


@ray.remote(num_cpus=0.25, resources={"ai": 0.25}, max_retries=0)
def score_batch(
    server: ServerSpec,
    route: Mapping[int, int],
    shard: int,
    lead_ids: list[int],
    model: bytes,
    model_version: int,
) -> tuple[int, TaskRuntime]:
    """Score `lead_ids` (all of logical shard `shard`); returns how many were written."""
    (leads,) = read_on(server, route, [("marketing", repo.leads_by_id, (shard, lead_ids))])
    fitted = lead_model.load(model)
    scores = list(zip((int(r["id"]) for r in leads), lead_model.score(fitted, leads), strict=True))
    written, _ = ray.get(
        manager_handle(server).run.remote(
            "marketing", repo.write_scores, (shard, scores, model_version), {}, False, None,
            route=route,
        )
    )  # fmt: skip
    return int(written), runtime()


@ray.remote(num_cpus=0.25, resources={"ai": 0.25}, max_retries=0)
def index_records(
    server: ServerSpec,
    route: Mapping[int, int],
    shards: list[int],
    kind: str,
    ids: list[int] | None = None,
    after: int = 0,
    limit: int = 500,
    embeddings: bool = False,
) -> dict[str, Any]:
    """(Re)index records of logical shards of one server (deployments/ai/indexing.py):
    `ids`, or the next `limit` records after id `after` of the one shard given. Reads
    them on the primary (the state just written), builds their entries, embeds them
    when `embeddings`, writes the documents back through the same ShardManager.
    Returns counts and the last id."""
    database = repo.SOURCES[kind][0]
    manager = manager_handle(server)
    rows, _ = ray.get(
        manager.run.remote(database, repo.index_sources, (kind, shards, ids, after, limit), {},
                           False, None, route=route)
    )  # fmt: skip
    entries = [search.entry(kind, r) for r in rows]
    vectors = None
    if embeddings and entries:
        try:
            vectors = embed.encode([e.text for e in entries])
        except Exception as exc:  # the words are indexed anyway; the backlog embeds later
            log.warning("embedding %d %s records failed: %r", len(entries), kind, exc)
    docs = [
        repo.Document(
            id=int(r["id"]), title=e.title, title_words=e.title_words, terms=" ".join(e.terms),
            email_terms=" ".join(e.email_terms), phone_terms=" ".join(e.phone_terms),
            length=e.length, updated_at=r["updated_at"],
            embedding=None if vectors is None else embed.to_bytes(vectors[n]),
            model=None if vectors is None else embed.MODEL_NAME,
        )
        for n, (r, e) in enumerate(zip(rows, entries, strict=True))
    ]  # fmt: skip
    written, _ = ray.get(
        manager.run.remote(database, repo.store_documents, (kind, docs), {}, False, None,
                           route=route)
    )  # fmt: skip
    return {
        "indexed": len(docs),
        "written": int(written),
        "last_id": int(rows[-1]["id"]) if rows else None,
        "embedded": vectors is not None,
    }


def _hidden(kind: str, hidden: Mapping[str, list[str]] | None) -> set[str]:
    return set((hidden or {}).get(kind, ()))


@ray.remote(num_cpus=0.25, resources={"ai": 0.25}, max_retries=0)
def lexical_server(
    server: ServerSpec,
    route: Mapping[int, int],
    shards: list[int],
    query: str,
    kinds: list[str],
    limit: int,
    owners: Mapping[str, list[int]] | None = None,
    hidden: Mapping[str, list[str]] | None = None,
    min_lsn: int | None = None,
    near: bool = True,
) -> dict[str, Any]:
    """One server's BM25 statistics and best candidates from the stored index of its
    logical shards `shards`, over the records the caller's read scope reaches
    (`owners`, per kind), matching only the fields its role may see (`hidden`, per
    kind: a hidden e-mail is not found by searching for it), read where the caller's
    writes are (`min_lsn`, `read_on`). `near`: words a query word begins and words
    one typo away match too (ai/search.py `match_weight`)."""
    words = search.tokens(query)
    terms = search.query_terms(words)
    near_words = search.fuzzy_terms(terms) if near else []
    calls: list[Any] = [
        (repo.SOURCES[kind][0], repo.lexical_matches,
         (kind, shards, terms, (owners or {}).get(kind),
          "email" not in _hidden(kind, hidden), "phone" not in _hidden(kind, hidden), near_words,
          search.TYPO_MIN))
        for kind in kinds
    ]  # fmt: skip
    docs = length = 0
    matches: list[Any] = []
    for n_docs, n_length, found in read_on(server, route, calls, min_lsn):
        docs += n_docs
        length += n_length
        matches += found
    partial = search.shard_candidates(words, docs, length, matches, limit, near)
    partial["runtime"] = runtime().model_dump()
    return partial


@ray.remote(num_cpus=0.25, resources={"ai": 0.25}, max_retries=0)
def summarize(parts: list[tuple[str, str]], n: int) -> dict[str, Any]:
    """An extractive summary of a ticket's thread (ai/advice.py)."""
    return advice.summarize(parts, n)
