"""Caller-side micro-batching: many concurrent calls to one remote endpoint travel as
one Ray call, so a Ray hop's fixed cost (task submission, gRPC, the callee's request
bookkeeping) is paid once per batch instead of once per request.

    batcher = Batcher(actor.run_batch.remote, target="shard-manager:s1", max_in_flight=4)
    value = await batcher.call(("customer", fn, args, kwargs))

No call ever waits for a timer. While fewer than `max_in_flight` batches are out, a
call leaves at once, alone; only when every slot is taken do calls queue, and the next
free slot takes everything queued (up to `max_batch`) as one batch. At low load this
is a plain call per request; under load the batches grow by themselves.

The callee answers a batch with one `Outcome` per call, in order (`run_each` builds
them), so one call's error stays that call's: each caller gets its own value or its own
exception. If the batch itself fails (the actor died), every call in it gets that error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ray.util import metrics

C = TypeVar("C")  # what describes one call

batch_calls = metrics.Histogram(
    "nextflow_batch_calls",
    description="Calls carried by one batched Ray call, per target (a deployment or a "
    "shard manager): 1 at low load, growing with concurrency.",
    boundaries=[1, 2, 4, 8, 16, 32, 64, 128],
    tag_keys=("target",),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call's answer inside a batch: its value, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


async def run_each(calls: Iterable[Awaitable[Any]]) -> list[Outcome]:
    """The callee's side: run a batch's calls concurrently, one `Outcome` each, in order."""
    done = await asyncio.gather(*calls, return_exceptions=True)
    return [
        Outcome(error=_portable(r)) if isinstance(r, BaseException) else Outcome(value=r)
        for r in done
    ]


def _portable(error: BaseException) -> BaseException:
    """The error as it can cross a process boundary: cancellation and exits travel as
    plain errors (a caller must not be cancelled by another call's cancellation)."""
    if isinstance(error, Exception):
        return error
    return RuntimeError(f"call ended with {type(error).__name__}")


class Batcher(Generic[C]):
    """Coalesces concurrent `call()`s into batches sent with `send`."""

    def __init__(
        self,
        send: Callable[[list[C]], Awaitable[Sequence[Outcome]]],
        *,
        target: str,
        max_in_flight: int = 4,
        max_batch: int = 64,
    ) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._send = send
        self._tags = {"target": target}
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._queue: deque[tuple[C, asyncio.Future[Any]]] = deque()
        self._in_flight = 0
        self._flights: set[asyncio.Task[None]] = set()  # strong references
        # Figures for tests and metrics: batches sent and calls carried.
        self.batches = 0
        self.calls = 0

    async def call(self, call: C) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._queue and self._in_flight < self._max_in_flight:
            batch: list[tuple[C, asyncio.Future[Any]]] = []
            while self._queue and len(batch) < self._max_batch:
                entry = self._queue.popleft()
                if not entry[1].done():  # a caller cancelled while queued: drop it
                    batch.append(entry)
            if not batch:
                return
            self._in_flight += 1
            self.batches += 1
            self.calls += len(batch)
            batch_calls.observe(len(batch), tags=self._tags)
            flight = asyncio.get_running_loop().create_task(self._flight(batch))
            self._flights.add(flight)
            flight.add_done_callback(self._flights.discard)

    async def _flight(self, batch: list[tuple[C, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._send([call for call, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} answered with {len(outcomes)}")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue  # its caller was cancelled meanwhile
                if outcome.error is not None:
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome.value)
        finally:
            self._in_flight -= 1
            self._dispatch()
