"""cluster/heap.py: the collector paused around a burst, and given back."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from cluster import heap


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_paused_inside_and_enabled_again_after() -> None:
    gc.enable()
    with heap.collections_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_inside_still_gives_the_collector_back() -> None:
    gc.enable()
    with pytest.raises(ValueError, match="boom"), heap.collections_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with heap.collections_paused():
        pass
    assert not gc.isenabled()


def test_callers_in_threads_nest_and_the_last_one_out_enables_it() -> None:
    gc.enable()
    inside, leave = threading.Barrier(3), threading.Event()
    seen: list[bool] = []

    def burst() -> None:
        with heap.collections_paused():
            inside.wait()
            leave.wait()
            seen.append(gc.isenabled())

    threads = [threading.Thread(target=burst) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()  # both are inside
    assert not gc.isenabled()
    leave.set()
    for t in threads:
        t.join()
    assert gc.isenabled()
    assert seen == [False, False]  # each was paused until it left
