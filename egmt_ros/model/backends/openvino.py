"""``openvino``: OpenVINO backend for EGMT's fusion path (the runtime the OpenVINO detector already uses).

The fusion path is exported to ONNX once per input size (H, W) with static shapes (the padding indices constant-fold)
and a fixed entity count (``config.max_entities`` rows, padding masked out), cached under ``<cache>/openvino`` keyed by
the model hash, then compiled by OpenVINO's CPU plugin. On the development machine (2 cores, AVX-512 with BF16, no AMX)
the static graph is 1.5 - 2x faster than torch eager, and ``bf16`` another ~20 % (measurements: docs/performance.md).

Options: ``precision`` ``"fp32"`` | ``"bf16"`` (OpenVINO's inference precision hint; default from ``dtype``, and
``"auto"`` = bf16 where the CPU reports BF16 support, else fp32; bf16 asked for on a CPU without it runs fp32
with a warning), ``threads`` (OpenVINO's inference threads of this
model; None = OpenVINO's default, all cores), ``cache_dir``, ``force_export``, ``ov_config`` (extra OpenVINO compile
properties). ``device`` ``"cpu"`` only: for CUDA use ``torch``, ``compile`` or ``tensorrt``.

Before OpenVINO reads the export, :func:`commute_depth_to_space_slices` moves channel slices of a DepthToSpace
(PixelShuffle) output in front of it: the same values, but OpenVINO then slices the small half-resolution tensor
instead of running its reference VariadicSplit on the full-resolution one (rt decoder at 640x480, bf16, 1 thread:
29.0 -> 26.5 ms per call, bit-identical output).

In ``bf16`` the rt decoder's information prior and the source phases it reads (:func:`float32_node`: the
parameter-free ``InformationPrior`` and ``SourcePhases`` of ``info_prior`` models) run in float32
(:func:`read_model_with_float32_nodes`): the prior's weight is a ratio of fourth powers of local statistics and its
logit is taken near 0 and 1, where bfloat16's 8-bit mantissa costs up to 0.4 in the logit. Measured on the shipped
egmt_rt (fp32 eager as reference, 1 thread): the TNO crop 97 x 131 of the tests 4.8e-3 (1.7e-2 without the mark);
12 whole TNO42 images max 3.2e-2 (without the mark 5.1e-2). Marking the decoder's tail as well changed none of those
maxima; the mark costs ~1 ms at 640 x 480 (31.3 vs 30.2 ms per call).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from egmt_ros.model.backends.base import (BackendUnavailableError, FuseBackend, atomic_write_bytes, default_cache_dir,
                                          model_hash)
from egmt_ros.model.export import DEFAULT_OPSET, INPUT_NAMES, export_onnx
from egmt_ros.model.network import EGMT

OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
_FROM_DTYPE = {torch.float32: "fp32", torch.bfloat16: "bf16"}
#: Revision of the graph rewrites applied to the cached export (part of its file name: a new rewrite re-exports).
GRAPH_REVISION = 2
_INT64_MAX = 2**63 - 1


def _constants(graph: Any) -> dict[str, np.ndarray]:
    """Values of the graph's initializers and Constant nodes, by output name."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def commute_depth_to_space_slices(graph: Any) -> int:
    """Rewrite ``Slice(DepthToSpace(x), channels a:b)`` as ``DepthToSpace(Slice(x, channels a*r*r:b*r*r))`` in an
    ONNX graph (in place), for every DepthToSpace in CRD mode (PyTorch's PixelShuffle) whose users are all such
    slices (constant, non-negative bounds on axis 1, step 1). In CRD mode output channel c is made of input channels
    c*r*r .. c*r*r + r*r - 1, so both give the same values. Returns the number of slices moved (0: graph unchanged).
    """
    from onnx import TensorProto, helper

    consts = _constants(graph)
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def channel_bounds(node: Any) -> tuple[int, int] | None:
        if node.op_type != "Slice" or len(node.input) < 4 or any(n not in consts for n in node.input[1:]):
            return None
        starts, ends, axes = (consts[n].ravel() for n in node.input[1:4])
        steps = consts[node.input[4]].ravel() if len(node.input) > 4 else np.ones(1, np.int64)
        if len(starts) != 1 or int(axes[0]) not in (1, -3) or int(steps[0]) != 1 or starts[0] < 0 or ends[0] < 0:
            return None
        return int(starts[0]), int(ends[0])

    moved = 0
    for d2s in [n for n in graph.node if n.op_type == "DepthToSpace"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in d2s.attribute}
        slices = users.get(d2s.output[0], [])
        bounds = [channel_bounds(s) for s in slices]
        if attrs.get("mode", b"DCR") != b"CRD" or d2s.output[0] in outputs or not slices or None in bounds:
            continue
        r2 = int(attrs["blocksize"]) ** 2
        for s, (start, end) in zip(slices, bounds):
            names = [f"{s.name}_pre_d2s_{k}" for k in ("starts", "ends", "axes")]
            for name, v in zip(names, (start * r2, end * r2 if end < _INT64_MAX // r2 else _INT64_MAX, 1)):
                graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [v]))
            out, mid = s.output[0], f"{s.output[0]}_pre_d2s"
            s.input[:] = [d2s.input[0], *names]
            s.output[0] = mid
            shuffle = helper.make_node("DepthToSpace", [mid], [out], name=f"{s.name}_d2s", **attrs)
            graph.node.insert(list(graph.node).index(s) + 1, shuffle)
            moved += 1
        graph.node.remove(d2s)
    return moved


