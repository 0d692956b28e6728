"""Inference backends for EGMT's fusion path, behind one interface, chosen by name.

=============== ==================================================================================================
``torch``       PyTorch eager (alias ``eager``). CPU or CUDA; float32, float16 or bfloat16 (``dtype``);
                ``threads`` sets torch's (process-wide) intra-op threads.
``compile``     ``torch.compile`` of the same module, compiled once per input size (H, W) on first use; on CUDA
                with ``mode="reduce-overhead"`` (CUDA graphs).
``onnxruntime`` The fusion path exported to ONNX once into the cache (``<cache>/onnx``), keyed by the model hash
                (weights + config) and the entity-count policy, then run by ONNX Runtime
                (:class:`egmt_ros.model.export.OnnxFuser`): CUDA execution provider when ``device="cuda"`` and it is
                installed, else CPU; ``threads`` sets its intra-op threads. float32 only.
``tensorrt``    A TensorRT engine built from a static-shape ONNX export, cached in ``<cache>/tensorrt`` keyed by
                model hash, H, W, precision (``fp32`` | ``fp16`` | ``int8``), GPU name and TensorRT version;
                ``force_engine_update=True`` rebuilds it. Written against the documented TensorRT 10/11 Python API
                and NOT run here (no TensorRT, no GPU on the development machines): unverified.
=============== ==================================================================================================

Every backend takes the entity text features as an input: ``set_entities(feats)`` with ``feats`` ``[N, text_dim]``
float32 (or None for none), and passes them with a validity mask (``[1, N]`` bool, True = valid) to the graph. Two
entity-count policies: ``"dynamic"`` (the graph takes any N, what eager does) and ``"fixed"`` (the features are padded
to ``config.max_entities`` rows and the padding masked out: one graph for every entity set, so ``compile`` never
recompiles when the entities change and TensorRT needs one profile). Masked entities get an attention bias of
-inf, so padding does not change the result (the network always appends a learned null entity).

GPU path (torch backends on ``device="cuda"``): the model runs in ``dtype`` (fp16/bf16 allowed); the IR and visible
frames are written into one pinned host buffer and moved with ONE host-to-device copy per image, cast to ``dtype``
on the GPU; the output is clamped and cast to float32 on the GPU and moved back with one device-to-host copy into a
pinned buffer. TensorRT and ONNX Runtime's CUDA provider use the same pinned in / one copy / pinned out scheme. The
CUDA code paths cannot be run on the development machines (no GPU there): they are unverified.

The cache root is ``$EGMT_CACHE_DIR``, else ``$XDG_CACHE_HOME/egmt_ros``, else ``~/.cache/egmt_ros``; files are
written atomically (temporary file + rename), so concurrent processes never read half a file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from egmt_ros.model.export import DEFAULT_OPSET, INPUT_NAMES, OUTPUT_NAMES, OnnxFuser
from egmt_ros.model.network import EGMT

BACKENDS = ("torch", "compile", "onnxruntime", "tensorrt")
ALIASES = {"eager": "torch", "torch_compile": "compile", "ort": "onnxruntime", "onnx": "onnxruntime",
           "trt": "tensorrt"}
ENTITY_POLICIES = ("dynamic", "fixed")
PRECISIONS = ("fp32", "fp16", "int8")


class BackendUnavailableError(ImportError):
    """A backend's package (or hardware) is missing; the message names what to install."""


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$EGMT_CACHE_DIR``, else ``$XDG_CACHE_HOME/egmt_ros``, else ``~/.cache/egmt_ros``."""
    if os.environ.get("EGMT_CACHE_DIR"):
        return Path(os.environ["EGMT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "egmt_ros"


def model_hash(model: EGMT) -> str:
    """SHA-256 (hex) of the model's config and weights: equal weights give equal cache keys, whatever the file."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-") or "unknown"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
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


