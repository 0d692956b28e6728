"""``tensorrt``: cached TensorRT engines per input size (UNVERIFIED: written against the documented TensorRT 10/11
Python API; no TensorRT or GPU on the development machines)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egmt_ros.model.backends.base import (BackendUnavailableError, FuseBackend, atomic_write_bytes,
                                          default_cache_dir, model_hash, slug)
from egmt_ros.model.export import export_onnx
from egmt_ros.model.network import EGMT

PRECISIONS = ("fp32", "fp16", "int8")


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
    return f"egmt_{hash_[:16]}_{h}x{w}_{precision}_n{entities}_{slug(gpu)}_trt{slug(trt_version)}"


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
        export_onnx(self.model, onnx_path, entities=self.max_entities, static_hw=(h, w), float_mask=True,
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
        atomic_write_bytes(path, data)
        meta = {"model_hash": self.hash, "height": h, "width": w, "precision": self.precision,
                "entities": self.max_entities, "gpu": self.gpu_name, "tensorrt": trt.__version__,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
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
    """An IInt8EntropyCalibrator2 over ``backend.calib_images`` (default: 32 RoadScene pairs, a training set, resized
    to w x h; never a test set such as TNO, which the benchmarks score)."""
    import cv2

    pairs = backend.calib_images
    if pairs is None:
        from egmt_ros.core.images import list_pairs, load_pair, to_gray
        from egmt_ros.paths import data_root

        pairs = [(ir, to_gray(vi)) for _, ir, vi in (
            (s, *load_pair(a, b)) for s, a, b in list_pairs(data_root(must_exist=True) / "roadscene")[:32])]
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
            atomic_write_bytes(cache, bytes(data))

    return _Calibrator()
