from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shards import consistency

tokens = st.dictionaries(st.sampled_from(["catalog", "shard1", "shard2"]), st.integers(0, 2**62))


@given(tokens)
def test_tokens_round_trip(token: dict[str, int]) -> None:
    assert consistency.decode(consistency.encode(token)) == token


@given(tokens, tokens)
def test_merge_keeps_the_highest_position(a: dict[str, int], b: dict[str, int]) -> None:
    merged = consistency.merge(a, b)
    assert set(merged) == set(a) | set(b)
    for server, lsn in merged.items():
        assert lsn == max(a.get(server, 0), b.get(server, 0))


@pytest.mark.parametrize("text", ["", "!!", "bm90IGpzb24", "WzEsMl0", "eyJhIjogLTF9"])
def test_foreign_tokens_are_refused(text: str) -> None:
    with pytest.raises(consistency.BadToken):
        consistency.decode(text)


def test_reads_wait_for_the_token_and_for_earlier_writes_of_the_request() -> None:
    assert consistency.min_lsn_for("shard1") is None
    with consistency.request_scope({"shard1": 100}) as written:
        assert consistency.min_lsn_for("shard1") == 100
        assert consistency.min_lsn_for("shard2") is None
        consistency.record_write("shard2", 50)
        consistency.record_write("shard1", 90)  # older than the token: the token still rules
        assert consistency.min_lsn_for("shard2") == 50
        assert consistency.min_lsn_for("shard1") == 100
    assert written == {"shard2": 50, "shard1": 90}
    assert consistency.min_lsn_for("shard2") is None  # scope ended
