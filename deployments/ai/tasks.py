"""Ray tasks of the AI service (each submitted with `analytics.tasks.task_options()`:
a CPU share and a share of the `ai` resource).

- `train_leads(*shard_results)`: the gathered rows arrive as the results of the
  per-shard read tasks (Ray passes them task to task; they never go through the
  replica), and the fit runs here.
- `score_batch(...)`: reads one batch of open leads on their shard, scores them with
  the model (one copy in the object store for every batch), writes the scores back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray

from deployments.ai import advice, repo, search
from deployments.ai import model as lead_model
from deployments.analytics.tasks import TaskRuntime, read_on, runtime
from shards.manager import manager_handle
from shards.routing import ServerSpec


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
def search_shard(
    server: ServerSpec,
    route: Mapping[int, int],
    shard: int,
    query: str,
    kinds: list[str],
    limit: int,
    owners: Mapping[str, list[int]] | None = None,
    hidden: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """One shard's BM25 statistics and best candidates (deployments/ai/search.py), over
    the records the caller's read scope reaches (`owners`, per kind), without the
    fields their role may not see (`hidden`, per kind): a hidden e-mail must not be
    found by searching for it."""
    calls: list[Any] = []
    if "customer" in kinds or "contact" in kinds:
        calls.append(("customer", repo.customer_texts, (shard, kinds, owners)))
    if "ticket" in kinds:
        calls.append(("support", repo.ticket_texts, (shard, owners)))
    records = [r for rows in read_on(server, route, calls) for r in rows]
    for kind, _, row in records:
        for field in (hidden or {}).get(kind, ()):
            row.pop(field, None)
    found = search.shard_candidates(query, records, limit)
    found["runtime"] = runtime().model_dump()
    return found


@ray.remote(num_cpus=0.25, resources={"ai": 0.25}, max_retries=0)
def merge_search(limit: int, *partials: dict[str, Any]) -> list[dict[str, Any]]:
    return search.merge(list(partials), limit)


@ray.remote(num_cpus=0.25, resources={"ai": 0.25}, max_retries=0)
def summarize(parts: list[tuple[str, str]], n: int) -> dict[str, Any]:
    """An extractive summary of a ticket's thread (deployments/ai/advice.py)."""
    return advice.summarize(parts, n)
