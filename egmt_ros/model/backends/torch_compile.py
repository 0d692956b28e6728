"""``compile``: ``torch.compile`` of the eager backend's fusion path, one static graph per input size."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import Tensor

from egmt_ros.model.backends.torch_eager import TorchBackend
from egmt_ros.model.network import EGMT


class CompileBackend(TorchBackend):
    """``torch.compile`` (inductor) of the fusion path, static shapes: compiled on the first frame of each new
    (H, W) and cached for that size (the entity features are padded to a fixed N, so new entities never recompile).
    On CUDA the default mode is ``"reduce-overhead"`` (CUDA graphs)."""

    name = "compile"
    entity_policy = "fixed"
    #: the most input sizes kept compiled at once (torch._dynamo's recompile limit is raised to this)
    MAX_SIZES = 32

    def __init__(self, model: EGMT, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 threads: int | None = None, mode: str | None = None,
                 compile_options: dict[str, Any] | None = None) -> None:
        super().__init__(model, device, dtype, threads)
        import torch._dynamo

        cfg = torch._dynamo.config
        for attr in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, attr) and getattr(cfg, attr) < self.MAX_SIZES:
                setattr(cfg, attr, self.MAX_SIZES)
        if mode is None and self.device.type == "cuda":
            mode = "reduce-overhead"
        self.mode = mode
        kwargs: dict[str, Any] = {"dynamic": False, "fullgraph": False}
        if compile_options:
            kwargs["options"] = dict(compile_options)
        elif mode:
            kwargs["mode"] = mode
        self._compiled: Callable[..., Tensor] = torch.compile(self.model.fuse, **kwargs)
        self._sizes: set[tuple[int, ...]] = set()  # (H, W) at batch 1, else (H, W, batch)
        self._entities_changed()  # always pass (padded) entity tensors: one graph per size

    def _forward(self, ir: Tensor, vi: Tensor) -> Tensor:
        b = int(ir.shape[0])
        key = (int(ir.shape[-2]), int(ir.shape[-1])) + ((b,) if b > 1 else ())  # (H, W) or (H, W, batch)
        if key in self._sizes:
            return self._compiled(ir, vi, *self._batch_entities(b))
        t0 = time.perf_counter()
        out = self._compiled(ir, vi, *self._batch_entities(b))
        self.setup_seconds["compile " + "x".join(map(str, key))] = time.perf_counter() - t0
        self._sizes.add(key)
        return out

    def info(self) -> dict[str, Any]:
        return {**super().info(), "mode": self.mode or "default", "compiled_sizes": sorted(self._sizes)}
