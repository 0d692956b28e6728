"""``torch``: PyTorch eager (alias ``eager``), CPU or CUDA, float32/float16/bfloat16."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from egmt_ros.model.backends.base import FuseBackend
from egmt_ros.model.network import EGMT


class TorchBackend(FuseBackend):
    """PyTorch eager. On CUDA: pinned host buffers, one H2D copy per image (IR + VI together), cast and clamp on
    the GPU, one D2H copy of the fused image."""

    name = "torch"

    def __init__(self, model: EGMT, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 threads: int | None = None) -> None:
        super().__init__(model)
        self.device, self.dtype = torch.device(device), dtype
        if threads:
            torch.set_num_threads(int(threads))  # process-wide: torch has one intra-op thread pool
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested, but torch sees no CUDA device (torch.cuda.is_available() "
                               "is False); use device 'cpu'")
        self.model = model.to(self.device, self.dtype).eval()
        self._cuda = self.device.type == "cuda"
        self._ent: Tensor | None = None
        self._mask: Tensor | None = None
        self._hw: tuple[int, int] | None = None
        self._host_in = self._dev_in = self._host_out = None

    def _entities_changed(self) -> None:
        if self._feats is None and self.entity_policy == "dynamic":
            self._ent = self._mask = None  # exactly what eager did before: no entities
            return
        ent, mask = self._entity_arrays()
        self._ent = torch.from_numpy(ent).to(self.device, self.dtype)
        self._mask = torch.from_numpy(mask).to(self.device)

    def _buffers(self, h: int, w: int) -> None:
        if self._hw != (h, w):
            self._host_in = torch.empty((2, 1, 1, h, w), dtype=torch.float32, pin_memory=True)
            self._dev_in = torch.empty((2, 1, 1, h, w), dtype=torch.float32, device=self.device)
            self._host_out = torch.empty((h, w), dtype=torch.float32, pin_memory=True)
            self._hw = (h, w)

    def _inputs(self, ir: np.ndarray, vi: np.ndarray) -> tuple[Tensor, Tensor]:
        if not self._cuda:
            t_ir = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None].to(self.device,
                                                                                                 self.dtype)
            t_vi = torch.from_numpy(np.ascontiguousarray(vi, dtype=np.float32))[None, None].to(self.device,
                                                                                                 self.dtype)
            return t_ir, t_vi
        self._buffers(*ir.shape)
        host = self._host_in.numpy()
        host[0, 0, 0] = ir
        host[1, 0, 0] = vi
        self._dev_in.copy_(self._host_in, non_blocking=True)  # the one host -> device copy of this image pair
        x = self._dev_in.to(self.dtype)  # cast on the GPU (no-op for float32)
        return x[0], x[1]

    def _output(self, out: Tensor) -> np.ndarray:
        y = out[0, 0].clamp(0.0, 1.0).float()  # clamp + cast on the device
        if not self._cuda:
            return np.ascontiguousarray(y.numpy())
        self._host_out.copy_(y, non_blocking=True)  # the one device -> host copy
        torch.cuda.current_stream(self.device).synchronize()
        return self._host_out.numpy().copy()

    def _batch_entities(self, b: int) -> tuple[Tensor | None, Tensor | None]:
        """The entity features and mask broadcast to a batch of ``b`` pairs."""
        if self._ent is None or self._mask is None:
            return None, None
        return self._ent.expand(b, -1, -1), self._mask.expand(b, -1)

    def _forward(self, ir: Tensor, vi: Tensor) -> Tensor:
        return self.model.fuse(ir, vi, *self._batch_entities(ir.shape[0]))

    def fuse_tensor(self, ir: Tensor, vi: Tensor) -> Tensor:
        """The network on ``[B, 1, H, W]`` tensors already on ``device`` in ``dtype`` (the entity features shared by
        the B pairs); no copies, no synchronisation: the device-resident path of :mod:`egmt_ros.fusion.device`."""
        return self._forward(ir, vi)

    @torch.inference_mode()
    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        t_ir, t_vi = self._inputs(ir, vi)
        return self._output(self._forward(t_ir, t_vi))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "threads": torch.get_num_threads()}
