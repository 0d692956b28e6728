"""Inference backends for EGMT's fusion path, behind one interface, chosen by name: one file per backend and one
:func:`register_backend` line below (a new backend is a new file + one registration).

=============== ==================================================================================================
``torch``       PyTorch eager (alias ``eager``). CPU or CUDA; float32, float16 or bfloat16 (``dtype``);
                ``threads`` sets torch's (process-wide) intra-op threads.
``compile``     ``torch.compile`` of the same module, compiled once per input size (H, W) on first use; on CUDA
                with ``mode="reduce-overhead"`` (CUDA graphs).
``onnxruntime`` The fusion path exported to ONNX once into the cache (``<cache>/onnx``), keyed by the model hash
                (weights + config) and the entity-count policy, then run by ONNX Runtime
                (:class:`egmt_ros.model.export.OnnxFuser`): CUDA execution provider when ``device="cuda"`` and it is
                installed, else CPU; ``threads`` sets its intra-op threads. float32 only.
``openvino``    The fusion path exported to ONNX once per input size (static shapes, fixed entity count) into the
                cache (``<cache>/openvino``), compiled by OpenVINO's CPU plugin; ``precision`` ``fp32`` | ``bf16``
                (default from ``dtype``; ``auto`` = bf16 where the CPU has it); ``threads`` = its inference threads.
                The fastest CPU backend measured here (docs/performance.md). CPU only.
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

from typing import Any

import torch

from egmt_ros.model.backends.base import (ENTITY_POLICIES, BackendUnavailableError, FuseBackend, default_cache_dir,
                                          model_hash, pad_entities)
from egmt_ros.model.backends.onnx_runtime import OnnxRuntimeBackend
from egmt_ros.model.backends.openvino import OpenVINOBackend
from egmt_ros.model.backends.tensor_rt import PRECISIONS, TensorRTBackend
from egmt_ros.model.backends.torch_compile import CompileBackend
from egmt_ros.model.backends.torch_eager import TorchBackend
from egmt_ros.model.network import EGMT

__all__ = ["BACKENDS", "ALIASES", "ENTITY_POLICIES", "PRECISIONS", "BackendUnavailableError", "FuseBackend",
           "TorchBackend", "CompileBackend", "OnnxRuntimeBackend", "OpenVINOBackend", "TensorRTBackend",
           "canonical_backend", "resolve_dtype",
           "default_cache_dir", "make_backend", "model_hash", "pad_entities", "register_backend"]

#: Backend name -> class, in registration order.
_REGISTRY: dict[str, type[FuseBackend]] = {}
#: Other names a backend answers to.
ALIASES: dict[str, str] = {}


def register_backend(cls: type[FuseBackend], *aliases: str) -> None:
    """Make ``cls`` available under ``cls.name`` (and ``aliases``) to :func:`make_backend`."""
    _REGISTRY[cls.name] = cls
    ALIASES.update({a: cls.name for a in aliases})


register_backend(TorchBackend, "eager")
register_backend(CompileBackend, "torch_compile")
register_backend(OnnxRuntimeBackend, "ort", "onnx")
register_backend(OpenVINOBackend, "ov")
register_backend(TensorRTBackend, "trt")

#: The registered backend names.
BACKENDS = tuple(_REGISTRY)


def canonical_backend(name: str) -> str:
    """``"eager"`` -> ``"torch"`` etc.; ValueError listing the backends for an unknown name."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; use one of {', '.join(_REGISTRY)} "
                         f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
    return key


#: ``dtype="auto"``: each backend's fastest dtype within the 1e-2 agreement bound (measured: docs/performance.md)
AUTO_DTYPES = {"openvino": "bfloat16"}


def resolve_dtype(dtype: str, backend: str) -> str:
    """``"auto"`` -> :data:`AUTO_DTYPES` of ``backend`` (openvino: bfloat16, run as fp32 on a CPU without it), else
    float32; any other value unchanged."""
    return AUTO_DTYPES.get(canonical_backend(backend), "float32") if dtype == "auto" else dtype


def make_backend(name: str, model: EGMT, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 **options: Any) -> FuseBackend:
    """Build backend ``name`` around ``model``.

    Options: ``torch``: ``threads`` (sets torch's process-wide intra-op threads); ``compile``: ``threads``,
    ``mode``, ``compile_options``; ``onnxruntime``: ``threads`` (this session's intra-op threads), ``providers``,
    ``entity_policy`` ("dynamic" | "fixed"), ``cache_dir``, ``force_export``; ``openvino``: ``threads``,
    ``precision`` ("fp32" | "bf16" | "auto"; default from ``dtype``), ``cache_dir``, ``force_export``, ``ov_config``;
    ``tensorrt``: ``precision``
    ("fp32" | "fp16" | "int8"; default from ``dtype``), ``cache_dir``, ``force_engine_update``, ``workspace_gb``,
    ``calib_images``. An option another backend does not take raises TypeError naming it.
    """
    key = canonical_backend(name)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return _REGISTRY[key](model, device=device, dtype=dtype, **options)  # type: ignore[call-arg]
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise TypeError(f"backend {key!r} does not take option(s) {sorted(options)}: {exc}") from exc
        raise
