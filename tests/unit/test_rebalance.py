from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shards.moves import plan_rebalance, shard_filter


def test_even_layout_needs_no_moves() -> None:
    owner = {s: f"shard{s // 2 + 1}" for s in range(10)}
    assert plan_rebalance(owner, [f"shard{i}" for i in range(1, 6)]) == []


def test_a_new_empty_server_gets_shards() -> None:
    owner = {s: "shard1" if s < 5 else "shard2" for s in range(10)}
    plan = plan_rebalance(owner, ["shard1", "shard2", "shard3"])
    assert [target for _, _, target in plan] == ["shard3", "shard3", "shard3"]
    assert len({shard for shard, _, _ in plan}) == 3


@given(st.lists(st.integers(0, 4), min_size=1, max_size=64), st.integers(1, 6))
def test_plans_balance_to_within_one(placement: list[int], servers: int) -> None:
    names = [f"shard{i + 1}" for i in range(max(servers, max(placement) + 1))]
    owner = {shard: names[i] for shard, i in enumerate(placement)}
    for shard, source, target in plan_rebalance(owner, names):
        assert owner[shard] == source and source != target
        owner[shard] = target
    counts = [sum(1 for o in owner.values() if o == n) for n in names]
    assert max(counts) - min(counts) <= 1


def test_shard_filter_reads_the_id_layout() -> None:
    assert shard_filter(3) == "(((id >> 12) & 1023) = 3)"