class _FusePath(nn.Module):
    """The fusion path with four explicit inputs, for export: ``float_mask`` takes the mask as float (> 0.5 valid)
    and ``compute_dtype`` runs the network in that dtype with float32 inputs and output (an fp16 TensorRT graph)."""

    def __init__(self, model: EGMT, float_mask: bool = False, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model, self.float_mask, self.compute_dtype = model, float_mask, compute_dtype

    def forward(self, ir: Tensor, vi: Tensor, ent: Tensor, ent_mask: Tensor) -> Tensor:
        mask = ent_mask > 0.5 if self.float_mask else ent_mask
        d = self.compute_dtype
        return self.model.fuse(ir.to(d), vi.to(d), ent.to(d), mask).to(torch.float32)


def export_fuse_onnx(model: EGMT, path: str | Path, entities: int | None = None,
                     static_hw: tuple[int, int] | None = None, float_mask: bool = False,
                     compute_dtype: torch.dtype = torch.float32, opset: int = DEFAULT_OPSET,
                     device: str | torch.device = "cpu") -> Path:
    """Export the fusion path of (a copy of) ``model`` to ``path`` atomically; returns the path.

    ``entities``: None = dynamic N, else a fixed N. ``static_hw``: None = dynamic H, W, else that size (constant-folds
    the padding indices: what TensorRT gets). B is 1 when ``static_hw`` is given, else dynamic.
    Inputs ``ir``, ``vi`` ``[B,1,H,W]`` f32, ``ent`` ``[B,N,D]`` f32, ``ent_mask`` ``[B,N]`` bool (f32 with
    ``float_mask``); output ``fused`` ``[B,1,H,W]`` f32. Inputs the model does not use may be dropped by the exporter.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    m = copy.deepcopy(model).to(dev, compute_dtype).eval()
    cfg = m.config
    n = entities if entities is not None else 4
    h, w = static_hw if static_hw is not None else (96, 128)
    mask = torch.ones(1, n, dtype=torch.bool, device=dev)
    if n:
        mask[0, -1] = False  # a masked row in the sample keeps the masking ops in the graph
    args = (torch.rand(1, 1, h, w, device=dev), torch.rand(1, 1, h, w, device=dev),
            torch.randn(1, n, cfg.text_dim, device=dev), mask.float() if float_mask else mask)
    dyn: dict[str, dict[int, str]] = {}
    if static_hw is None:
        dyn = {"ir": {0: "B", 2: "H", 3: "W"}, "vi": {0: "B", 2: "H", 3: "W"}, "ent": {0: "B"},
               "ent_mask": {0: "B"}, "fused": {0: "B", 2: "H", 3: "W"}}
    if entities is None:
        dyn.setdefault("ent", {})[1] = "N"
        dyn.setdefault("ent_mask", {})[1] = "N"
    tmp = p.with_name(f"{p.stem}.{os.getpid()}.tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape checks
        with torch.no_grad():
            torch.onnx.export(_FusePath(m, float_mask, compute_dtype), args, str(tmp), dynamo=False,
                              opset_version=opset, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                              dynamic_axes=dyn or None, do_constant_folding=True)
    os.replace(tmp, p)
    return p


# ----------------------------------------------------------------------------------------------------------------
# the interface
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# torch eager / torch.compile
# ----------------------------------------------------------------------------------------------------------------
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

    def _forward(self, ir: Tensor, vi: Tensor) -> Tensor:
        return self.model.fuse(ir, vi, self._ent, self._mask)

    @torch.inference_mode()
    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        t_ir, t_vi = self._inputs(ir, vi)
        return self._output(self._forward(t_ir, t_vi))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "threads": torch.get_num_threads()}


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
        self._sizes: set[tuple[int, int]] = set()
        self._entities_changed()  # always pass (padded) entity tensors: one graph per size

    def _forward(self, ir: Tensor, vi: Tensor) -> Tensor:
        key = (int(ir.shape[-2]), int(ir.shape[-1]))
        if key in self._sizes:
            return self._compiled(ir, vi, self._ent, self._mask)
        t0 = time.perf_counter()
        out = self._compiled(ir, vi, self._ent, self._mask)
        self.setup_seconds[f"compile {key[0]}x{key[1]}"] = time.perf_counter() - t0
        self._sizes.add(key)
        return out

    def info(self) -> dict[str, Any]:
        return {**super().info(), "mode": self.mode or "default", "compiled_sizes": sorted(self._sizes)}


# ----------------------------------------------------------------------------------------------------------------
# ONNX Runtime
# ----------------------------------------------------------------------------------------------------------------
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
            export_fuse_onnx(self.model, self.onnx_path,
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


# ----------------------------------------------------------------------------------------------------------------
# TensorRT (unverified here: written against the documented TensorRT 10 / 11 Python API)
# ----------------------------------------------------------------------------------------------------------------
def _import_tensorrt():
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'tensorrt' needs NVIDIA TensorRT's Python package 'tensorrt' (pip install tensorrt, on a "
            "machine with an NVIDIA GPU and CUDA); it is not installed here. Use backend 'onnxruntime' or "
            f"'compile' instead. ({exc})") from exc
    return trt


def engine_key(hash_: str, h: int, w: int, precision: str, gpu: str, trt_version: str, entities: int) -> str:
    """The engine cache file stem: model hash, input size, precision, entity count, GPU name, TensorRT version."""
    return f"egmt_{hash_[:16]}_{h}x{w}_{precision}_n{entities}_{_slug(gpu)}_trt{_slug(trt_version)}"


class TensorRTBackend(FuseBackend):
    """A TensorRT engine per input size (H, W), built on first use of that size and cached on disk.

    Precision ``fp32`` builds the float32 graph with TF32 off; ``fp16`` exports the network in float16 (float32 I/O)
    and builds it strongly typed, which works on TensorRT 10 and 11 (11 removed the FP16 builder flag); ``int8``
    uses entropy calibration on ``calib_images`` (the TensorRT 10 implicit-quantization API, removed in 11: there
    an explicitly quantized Q/DQ graph from NVIDIA ModelOpt is needed, which egmt_ros does not produce).
    UNVERIFIED: TensorRT cannot be installed on the machines this was written on.
    """

    name = "tensorrt"
    entity_policy = "fixed"

    def __init__(self, model: EGMT, device: str | torch.device = "cuda", dtype: torch.dtype = torch.float32,
                 precision: str | None = None, cache_dir: str | Path | None = None,
                 force_engine_update: bool = False, workspace_gb: float = 2.0,
                 calib_images: list[tuple[np.ndarray, np.ndarray]] | None = None,
                 hash_: str | None = None) -> None:
        self.trt = _import_tensorrt()  # first: the clear error when the package is missing
        super().__init__(model)
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'tensorrt' needs a CUDA GPU, and torch sees none")
        dev = torch.device(device)
        self.device = dev if dev.type == "cuda" else torch.device("cuda")
        if precision is None:
            precision = {torch.float16: "fp16", torch.bfloat16: "fp16"}.get(dtype, "fp32")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.model = model.to("cpu", torch.float32).eval()
        self.hash = hash_ or model_hash(self.model)
        self.root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "tensorrt"
        self.force_engine_update = force_engine_update
        self.workspace = int(workspace_gb * (1 << 30))
        self.calib_images = calib_images
        self.gpu_name = torch.cuda.get_device_name(self.device)
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self._engines: dict[tuple[int, int], Any] = {}
        self._stream = torch.cuda.Stream(self.device)
        self._entities_changed()

    # --- entities (float mask, on the device) ---
    def _entities_changed(self) -> None:
        ent, mask = self._entity_arrays()
        self._ent_dev = torch.from_numpy(ent).to(self.device)
        self._mask_dev = torch.from_numpy(mask.astype(np.float32)).to(self.device)

    # --- engine cache ---
    def engine_path(self, h: int, w: int) -> Path:
        return self.root / (engine_key(self.hash, h, w, self.precision, self.gpu_name, self.trt.__version__,
                                       self.max_entities) + ".engine")

    def _build(self, h: int, w: int, path: Path) -> bytes:
        trt = self.trt
        half = self.precision == "fp16"
        onnx_path = path.with_suffix(".onnx")
        export_fuse_onnx(self.model, onnx_path, entities=self.max_entities, static_hw=(h, w), float_mask=True,
                         compute_dtype=torch.float16 if half else torch.float32,
                         device=self.device if half else "cpu")
        builder = trt.Builder(self.logger)
        flags = 0
        strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if strongly is not None and self.precision != "int8":
            flags |= 1 << int(strongly)  # the graph's own types decide the precision (required on TRT 11)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        tf32 = getattr(trt.BuilderFlag, "TF32", None)
        if tf32 is not None and self.precision == "fp32":
            config.clear_flag(tf32)  # keep fp32 engines within 1e-3 of PyTorch
        if self.precision == "int8":
            if not hasattr(trt.BuilderFlag, "INT8") or not hasattr(trt, "IInt8EntropyCalibrator2"):
                raise RuntimeError(
                    f"int8 with TensorRT {trt.__version__} needs an explicitly quantized (Q/DQ) ONNX graph (NVIDIA "
                    "ModelOpt); egmt_ros only supports implicit int8 calibration (TensorRT 10). Use fp16.")
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _make_calibrator(trt, self, h, w, path.with_suffix(".calib"))
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
        data = bytes(serialized)
        _atomic_write_bytes(path, data)
        meta = {"model_hash": self.hash, "height": h, "width": w, "precision": self.precision,
                "entities": self.max_entities, "gpu": self.gpu_name, "tensorrt": trt.__version__,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _atomic_write_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
        return data

    def _engine(self, h: int, w: int) -> dict[str, Any]:
        if (h, w) in self._engines:
            return self._engines[(h, w)]
        path = self.engine_path(h, w)
        t0 = time.perf_counter()
        if self.force_engine_update or not path.is_file():
            data = self._build(h, w, path)
            self.setup_seconds[f"build {h}x{w}"] = time.perf_counter() - t0
        else:
            data = path.read_bytes()
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise RuntimeError(f"TensorRT could not load the engine {path}; rebuild with force_engine_update=True")
        ctx = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        dev_in = torch.empty((2, 1, 1, h, w), dtype=torch.float32, device=self.device)
        bufs = {"ir": dev_in[0], "vi": dev_in[1], "ent": self._ent_dev, "ent_mask": self._mask_dev,
                "fused": torch.empty((1, 1, h, w), dtype=torch.float32, device=self.device)}
        for n in inputs:
            ctx.set_input_shape(n, tuple(bufs[n].shape))
        st = {"engine": engine, "ctx": ctx, "names": names, "bufs": bufs, "dev_in": dev_in,
              "host_in": torch.empty((2, 1, 1, h, w), dtype=torch.float32, pin_memory=True),
              "host_out": torch.empty((h, w), dtype=torch.float32, pin_memory=True)}
        self._engines[(h, w)] = st
        self.setup_seconds.setdefault(f"load {h}x{w}", time.perf_counter() - t0)
        return st

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        st = self._engine(*ir.shape)
        bufs = st["bufs"]
        bufs["ent"], bufs["ent_mask"] = self._ent_dev, self._mask_dev
        ctx = st["ctx"]
        for n in st["names"]:
            ctx.set_tensor_address(n, bufs[n].data_ptr())
        host = st["host_in"].numpy()
        host[0, 0, 0], host[1, 0, 0] = ir, vi
        with torch.cuda.stream(self._stream):
            st["dev_in"].copy_(st["host_in"], non_blocking=True)  # one H2D copy per image pair
            if not ctx.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            st["host_out"].copy_(bufs["fused"][0, 0].clamp_(0.0, 1.0), non_blocking=True)  # one D2H copy
        self._stream.synchronize()
        return st["host_out"].numpy().copy()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": self.precision, "gpu": self.gpu_name,
                "tensorrt": self.trt.__version__, "engines": [str(self.engine_path(*k)) for k in self._engines]}


def _make_calibrator(trt, backend: TensorRTBackend, h: int, w: int, cache: Path):
    """An IInt8EntropyCalibrator2 over ``backend.calib_images`` (default: the TNO42 pairs, resized to w x h)."""
    import cv2

    pairs = backend.calib_images
    if pairs is None:
        from egmt_ros.data.images import list_pairs, load_pair, to_gray
        from egmt_ros.paths import data_root

        pairs = [(ir, to_gray(vi)) for _, ir, vi in (
            (s, *load_pair(a, b)) for s, a, b in list_pairs(data_root(must_exist=True) / "tno42")[:32])]
    frames = [(cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA), cv2.resize(b, (w, h),
                                                                             interpolation=cv2.INTER_AREA))
              for a, b in pairs]

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.i = 0
            self.dev = torch.empty((2, 1, 1, h, w), dtype=torch.float32, device=backend.device)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # noqa: ANN001 - TensorRT's signature
            if self.i >= len(frames):
                return None
            a, b = frames[self.i]
            self.i += 1
            self.dev[0, 0, 0].copy_(torch.from_numpy(a))
            self.dev[1, 0, 0].copy_(torch.from_numpy(b))
            ptrs = {"ir": self.dev[0].data_ptr(), "vi": self.dev[1].data_ptr(),
                    "ent": backend._ent_dev.data_ptr(), "ent_mask": backend._mask_dev.data_ptr()}
            return [int(ptrs[n]) for n in names]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:  # noqa: ANN001
            _atomic_write_bytes(cache, bytes(data))

    return _Calibrator()


# ----------------------------------------------------------------------------------------------------------------
# factory
# ----------------------------------------------------------------------------------------------------------------
def canonical_backend(name: str) -> str:
    """``"eager"`` -> ``"torch"`` etc.; ValueError listing the backends for an unknown name."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)} "
                         f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
    return key


def make_backend(name: str, model: EGMT, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 **options: Any) -> FuseBackend:
    """Build backend ``name`` around ``model``.

    Options: ``torch``: ``threads`` (sets torch's process-wide intra-op threads); ``compile``: ``threads``,
    ``mode``, ``compile_options``; ``onnxruntime``: ``threads`` (this session's intra-op threads), ``providers``,
    ``entity_policy`` ("dynamic" | "fixed"), ``cache_dir``, ``force_export``; ``tensorrt``: ``precision``
    ("fp32" | "fp16" | "int8"; default from ``dtype``), ``cache_dir``, ``force_engine_update``, ``workspace_gb``,
    ``calib_images``. An option another backend does not take raises TypeError naming it.
    """
    key = canonical_backend(name)
    classes: dict[str, type[FuseBackend]] = {"torch": TorchBackend, "compile": CompileBackend,
                                             "onnxruntime": OnnxRuntimeBackend, "tensorrt": TensorRTBackend}
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return classes[key](model, device=device, dtype=dtype, **options)  # type: ignore[call-arg]
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise TypeError(f"backend {key!r} does not take option(s) {sorted(options)}: {exc}") from exc
        raise
