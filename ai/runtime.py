"""The Ray tasks behind analytics and AI: one task per logical shard (or batch), asking
for a slice of the custom resource `ai` (declared by the local stack's head node and
by the KubeRay `ai` worker group) and a small CPU share, so they run beside the Serve
replicas on a small machine and only on nodes meant for them on a cluster.

A task reads through its shard's ShardManager actor, as every service does, with the
route of the map the caller planned by: a shard that moved meanwhile is refused
(`StaleShardMap`/`ShardMoved`) before anything runs, and the caller re-plans.

    ref = shard_reads.options(**task_options()).remote(server, {3: 7}, [
        ("sales", repo.pipeline_by_stage, (3, filters)),
    ])
    values, runtime = ray.get(ref)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import ray
from pydantic import BaseModel

from cluster.settings import get_settings
from shards.manager import NAMESPACE, manager_handle
from shards.routing import ServerSpec

Call = tuple[str, Callable[..., Awaitable[Any]], tuple[Any, ...]]


class TaskRuntime(BaseModel):
    """Where and with what a task ran (reports return it, tests check it)."""

    task_id: str
    node_id: str
    worker_pid: int
    resources: dict[str, float]


def task_options(cpus: float | None = None, ai: float | None = None) -> dict[str, Any]:
    """`.options()` for every AI/analytics task: a CPU share and a share of `ai`."""
    s = get_settings()
    return {
        "num_cpus": s.ai_task_num_cpus if cpus is None else cpus,
        "resources": {"ai": s.ai_task_resource if ai is None else ai},
    }


def cluster_actor(cls: type, name: str, **options: Any) -> Any:
    """The cluster's one detached actor `name` of `cls` (namespace `nextflow`), found,
    or created by the first caller; restarted whenever it dies. `options`: the rest of
    its `.options()` (resources, retries)."""
    return (
        ray.remote(cls)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            **options,
        )  # fmt: skip
        .remote()
    )


def runtime() -> TaskRuntime:
    import os

    ctx = ray.get_runtime_context()
    return TaskRuntime(
        task_id=ctx.get_task_id() or "",
        node_id=ctx.get_node_id(),
        worker_pid=os.getpid(),
        resources={k: float(v) for k, v in ctx.get_assigned_resources().items()},  # type: ignore[no-untyped-call]
    )


def read_on(
    server: ServerSpec,
    route: Mapping[int, int],
    calls: Sequence[Call],
    min_lsn: int | None = None,
) -> list[Any]:
    """Run read-only repo calls on `server`'s manager, one transaction each, in order.
    `min_lsn`: the caller's read-your-writes position on that server
    (`shards.consistency.min_lsn_for`), so that a standby answers only once it has
    replayed the caller's writes; None: any standby in bounds."""
    manager = manager_handle(server)
    values = []
    for database, fn, args in calls:
        value, _ = ray.get(manager.run.remote(database, fn, args, {}, True, min_lsn, route=route))
        values.append(value)
    return values


# Options are always given at submission (`task_options()`); these are the defaults.
@ray.remote(num_cpus=0.25, resources={"ai": 0.25}, max_retries=0)
def shard_reads(
    server: ServerSpec, route: Mapping[int, int], calls: Sequence[Call]
) -> tuple[list[Any], TaskRuntime]:
    """Read `calls` on one server for one logical shard's route."""
    return read_on(server, route, calls), runtime()
