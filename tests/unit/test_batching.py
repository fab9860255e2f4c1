"""Caller-side micro-batching (`cluster.batching`, the service -> ShardManager hop):
no Ray, a fake remote end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from cluster.batching import Batcher, Outcome, run_each
from gateway.errors import NotFound


@dataclass
class Remote:
    """A remote end that doubles each number after `delay`, fails on negatives, and
    records the batches it got; `release` holds every batch until set."""

    delay: float = 0.0
    batches: list[list[int]] = field(default_factory=list)
    release: asyncio.Event | None = None
    broken: bool = False

    async def send(self, calls: list[int]) -> list[Outcome]:
        self.batches.append(list(calls))
        if self.release is not None:
            await self.release.wait()
        await asyncio.sleep(self.delay)
        if self.broken:
            raise ConnectionError("actor died")
        return await run_each(self._one(n) for n in calls)

    async def _one(self, n: int) -> int:
        if n < 0:
            raise NotFound(f"{n} not found")
        return n * 2


@pytest.mark.asyncio
async def test_a_lone_call_leaves_at_once_alone() -> None:
    remote = Remote()
    batcher: Batcher[int] = Batcher(remote.send, target="t", max_in_flight=2)
    assert await batcher.call(21) == 42
    assert await batcher.call(1) == 2
    assert remote.batches == [[21], [1]]


@pytest.mark.asyncio
async def test_calls_queue_only_while_every_slot_is_taken_then_leave_together() -> None:
    remote = Remote(release=asyncio.Event())
    batcher: Batcher[int] = Batcher(remote.send, target="t", max_in_flight=2)
    calls = [asyncio.ensure_future(batcher.call(n)) for n in range(10)]
    await asyncio.sleep(0.01)
    # Two slots: the first two calls left alone; the other eight wait.
    assert remote.batches == [[0], [1]]
    remote.release.set()  # type: ignore[union-attr]
    assert await asyncio.gather(*calls) == [n * 2 for n in range(10)]
    assert remote.batches[2] == list(range(2, 10))
    assert (batcher.batches, batcher.calls) == (3, 10)


@pytest.mark.asyncio
async def test_max_batch_splits_a_long_queue() -> None:
    remote = Remote(release=asyncio.Event())
    batcher: Batcher[int] = Batcher(remote.send, target="t", max_in_flight=1, max_batch=3)
    calls = [asyncio.ensure_future(batcher.call(n)) for n in range(8)]
    await asyncio.sleep(0.01)
    remote.release.set()  # type: ignore[union-attr]
    assert await asyncio.gather(*calls) == [n * 2 for n in range(8)]
    assert [len(b) for b in remote.batches] == [1, 3, 3, 1]


@pytest.mark.asyncio
async def test_each_caller_gets_its_own_error() -> None:
    remote = Remote(release=asyncio.Event())
    batcher: Batcher[int] = Batcher(remote.send, target="t", max_in_flight=1)
    calls = [asyncio.ensure_future(batcher.call(n)) for n in (1, 2, -3, 4)]
    await asyncio.sleep(0.01)
    remote.release.set()  # type: ignore[union-attr]
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert done[:2] == [2, 4] and done[3] == 8
    assert isinstance(done[2], NotFound) and done[2].detail == "-3 not found"
    assert len(remote.batches) == 2  # the error came back in the batch, as one outcome


@pytest.mark.asyncio
async def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_goes_on() -> None:
    remote = Remote(broken=True)
    batcher: Batcher[int] = Batcher(remote.send, target="t", max_in_flight=1)
    done = await asyncio.gather(*(batcher.call(n) for n in range(3)), return_exceptions=True)
    assert all(isinstance(d, ConnectionError) for d in done)
    remote.broken = False
    assert await batcher.call(5) == 10


@pytest.mark.asyncio
async def test_a_caller_cancelled_while_queued_is_not_sent() -> None:
    remote = Remote(release=asyncio.Event())
    batcher: Batcher[int] = Batcher(remote.send, target="t", max_in_flight=1)
    first = asyncio.ensure_future(batcher.call(1))
    queued = asyncio.ensure_future(batcher.call(2))
    kept = asyncio.ensure_future(batcher.call(3))
    await asyncio.sleep(0.01)
    queued.cancel()
    remote.release.set()  # type: ignore[union-attr]
    assert await first == 2 and await kept == 6
    assert remote.batches == [[1], [3]]


@pytest.mark.asyncio
async def test_a_caller_cancelled_in_flight_leaves_the_others_their_answers() -> None:
    remote = Remote(delay=0.05)
    batcher: Batcher[int] = Batcher(remote.send, target="t", max_in_flight=1)
    blocker = asyncio.ensure_future(batcher.call(0))
    a, b = asyncio.ensure_future(batcher.call(1)), asyncio.ensure_future(batcher.call(2))
    await asyncio.sleep(0.06)  # a and b are in flight now, in one batch
    a.cancel()
    assert await blocker == 0 and await b == 4
    assert remote.batches == [[0], [1, 2]]


def test_run_each_keeps_order_and_makes_cancellation_a_plain_error() -> None:
    async def cancelled() -> int:
        raise asyncio.CancelledError

    async def value(n: int) -> int:
        return n

    outcomes = asyncio.run(run_each([value(1), cancelled(), value(3)]))
    assert [o.value for o in outcomes] == [1, None, 3]
    assert isinstance(outcomes[1].error, RuntimeError)
    assert not isinstance(outcomes[1].error, asyncio.CancelledError)
    with pytest.raises(RuntimeError):
        outcomes[1].unwrap()


def test_batcher_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(Remote().send, target="t", max_in_flight=0)
