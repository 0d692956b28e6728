"""``onnxruntime``: the fusion path exported to ONNX once (cached by model hash), run by ONNX Runtime."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egmt_ros.model.backends.base import (ENTITY_POLICIES, BackendUnavailableError, FuseBackend, default_cache_dir,
                                          model_hash)
from egmt_ros.model.export import DEFAULT_OPSET, OUTPUT_NAMES, OnnxFuser, export_onnx
from egmt_ros.model.network import EGMT


class OnnxRuntimeBackend(FuseBackend):
    """The exported fusion path in ONNX Runtime; the ONNX file is exported once per (model hash, entity policy)."""

    name = "onnxruntime"

    def __init__(self, model: EGMT, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 threads: int | None = None, providers: list[str] | None = None,
                 entity_policy: str = "dynamic", cache_dir: str | Path | None = None,
                 force_export: bool = False, hash_: str | None = None) -> None:
        super().__init__(model)
        if dtype != torch.float32:
            raise ValueError(f"the onnxruntime backend runs the float32 graph; got dtype {dtype} "
                             "(reduced precision: backend 'torch' on cuda, or 'tensorrt' with fp16)")
        if entity_policy not in ENTITY_POLICIES:
            raise ValueError(f"entity_policy must be one of {ENTITY_POLICIES}, got {entity_policy!r}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'onnxruntime' needs the Python package 'onnxruntime' (pip install onnxruntime, or "
                f"onnxruntime-gpu for CUDA): {exc}") from exc
        self.entity_policy = entity_policy
        self.model = model.to("cpu", torch.float32).eval()
        self.device = torch.device(device)
        self.hash = hash_ or model_hash(self.model)
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        n = f"n{self.max_entities}" if entity_policy == "fixed" else "ndyn"
        self.onnx_path = root / "onnx" / f"egmt_{self.hash[:16]}_{n}_opset{DEFAULT_OPSET}.onnx"
        if force_export or not self.onnx_path.is_file():
            t0 = time.perf_counter()
            export_onnx(self.model, self.onnx_path,
                             entities=self.max_entities if entity_policy == "fixed" else None)
            self.setup_seconds["export"] = time.perf_counter() - t0
        available = ort.get_available_providers()
        if providers is None:
            providers = ["CPUExecutionProvider"]
            if self.device.type == "cuda":
                if "CUDAExecutionProvider" in available:
                    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
                else:
                    warnings.warn("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu); "
                                  "running on the CPU", RuntimeWarning, stacklevel=2)
        t0 = time.perf_counter()
        self.runner = OnnxFuser(self.onnx_path, threads=threads, providers=providers)
        self.setup_seconds["session"] = time.perf_counter() - t0
        self.threads = threads
        self.session = self.runner.session
        self.providers = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._cuda = self.providers[0] == "CUDAExecutionProvider" and torch.cuda.is_available()
        self._hw: tuple[int, int] | None = None
        self._entities_changed()

    def _entities_changed(self) -> None:
        ent, mask = self._entity_arrays()
        self._ent_np, self._mask_np = ent, mask
        if getattr(self, "_cuda", False):
            self._ent_dev = torch.from_numpy(ent).cuda()
            self._mask_dev = torch.from_numpy(mask).cuda()

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        if self._cuda:
            return self._fuse_cuda(ir, vi)
        feeds = {"ir": np.ascontiguousarray(ir, np.float32)[None, None],
                 "vi": np.ascontiguousarray(vi, np.float32)[None, None],
                 "ent": self._ent_np, "ent_mask": self._mask_np}
        out = self.session.run(OUTPUT_NAMES, {k: v for k, v in feeds.items() if k in self.input_names})[0]
        return np.clip(out[0, 0], 0.0, 1.0).astype(np.float32)

    def _fuse_cuda(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """CUDA provider with I/O binding: pinned in, one H2D copy, output bound on the device, one D2H copy."""
        h, w = ir.shape
        if self._hw != (h, w):
            self._host_in = torch.empty((2, 1, 1, h, w), dtype=torch.float32, pin_memory=True)
            self._dev_in = torch.empty((2, 1, 1, h, w), dtype=torch.float32, device="cuda")
            self._dev_out = torch.empty((1, 1, h, w), dtype=torch.float32, device="cuda")
            self._host_out = torch.empty((h, w), dtype=torch.float32, pin_memory=True)
            self._hw = (h, w)
        host = self._host_in.numpy()
        host[0, 0, 0], host[1, 0, 0] = ir, vi
        self._dev_in.copy_(self._host_in, non_blocking=True)
        torch.cuda.current_stream().synchronize()  # ORT runs on its own stream
        binding = self.session.io_binding()
        bufs = {"ir": (self._dev_in[0], np.float32), "vi": (self._dev_in[1], np.float32),
                "ent": (self._ent_dev, np.float32), "ent_mask": (self._mask_dev, np.bool_)}
        for name in self.input_names:
            t, dt = bufs[name]
            binding.bind_input(name, "cuda", 0, dt, list(t.shape), t.data_ptr())
        binding.bind_output("fused", "cuda", 0, np.float32, list(self._dev_out.shape), self._dev_out.data_ptr())
        self.session.run_with_iobinding(binding)
        self._host_out.copy_(self._dev_out[0, 0].clamp_(0.0, 1.0), non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return self._host_out.numpy().copy()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "providers": ",".join(self.providers), "threads": self.threads,
                "onnx": str(self.onnx_path)}
