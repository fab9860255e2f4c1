"""Caller-side micro-batching (`cluster.batching`), the calls-in-progress measure
(`deployments._kit.boundary`) and the autoscaling policy that reads it
(`cluster.autoscaling`): no Ray, a fake remote end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from cluster.autoscaling import CALLS_IN_PROGRESS, calls_in_progress
from cluster.batching import Batcher, Outcome, run_each
from deployments._kit import boundary
from deployments._kit.boundary import BatchedCalls, ServiceCall
from gateway.errors import AppError, NotFound


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


# -- the callee side: BatchedCalls -------------------------------------------------------


class Echo(BatchedCalls):
    @boundary.boundary
    async def echo(self, value: int) -> int:
        if value < 0:
            raise NotFound("negative")
        await asyncio.sleep(0.01)
        return value

    async def not_a_boundary(self) -> int:
        return 1


@pytest.mark.asyncio
async def test_call_batch_runs_boundary_methods_only_each_with_its_own_outcome() -> None:
    calls = [
        ServiceCall("echo", (1,), {}),
        ServiceCall("echo", (-1,), {}),
        ServiceCall("not_a_boundary", (), {}),
        ServiceCall("__init__", (), {}),
        ServiceCall("echo", (), {"value": 7}),
    ]
    outcomes = await Echo().call_batch(calls)
    assert outcomes[0].value == 1 and outcomes[4].value == 7
    assert isinstance(outcomes[1].error, NotFound)
    for refused in outcomes[2:4]:
        assert isinstance(refused.error, AppError) and "no method" in str(refused.error)


@pytest.mark.asyncio
async def test_calls_in_progress_is_a_time_weighted_mean() -> None:
    boundary.load.mean()  # start a fresh window
    service = Echo()
    await asyncio.gather(*(service.echo(n) for n in range(8)))
    assert boundary.load.now == 0
    mean = service.record_autoscaling_stats()[CALLS_IN_PROGRESS]
    assert 0 < mean <= 8
    await asyncio.sleep(0.02)
    assert service.record_autoscaling_stats()[CALLS_IN_PROGRESS] == 0


# -- the policy ----------------------------------------------------------------------------


class _Config:
    def get_target_ongoing_requests(self) -> float:
        return 10.0


@dataclass
class _Ctx:
    total_num_requests: float
    aggregated_metrics: dict[str, dict[Any, float]] | None
    target_num_replicas: int = 1
    config: Any = field(default_factory=_Config)


def test_policy_scales_on_calls_not_on_batches() -> None:
    # Two replicas each running 35 calls in what Serve sees as 4 requests.
    ctx = _Ctx(4, {CALLS_IN_PROGRESS: {"r1": 35.0, "r2": 35.0}})
    assert calls_in_progress(ctx)[0] == pytest.approx(7.0)  # type: ignore[arg-type]


def test_policy_falls_back_to_serve_requests_before_the_first_report() -> None:
    assert calls_in_progress(_Ctx(30, None))[0] == pytest.approx(3.0)  # type: ignore[arg-type]
    assert calls_in_progress(_Ctx(30, {}))[0] == pytest.approx(3.0)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_calls_are_counted_when_serve_ships_the_class_by_value() -> None:
    """Serve pickles a decorated deployment class by value, with the globals its
    methods name: the count must still reach this module's `load`."""
    import cloudpickle

    shipped = cloudpickle.loads(cloudpickle.dumps(_by_value_class()))
    boundary.load.mean()
    service = shipped()
    started = asyncio.ensure_future(service.echo(1))
    await asyncio.sleep(0.005)
    assert boundary.load.now == 1
    assert await started == 1 and boundary.load.now == 0


def _by_value_class() -> type:
    class Shipped(BatchedCalls):  # defined in a function: cloudpickle sends it by value
        @boundary.boundary
        async def echo(self, value: int) -> int:
            await asyncio.sleep(0.02)
            return value

    return Shipped


# -- the gateway's side: BatchedHandle -----------------------------------------------------


class _Method:
    def __init__(self, fn: Any) -> None:
        self.remote = fn


class FakeHandle:
    """A deployment handle: `call_batch` runs `Echo`'s methods; `list` is not batched."""

    deployment_name = "Echo"

    def __init__(self) -> None:
        self.service = Echo()
        self.batches: list[list[ServiceCall]] = []
        self.call_batch = _Method(self._call_batch)
        self.list = _Method(self._list)

    async def _call_batch(self, calls: list[ServiceCall]) -> list[Outcome]:
        self.batches.append(calls)
        return await self.service.call_batch(calls)

    async def _list(self) -> str:
        return "listed alone"


@pytest.mark.asyncio
async def test_batched_handle_coalesces_named_methods_and_passes_the_rest() -> None:
    from gateway.batching import BatchedHandle

    fake = FakeHandle()
    handle: Any = BatchedHandle(fake, {"echo"}, in_flight=1)
    done = await asyncio.gather(*(handle.echo.remote(n) for n in range(6)))
    assert done == list(range(6))
    assert [len(b) for b in fake.batches] == [1, 5]
    assert all(c.method == "echo" for b in fake.batches for c in b)
    with pytest.raises(NotFound):
        await handle.echo.remote(-1)
    assert await handle.list.remote() == "listed alone"
    assert len(fake.batches) == 3  # `list` did not go through call_batch
