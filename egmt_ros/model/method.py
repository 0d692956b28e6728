"""EGMT as a :class:`egmt_ros.core.methods.FusionMethod` (and :class:`~egmt_ros.core.methods.EntityGuided`).

:func:`load_egmt` is what the registered methods ``egmt_rt`` and ``egmt`` build (:mod:`egmt_ros.fusion.methods`):

- ``get_method("egmt_rt")`` loads the shipped ``models/egmt_rt.pt`` (``egmt_ros.paths.models_dir()``); a missing
  file raises FileNotFoundError naming the path.
- ``get_method("egmt", model=PATH)`` loads any checkpoint.

Both accept ``device`` ("cpu" | "cuda"), ``dtype`` (torch dtype or its name; ``"auto"``: the backend's fastest
within 1e-2, :func:`egmt_ros.model.backends.resolve_dtype`), ``text_encoder`` (an object with ``id``, ``dim``,
``encode``; built lazily from the card's encoder id on the first non-empty :meth:`EGMTFuser.set_entities`) and
``backend``: ``"torch"`` (eager, the default), ``"compile"`` (torch.compile, per input size), ``"onnxruntime"``
(cached ONNX export), ``"openvino"`` (cached static-shape export per size; the fusion node's default) or
``"tensorrt"`` (cached engines; unverified), plus that
backend's options (``threads``, ``cache_dir``, ``precision``, ``force_engine_update`` ...): see
:mod:`egmt_ros.model.backends`. Every backend gets the entity features as an input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from egmt_ros.model.backends import FuseBackend, canonical_backend, make_backend, resolve_dtype
from egmt_ros.model.checkpoint import load_checkpoint
from egmt_ros.model.network import EGMT
from egmt_ros.model.text import TextEncoder, get_text_encoder
from egmt_ros.paths import models_dir

RT_CHECKPOINT = "egmt_rt.pt"


def _dtype(d: torch.dtype | str | None) -> torch.dtype:
    if d is None:
        return torch.float32
    if isinstance(d, torch.dtype):
        return d
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if d not in names:
        raise ValueError(f"unknown dtype {d!r}; use one of {sorted(names)}")
    return names[d]


class EGMTFuser:
    """An EGMT model + its text encoder behind the FusionMethod interface (numpy in / out, [0, 1], no stretching).

    ``backend`` picks the inference engine (:mod:`egmt_ros.model.backends`); ``backend_options`` go to it.
    """

    def __init__(self, model: EGMT, card: dict[str, Any] | None = None, text_encoder: TextEncoder | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
                 name: str = "egmt", backend: str = "torch", **backend_options: Any) -> None:
        self.name = name
        self.card = dict(card or {})
        self.device = torch.device(device)
        self.dtype = _dtype(resolve_dtype(dtype, backend) if isinstance(dtype, str) else dtype)  # "auto": per backend
        cfg = model.config
        if text_encoder is not None and (text_encoder.dim != cfg.text_dim or text_encoder.id != cfg.text_encoder):
            raise ValueError(f"model expects text encoder {cfg.text_encoder!r} ({cfg.text_dim}-d), "
                             f"got {text_encoder.id!r} ({text_encoder.dim}-d)")
        self.backend_name = canonical_backend(backend)
        self.backend: FuseBackend = make_backend(self.backend_name, model.eval(), self.device, self.dtype,
                                                 **backend_options)
        #: the torch module (on ``device``/``dtype`` for the torch backends, CPU float32 for the exported ones)
        self.model = self.backend.model
        self._encoder = text_encoder
        self.entities: list[str] = []
        self._ent: np.ndarray | None = None  # [N, text_dim] float32 or None
        self._flops: dict[tuple[int, int], float] = {}
        self.checkpoint: Path | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str | None = None, text_encoder: TextEncoder | None = None,
                        name: str = "egmt", backend: str = "torch", **backend_options: Any) -> "EGMTFuser":
        """Load ``path`` (FileNotFoundError naming it if missing; ValueError for a mismatched text encoder)."""
        model, card = load_checkpoint(path, "cpu",
                                      expect_text_encoder=text_encoder.id if text_encoder is not None else None,
                                      expect_text_dim=text_encoder.dim if text_encoder is not None else None)
        fuser = cls(model, card, text_encoder, device, dtype, name, backend, **backend_options)
        fuser.checkpoint = Path(path)
        return fuser

    # --- entities ---
    @property
    def uses_text(self) -> bool:
        """Whether the model has the text branch (else entities are ignored)."""
        return bool(self.model.config.uses_text)

    @property
    def text_encoder(self) -> TextEncoder:
        """The model's text encoder (built from the config's encoder id on first use)."""
        if self._encoder is None:
            cfg = self.model.config
            self._encoder = get_text_encoder(cfg.text_encoder, cfg.text_dim)
        return self._encoder

    def set_entities(self, labels: list[str]) -> None:
        """Use these entity words for the following frames (encoded once per label, then cached); [] clears."""
        labels = [str(x) for x in labels][: self.model.config.max_entities]
        self.entities = labels
        if not labels or not self.model.config.uses_text:
            self._clear_entities()
            return
        self.set_entity_features(self.text_encoder.encode(labels))
        self.entities = labels

    def _clear_entities(self) -> None:
        if self._ent is not None:
            self.backend.set_entities(None)
        self._ent = None

    def set_entity_features(self, feats: np.ndarray | None) -> None:
        """Use precomputed entity features ``[N, text_dim]`` (from the same encoder the model was trained with)."""
        if feats is None or len(feats) == 0:
            self._clear_entities()
            return
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != self.model.config.text_dim:
            raise ValueError(f"entity features must be [N, {self.model.config.text_dim}], got {feats.shape}")
        self.backend.set_entities(feats)
        self._ent = feats

    # --- FusionMethod ---
    def fuse(self, ir: np.ndarray, vi_y: np.ndarray) -> np.ndarray:
        """IR grey + visible luma (float32 H x W in [0, 1]) -> fused luma (float32 H x W in [0, 1])."""
        if ir.shape != vi_y.shape or ir.ndim != 2:
            raise ValueError(f"{self.name}: IR {ir.shape} and visible luma {vi_y.shape} must be equal H x W")
        return self.backend.fuse(ir, vi_y)

    def num_params(self) -> int | None:
        return self.model.num_params()

    def flops(self, height: int, width: int) -> float | None:
        """FLOPs of the fusion path for one frame (torch FlopCounterMode: convs, matmuls, attention; 2 per MAC)."""
        key = (int(height), int(width))
        if key not in self._flops:
            from torch.utils.flop_counter import FlopCounterMode

            p = next(self.model.parameters())
            ir = torch.zeros(1, 1, *key, device=p.device, dtype=p.dtype)
            ent = None if self._ent is None else torch.from_numpy(self._ent[None]).to(p.device, p.dtype)
            counter = FlopCounterMode(display=False)
            with torch.inference_mode(), counter:
                self.model.fuse(ir, ir, ent)
            self._flops[key] = float(counter.get_total_flops())
        return self._flops[key]


def load_egmt(name: str = "egmt", model: str | Path | None = None, **kwargs: Any) -> EGMTFuser:
    """The checkpoint ``model`` (default: the shipped ``models/egmt_rt.pt``) as a method called ``name``."""
    return EGMTFuser.from_checkpoint(models_dir() / RT_CHECKPOINT if model is None else model, name=name, **kwargs)