def optimise_onnx(src: Path, dst: Path) -> int:
    """The export ``src`` with the rewrites above, written to ``dst`` atomically; returns the rewrites made."""
    import onnx

    model = onnx.load(str(src))
    moved = commute_depth_to_space_slices(model.graph)
    atomic_write_bytes(dst, model.SerializeToString())
    return moved


def float32_node(name: str) -> bool:
    """Whether an exported node runs in float32 under ``bf16``: the rt decoder's information prior and the source
    phases it reads (ONNX names ``/recon/prior/<op>``, ``/recon/phases/<op>``; module docstring)."""
    return re.fullmatch(r"/recon/(prior|phases)/[^/]+", name) is not None


_LAYER_TAG = re.compile(r'<layer [^>]*\bname="([^"]*)"[^>]*(?<!/)>')


def read_model_with_float32_nodes(core: Any, onnx_path: Path, keep: Callable[[str], bool]) -> tuple[Any, int]:
    """OpenVINO's model of ``onnx_path`` with the nodes whose names ``keep`` accepts marked to run in their own
    precision (float32) whatever the inference precision hint; returns (model, nodes marked). The mark is OpenVINO's
    runtime attribute ``precise`` (``ov::disable_fp16_compression``), which its Python API cannot set: the model goes
    through its IR, whose XML carries the attribute."""
    ov = _import_openvino()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(core.read_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        text, weights = xml.read_text(), xml.with_suffix(".bin").read_bytes()
    marked = 0

    def mark(m: re.Match) -> str:
        nonlocal marked
        if not keep(m.group(1)):
            return m.group(0)
        marked += 1
        return m.group(0) + '<rt_info><attribute name="precise" version="0" /></rt_info>'

    text = _LAYER_TAG.sub(mark, text)
    return core.read_model(text, ov.Tensor(np.frombuffer(weights, np.uint8).copy())), marked


def _import_openvino():
    """The ``openvino`` module; BackendUnavailableError naming the package when it is not installed."""
    if importlib.util.find_spec("openvino") is None:
        raise BackendUnavailableError("backend 'openvino' needs the Python package 'openvino' (pip install openvino)")
    import openvino as ov

    return ov


class OpenVINOBackend(FuseBackend):
    """The static-shape ONNX export of the fusion path, compiled by OpenVINO per input size."""

    name = "openvino"
    entity_policy = "fixed"

    def __init__(self, model: EGMT, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 threads: int | None = None, precision: str | None = None, cache_dir: str | Path | None = None,
                 force_export: bool = False, ov_config: dict[str, Any] | None = None,
                 hash_: str | None = None) -> None:
        ov = _import_openvino()
        super().__init__(model)
        if torch.device(device).type != "cpu":
            raise ValueError(f"backend 'openvino' runs on the CPU; got device {device!r} (on CUDA use backend "
                             "'torch', 'compile' or 'tensorrt')")
        self.core = ov.Core()
        if precision is None:
            if dtype not in _FROM_DTYPE:
                raise ValueError(f"backend 'openvino' takes dtype float32 or bfloat16, got {dtype}")
            precision = _FROM_DTYPE[dtype]
        has_bf16 = "BF16" in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision == "auto":
            precision = "bf16" if has_bf16 else "fp32"
        elif precision == "bf16" and not has_bf16:
            warnings.warn("backend 'openvino': this CPU has no bfloat16 support; running fp32", RuntimeWarning,
                          stacklevel=2)
            precision = "fp32"
        if precision not in OV_PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(OV_PRECISIONS)} or 'auto', got {precision!r}")
        self.precision = precision
        self.threads = int(threads) if threads else None
        # no CPU pinning: on a robot the fusion, detection and camera processes share the cores, and a pinned
        # thread waits for its core even when another one is idle
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision],
                                       "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if self.threads:
            self.config["INFERENCE_NUM_THREADS"] = self.threads
        self.config.update(ov_config or {})
        self.model = model.to("cpu", torch.float32).eval()
        self.hash = hash_ or model_hash(self.model)
        self.root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "openvino"
        self.force_export = force_export
        self._requests: dict[tuple[int, int], tuple[Any, list[str]]] = {}
        self._entities_changed()

    def _entities_changed(self) -> None:
        self._ent_np, self._mask_np = self._entity_arrays()

    def onnx_path(self, h: int, w: int) -> Path:
        """The cached static-shape export for an input of ``h`` x ``w``."""
        return self.root / (f"egmt_{self.hash[:16]}_{h}x{w}_n{self.max_entities}_opset{DEFAULT_OPSET}"
                            f"_g{GRAPH_REVISION}.onnx")

    def _request(self, h: int, w: int) -> tuple[Any, list[str]]:
        """The infer request for this size (exported and compiled on first use) and its input names in order."""
        if (h, w) in self._requests:
            return self._requests[(h, w)]
        path = self.onnx_path(h, w)
        t0 = time.perf_counter()
        if self.force_export or not path.is_file():
            raw = path.with_name(f"{path.stem}.{os.getpid()}.raw.onnx")
            export_onnx(self.model, raw, entities=self.max_entities, static_hw=(h, w))
            optimise_onnx(raw, path)
            raw.unlink()
            self.setup_seconds[f"export {h}x{w}"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        if self.precision == "bf16":
            model, _ = read_model_with_float32_nodes(self.core, path, float32_node)
        else:
            model = self.core.read_model(str(path))
        compiled = self.core.compile_model(model, "CPU", self.config)
        # the exporter may rename or drop inputs the graph does not use: match by any of each input's names
        names = [next(n for n in port.get_names() if n in INPUT_NAMES) for port in compiled.inputs]
        self._requests[(h, w)] = (compiled.create_infer_request(), names)
        self.setup_seconds[f"compile {h}x{w}"] = time.perf_counter() - t1
        return self._requests[(h, w)]

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        request, names = self._request(*ir.shape)
        feeds = {"ir": np.ascontiguousarray(ir, np.float32)[None, None],
                 "vi": np.ascontiguousarray(vi, np.float32)[None, None], "ent": self._ent_np,
                 "ent_mask": self._mask_np}
        # inputs read in place, the output a view of OpenVINO's buffer: the clip is the one copy
        out = request.infer({n: feeds[n] for n in names}, share_inputs=True, share_outputs=True)[0]
        return np.clip(out[0, 0], 0.0, 1.0)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": self.precision, "threads": self.threads or "default",
                "onnx": [str(self.onnx_path(*k)) for k in self._requests]}
