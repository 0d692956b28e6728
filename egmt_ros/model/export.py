"""ONNX export of EGMT's fusion path (no multi-label head) and an ONNX Runtime runner.

Graph: inputs ``ir`` ``[B, 1, H, W]`` float32, ``vi`` ``[B, 1, H, W]`` float32, ``ent`` ``[B, N, text_dim]`` float32,
``ent_mask`` ``[B, N]`` bool (True = valid); output ``fused`` ``[B, 1, H, W]`` in [0, 1]. B, H, W and N are dynamic;
any H, W >= 1 and N >= 0 (N = 0: no entities) run (checked by test/test_checkpoint_onnx.py).

Exported with the TorchScript-based exporter (``dynamo=False``, opset 17): the dynamo exporter needs the
``onnxscript`` package, which is not a dependency. Padding indices are computed with tensor ops so H and W stay
dynamic in the graph.
"""

from __future__ import annotations

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
    """Wraps :meth:`EGMT.fuse` with the four explicit inputs the ONNX graph has."""

    def __init__(self, model: EGMT) -> None:
        super().__init__()
        self.model = model

    def forward(self, ir: Tensor, vi: Tensor, ent: Tensor, ent_mask: Tensor) -> Tensor:
        return self.model.fuse(ir, vi, ent, ent_mask)


def export_onnx(model: EGMT, path: str | Path, opset: int = DEFAULT_OPSET, sample_hw: tuple[int, int] = (96, 128),
                sample_entities: int = 4) -> Path:
    """Export the fusion path of ``model`` (copied to CPU, eval mode) to ``path``; returns the path."""
    if opset < 17:
        raise ValueError("opset >= 17 is required (LayerNormalization)")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    was_training = model.training
    device = next(model.parameters()).device
    model.eval().cpu()
    h, w = sample_hw
    args = (torch.rand(1, 1, h, w), torch.rand(1, 1, h, w), torch.randn(1, sample_entities, cfg.text_dim),
            torch.ones(1, sample_entities, dtype=torch.bool))
    dyn = {"ir": {0: "B", 2: "H", 3: "W"}, "vi": {0: "B", 2: "H", 3: "W"}, "ent": {0: "B", 1: "N"},
           "ent_mask": {0: "B", 1: "N"}, "fused": {0: "B", 2: "H", 3: "W"}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape checks
            torch.onnx.export(FusePath(model), args, str(p), dynamo=False, opset_version=opset,
                              input_names=INPUT_NAMES, output_names=OUTPUT_NAMES, dynamic_axes=dyn,
                              do_constant_folding=True)
    finally:
        model.to(device).train(was_training)
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
