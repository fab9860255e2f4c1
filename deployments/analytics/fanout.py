"""Fan a read out as one Ray task per logical shard and gather the results.

The plan is the shard map this replica holds (`Shards.map`): each task gets its
shard's server and the map version it was planned by. A task refused because the
shard moved (StaleShardMap) is planned again on the fresh map, once. The refs of the
tasks in flight are kept so a job can cancel them (`cancel()`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayTaskError, TaskCancelledError

from deployments.analytics.tasks import Call, TaskRuntime, shard_reads, task_options
from shards.client import Shards
from shards.errors import StaleShardMap


@dataclass
class ShardResult:
    shard: int
    server: str
    values: list[Any]
    runtime: TaskRuntime


def cause(exc: BaseException) -> BaseException:
    """The exception a task raised, without Ray's wrappers."""
    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    return exc


class FanOut:
    def __init__(self, shards: Shards) -> None:
        self.shards = shards
        self._in_flight: set[ray.ObjectRef[Any]] = set()

    def cancel(self) -> int:
        """Cancel every task this fan-out still waits for; how many were asked."""
        refs = list(self._in_flight)
        for ref in refs:
            ray.cancel(ref, force=False)
        return len(refs)

    async def each_shard(
        self,
        calls: Callable[[int], list[Call]],
        only: Iterable[int] | None = None,
    ) -> list[ShardResult]:
        """`calls(shard)` as one task per logical shard (all, or `only` these)."""
        wanted = sorted(set(only) if only is not None else range(self.shards.map.logical_shards))
        done: dict[int, ShardResult] = {}
        for attempt in (1, 2):
            seen = self.shards.map
            planned = [
                (shard, seen.server_for_shard(shard)) for shard in wanted if shard not in done
            ]
            refs = [
                shard_reads.options(**task_options()).remote(
                    server, seen.route([shard]), calls(shard)
                )
                for shard, server in planned
            ]
            self._in_flight.update(refs)
            try:
                outcomes = await asyncio.gather(*refs, return_exceptions=True)
            finally:
                self._in_flight.difference_update(refs)
            stale = False
            for (shard, server), outcome in zip(planned, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    error = cause(outcome)
                    if isinstance(error, StaleShardMap) and attempt == 1:
                        stale = True
                        continue
                    if isinstance(outcome, TaskCancelledError):
                        raise asyncio.CancelledError() from outcome
                    raise error
                values, runtime = outcome
                done[shard] = ShardResult(shard, server.name, values, runtime)
            if not stale:
                break
            await self.shards.reload(seen)
        return [done[s] for s in wanted]
