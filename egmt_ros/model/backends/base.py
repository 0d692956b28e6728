"""What every inference backend shares: the :class:`FuseBackend` interface, entity padding, the cache folder,
the model hash and atomic writes (see :mod:`egmt_ros.model.backends` for the backends)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egmt_ros.model import config, export, information, network
from egmt_ros.model.network import EGMT

ENTITY_POLICIES = ("dynamic", "fixed")


class BackendUnavailableError(ImportError):
    """A backend's package (or hardware) is missing; the message names what to install."""


def default_cache_dir() -> Path:
    """``$EGMT_CACHE_DIR``, else ``$XDG_CACHE_HOME/egmt_ros``, else ``~/.cache/egmt_ros``."""
    if os.environ.get("EGMT_CACHE_DIR"):
        return Path(os.environ["EGMT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "egmt_ros"


#: The modules whose code defines an exported graph: their source is part of every cache key, so an upgrade that
#: changes the graph (a new operation, a rewritten prior) never reuses an export made by older code.
GRAPH_MODULES = (network, information, config, export)


def graph_code_hash() -> str:
    """SHA-256 (hex) of the source files of :data:`GRAPH_MODULES`."""
    h = hashlib.sha256()
    for module in GRAPH_MODULES:
        h.update(Path(module.__file__ or "").read_bytes())
    return h.hexdigest()


def model_hash(model: EGMT) -> str:
    """SHA-256 (hex) of the model's config and weights and of the graph code (:func:`graph_code_hash`): equal
    weights under equal code give equal cache keys, whatever the file."""
    h = hashlib.sha256()
    h.update(graph_code_hash().encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-") or "unknown"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pad_entities(feats: np.ndarray | None, n: int | None, text_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``([1, N', D] float32, [1, N'] bool)``: ``n`` None keeps N' = N, else pads to ``n`` rows (masked out)."""
    f = np.zeros((0, text_dim), np.float32) if feats is None else np.asarray(feats, np.float32).reshape(-1, text_dim)
    if n is None:
        return np.ascontiguousarray(f[None]), np.ones((1, len(f)), dtype=bool)
    if len(f) > n:
        raise ValueError(f"{len(f)} entities, but the fixed entity policy holds at most {n} (config.max_entities)")
    ent = np.zeros((1, n, text_dim), np.float32)
    mask = np.zeros((1, n), dtype=bool)
    ent[0, : len(f)] = f
    mask[0, : len(f)] = True
    return ent, mask


class FuseBackend:
    """Base class: ``set_entities(feats)`` then ``fuse(ir, vi)`` (float32 ``H x W`` in [0, 1] -> same)."""

    name = "base"
    entity_policy = "dynamic"

    def __init__(self, model: EGMT) -> None:
        self.model = model
        self.text_dim = model.config.text_dim
        self.max_entities = model.config.max_entities
        self.uses_text = model.config.uses_text
        self._feats: np.ndarray | None = None
        #: seconds spent preparing (export, engine build, compile per size) - for the benchmark's setup column
        self.setup_seconds: dict[str, float] = {}

    def _entity_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return pad_entities(self._feats, self.max_entities if self.entity_policy == "fixed" else None,
                            self.text_dim)

    def set_entities(self, feats: np.ndarray | None) -> None:
        """Entity features ``[N, text_dim]`` (None or N = 0: none) for the following frames."""
        if feats is not None:
            feats = np.asarray(feats, np.float32)
            if feats.ndim != 2 or feats.shape[1] != self.text_dim:
                raise ValueError(f"entity features must be [N, {self.text_dim}], got {feats.shape}")
            if len(feats) == 0:
                feats = None
        if feats is not None and self.entity_policy == "fixed" and len(feats) > self.max_entities:
            raise ValueError(f"{len(feats)} entities; backend {self.name!r} takes at most {self.max_entities}")
        self._feats = feats
        self._entities_changed()

    def _entities_changed(self) -> None:
        pass

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What runs (for logs and the benchmark tables)."""
        return {"backend": self.name, "entity_policy": self.entity_policy}
