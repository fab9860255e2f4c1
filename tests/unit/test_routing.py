from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shards import ids
from shards.ids import MAX_ID, digits_up_to
from shards.routing import ServerSpec, ShardMap, ShardNotFound, default_layout, stable_hash


def _map(logical: int = 10, servers: int = 5) -> ShardMap:
    names = [f"shard{i + 1}" for i in range(servers)]
    return ShardMap(
        version=1,
        shard_to_server=tuple(default_layout(logical, names)),
        servers={n: ServerSpec(n, "127.0.0.1", 6000 + i) for i, n in enumerate(names)},
    )


def test_default_layout_is_the_architecture_documents() -> None:
    layout = default_layout(10, [f"shard{i}" for i in range(1, 6)])
    assert layout == [
        "shard1",
        "shard1",
        "shard2",
        "shard2",
        "shard3",
        "shard3",
        "shard4",
        "shard4",
        "shard5",
        "shard5",
    ]


def test_stable_hash_is_fixed_across_processes() -> None:
    # Constants, not a call to hash(): routing must never change between runs or machines.
    assert stable_hash("acme") == 0x302657B33C4DA281
    assert _map().shard_for_key("customer-42") == 4


@given(st.integers(0, 9), st.integers(0, 2**41 - 1), st.integers(0, 4095))
def test_id_carries_its_shard(shard: int, millis: int, seq: int) -> None:
    global_id = ids.make_id(ids.EPOCH_MS + millis, shard, seq)
    assert ids.is_valid_id(global_id) or global_id == 0
    if global_id:
        assert _map().shard_for_id(global_id) == shard


def test_id_naming_a_missing_shard_is_not_found() -> None:
    foreign = ids.make_id(ids.EPOCH_MS + 1000, 700, 1)
    with pytest.raises(ShardNotFound):
        _map().shard_for_id(foreign)
    with pytest.raises(ShardNotFound):
        _map().shard_for_id(-5)


@given(st.text(min_size=1, max_size=40))
def test_keys_route_to_an_existing_shard(key: str) -> None:
    shard_map = _map()
    shard = shard_map.shard_for_key(key)
    assert 0 <= shard < 10
    assert shard_map.shard_for_key(key) == shard
    assert shard_map.server_for_shard(shard).name == shard_map.shard_to_server[shard]


def test_more_logical_shards_than_servers_spread_evenly() -> None:
    shard_map = _map(logical=64, servers=5)
    counts = [len(shard_map.shards_on(n)) for n in shard_map.server_names()]
    assert sum(counts) == 64
    assert max(counts) - min(counts) <= 1


@given(
    logical=st.integers(min_value=1, max_value=32),
    data=st.data(),
)
def test_a_shard_test_keeps_exactly_the_rows_of_its_shards(
    logical: int, data: st.DataObject
) -> None:
    """`shard_test` picks the shorter of `= ANY(mine)` / `<> ALL(others)` / TRUE; each
    keeps the same rows (ids carry shards below `logical`)."""
    from shards.ids import shard_test

    mine = data.draw(st.lists(st.integers(0, logical - 1), min_size=1, unique=True))
    sql, values = shard_test("id", mine, logical, "$1")
    for shard in range(logical):
        kept = {
            "TRUE": True,
            "((id >> 12) & 1023) = ANY($1::int[])": shard in values,
            "((id >> 12) & 1023) <> ALL($1::int[])": shard not in values,
        }[sql]
        assert kept == (shard in mine), (sql, values, shard)
    assert (sql == "TRUE") == (len(mine) == logical)
    if sql != "TRUE":
        assert len(values) == min(len(mine), logical - len(mine))


@pytest.mark.parametrize("most", [1, 9, 10, 57, 100, 999, 1000, 2**15 - 1, MAX_ID])
def test_the_id_pattern_matches_exactly_one_to_the_largest(most: int) -> None:
    """An id's schema pattern (`digits_up_to`) is its range, as the server checks it."""
    pattern = re.compile(digits_up_to(most))
    around = {0, 1, most - 1, most, most + 1, most * 10, 10 ** len(str(most)) - 1}
    for n in [*range(0, min(most + 50, 2_000)), *around]:
        assert bool(pattern.match(str(n))) is (1 <= n <= most), (most, n)
    assert not pattern.match("0" + str(most)) and not pattern.match("-1")
