"""Fan a read out as Ray tasks over the logical shards and gather the results: one
task per logical shard (`each_shard`), or one per shard server covering the logical
shards the map puts there (`each_server`: a table scan per server, not one per
logical shard, for aggregates that read most of a table).

The plan is the shard map this replica holds (`Shards.map`): each task gets its
shards' server and the map version it was planned by. A task refused because the
shard moved (StaleShardMap) is planned again on the fresh map, once. The refs of the
tasks in flight are kept so a job can cancel them (`cancel()`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
from ray.exceptions import RayTaskError, TaskCancelledError

from ai.runtime import Call, TaskRuntime, shard_reads, task_options
from shards.client import Shards
from shards.errors import StaleShardMap
from shards.routing import ServerSpec, ShardMap

T = TypeVar("T")


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


def by_server(seen: ShardMap, shards: Iterable[int]) -> list[tuple[ServerSpec, list[int]]]:
    """`shards` grouped by the server `seen` puts them on: (server, its logical shards)."""
    groups: dict[str, tuple[ServerSpec, list[int]]] = {}
    for shard in sorted(shards):
        server = seen.server_for_shard(shard)
        groups.setdefault(server.name, (server, []))[1].append(shard)
    return list(groups.values())


async def planned_once_more_if_stale(
    shards: Shards, submit: Callable[[ShardMap], Awaitable[T]]
) -> T:
    """`submit(map)` (Ray work planned by that map, awaited), submitted again on a
    fresh map, once, when a shard it read moved meanwhile; any other error is the
    task's own (without Ray's wrappers)."""
    for attempt in (1, 2):
        seen = shards.map
        try:
            return await submit(seen)
        except Exception as exc:
            if attempt == 1 and isinstance(cause(exc), StaleShardMap):
                await shards.reload(seen)
                continue
            raise cause(exc) from exc
    raise AssertionError("unreachable")


@dataclass
class ServerResult:
    shards: list[int]
    server: str
    values: list[Any]
    runtime: TaskRuntime


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
        found = await self._gather(lambda group: calls(group[0]), only, per_server=False)
        by_shard = {
            group[0]: ShardResult(group[0], server, v, rt) for group, server, v, rt in found
        }
        return [by_shard[s] for s in sorted(by_shard)]

    async def each_server(
        self,
        calls: Callable[[list[int]], list[Call]],
        only: Iterable[int] | None = None,
    ) -> list[ServerResult]:
        """`calls(shards)` as one task per server, for the logical shards (all, or
        `only` these) the map puts on it."""
        found = await self._gather(calls, only, per_server=True)
        return [ServerResult(group, server, v, rt) for group, server, v, rt in found]

    async def _gather(
        self,
        calls: Callable[[list[int]], list[Call]],
        only: Iterable[int] | None,
        per_server: bool,
    ) -> list[tuple[list[int], str, list[Any], TaskRuntime]]:
        wanted = set(only) if only is not None else set(range(self.shards.map.logical_shards))
        done: list[tuple[list[int], str, list[Any], TaskRuntime]] = []
        for attempt in (1, 2):
            seen = self.shards.map
            if per_server:
                planned = by_server(seen, wanted)
            else:
                planned = [(seen.server_for_shard(s), [s]) for s in sorted(wanted)]
            refs = [
                shard_reads.options(**task_options()).remote(
                    server, seen.route(group), calls(group)
                )
                for server, group in planned
            ]
            self._in_flight.update(refs)
            try:
                outcomes = await asyncio.gather(*refs, return_exceptions=True)
            finally:
                self._in_flight.difference_update(refs)
            stale = False
            for (server, group), outcome in zip(planned, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    error = cause(outcome)
                    if isinstance(error, StaleShardMap) and attempt == 1:
                        stale = True
                        continue
                    if isinstance(outcome, TaskCancelledError):
                        raise asyncio.CancelledError() from outcome
                    raise error
                values, runtime = outcome
                done.append((group, server.name, values, runtime))
                wanted.difference_update(group)
            if not stale:
                break
            await self.shards.reload(seen)
        return done
