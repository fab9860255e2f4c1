"""The in-memory vector blocks (ai/vectors.py) without Ray: what they hold after
loads and updates, and that their nearest lists equal a full read's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai import search
from ai.embed import DIMENSIONS, MODEL_NAME
from ai.vectors import VectorBlock, merged


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIMENSIONS)).astype(np.float32)
    unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


def _rows(ids: list[int], vectors: np.ndarray) -> list[tuple[int, bytes | None, str | None]]:
    return [(i, v.astype("<f4").tobytes(), MODEL_NAME) for i, v in zip(ids, vectors, strict=True)]


def test_a_block_grows_replaces_and_blanks_what_has_no_current_embedding() -> None:
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 3000)
    block = VectorBlock()
    for start in range(0, 3000, 700):  # pages, past the first capacity
        block.upsert(
            _rows(list(range(start, min(start + 700, 3000))), vectors[start : start + 700])
        )
    assert block.size == 3000 and len(block.rows) == 3000
    ((found, score),) = block.nearest(vectors[1234], 1)
    assert found == 1234 and score == pytest.approx(1.0, abs=1e-5)
    # A record re-embedded: its row replaced, not added.
    block.upsert(_rows([1234], vectors[[5]]))
    assert block.size == 3000
    assert [i for i, _ in block.nearest(vectors[5], 2)] == [5, 1234]
    # Embedding lost, or made by another model: the row scores 0 everywhere.
    block.upsert([(5, None, None), (1234, vectors[5].tobytes(), "another-model")])
    assert all(i not in (5, 1234) for i, _ in block.nearest(vectors[5], 10))
    assert block.nearest(vectors[5], 0) == [] and VectorBlock().nearest(vectors[5], 3) == []


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    blocks=st.integers(1, 5),
    k=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_blocks_merged_equal_one_full_read(n: int, blocks: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = _unit(rng, n)
    ids = [int(i) for i in rng.choice(10**9, size=n, replace=False)]
    parts = [VectorBlock() for _ in range(blocks)]
    for j, part in enumerate(parts):
        part.upsert(_rows(ids[j::blocks], vectors[j::blocks]))
    query = _unit(rng, 1)[0]
    got = merged([p.nearest(query, k) for p in parts], k)
    whole = search.nearest(query, [("ticket", i, "") for i in ids], vectors, k)
    # The same scores in the same order, each the true cosine of the record named.
    assert [s for _, s in got] == pytest.approx([h["score"] for h in whole], abs=1e-5)
    truth = dict(zip(ids, (vectors @ query).tolist(), strict=True))
    assert all(score == pytest.approx(truth[i], abs=1e-5) for i, score in got)
    assert len({i for i, _ in got}) == len(got) == min(k, n)
