"""ONNX export of EGMT's fusion path (no multi-label head) and an ONNX Runtime runner.

Graph: inputs ``ir`` ``[B, 1, H, W]`` float32, ``vi`` ``[B, 1, H, W]`` float32, ``ent`` ``[B, N, text_dim]`` float32,
``ent_mask`` ``[B, N]`` bool (True = valid); output ``fused`` ``[B, 1, H, W]`` in [0, 1]. By default B, H, W and N
are dynamic; any H, W >= 1 and N >= 0 (N = 0: no entities) run (checked by test/test_checkpoint_onnx.py). The
backends ask for a fixed N, a static size or a float mask (TensorRT) from the same exporter.

Exported with the TorchScript-based exporter (``dynamo=False``, opset 17): the dynamo exporter needs the
``onnxscript`` package, which is not a dependency. Padding indices are computed with tensor ops so H and W stay
dynamic in the graph.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from egmt_ros.model.network import EGMT

INPUT_NAMES = ["ir", "vi", "ent", "ent_mask"]
OUTPUT_NAMES = ["fused"]
DEFAULT_OPSET = 17


class FusePath(nn.Module):
    """The fusion path with four explicit inputs, for export: ``float_mask`` takes the mask as float (> 0.5 valid)
    and ``compute_dtype`` runs the network in that dtype with float32 inputs and output (an fp16 TensorRT graph)."""

    def __init__(self, model: EGMT, float_mask: bool = False, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model, self.float_mask, self.compute_dtype = model, float_mask, compute_dtype

    def forward(self, ir: Tensor, vi: Tensor, ent: Tensor, ent_mask: Tensor) -> Tensor:
        mask = ent_mask > 0.5 if self.float_mask else ent_mask
        d = self.compute_dtype
        return self.model.fuse(ir.to(d), vi.to(d), ent.to(d), mask).to(torch.float32)


def export_onnx(model: EGMT, path: str | Path, opset: int = DEFAULT_OPSET, entities: int | None = None,
                static_hw: tuple[int, int] | None = None, float_mask: bool = False,
                compute_dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Path:
    """THE ONNX export of the fusion path of (a copy of) ``model`` to ``path``, atomically; returns the path. The CLI
    (``python -m egmt_ros.cli.export_onnx``), the onnxruntime backend and the TensorRT backend all call it.

    ``entities``: None = dynamic N, else a fixed N. ``static_hw``: None = dynamic H, W, else that size (constant-folds
    the padding indices: what TensorRT gets). B is 1 when ``static_hw`` is given, else dynamic.
    Inputs ``ir``, ``vi`` ``[B,1,H,W]`` f32, ``ent`` ``[B,N,D]`` f32, ``ent_mask`` ``[B,N]`` bool (f32 with
    ``float_mask``); output ``fused`` ``[B,1,H,W]`` f32. Inputs the model does not use may be dropped by the exporter.
    """
    if opset < 17:
        raise ValueError("opset >= 17 is required (LayerNormalization)")
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
            torch.onnx.export(FusePath(m, float_mask, compute_dtype), args, str(tmp), dynamo=False,
                              opset_version=opset, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                              dynamic_axes=dyn or None, do_constant_folding=True)
    os.replace(tmp, p)
    return p


class OnnxFuser:
    """Runs an exported graph with ONNX Runtime (CPU by default)."""

    def __init__(self, path: str | Path, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), so, providers=providers or ["CPUExecutionProvider"])
        ent_shape = self.session.get_inputs()[2].shape
        self.text_dim = int(ent_shape[2])

    def run(self, ir: np.ndarray, vi: np.ndarray, ent: np.ndarray | None = None,
            ent_mask: np.ndarray | None = None) -> np.ndarray:
        """``[B,1,H,W]`` float32 arrays in, fused ``[B,1,H,W]`` out; ``ent`` None means no entities (N = 0)."""
        b = ir.shape[0]
        if ent is None:
            ent = np.zeros((b, 0, self.text_dim), np.float32)
        if ent_mask is None:
            ent_mask = np.ones(ent.shape[:2], dtype=bool)
        feeds = {"ir": ir.astype(np.float32), "vi": vi.astype(np.float32), "ent": ent.astype(np.float32),
                 "ent_mask": ent_mask.astype(bool)}
        return self.session.run(None, feeds)[0]
