"""The per-frame fusion pipeline shared by the fusion node, the fusion CLI and the benchmarks (ROS-free).

thermal frame (mono8/mono16/16UC1/32FC1/bgr8) -> AGC -> [0, 1] grey -> homography into the RGB image
RGB frame (bgr8/rgb8/mono8) -> RGB float -> luma Y + chroma
fusion method (IR grey, visible Y) -> fused Y -> optional region effects (TeRF) -> + visible chroma -> output
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from egmt_ros.data.images import from_uint8, to_uint8
from egmt_ros.fusion.agc import ThermalAGC
from egmt_ros.fusion.color import merge_luma, split_luma
from egmt_ros.fusion.methods import FusionMethod
from egmt_ros.fusion.registration import warp_thermal

#: An optional post-fusion step: (fused_y, ir, vi_y, stamp) -> fused_y (the TeRF region effects).
PostStep = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]


def fuse_images(method: FusionMethod, ir: np.ndarray, vi: np.ndarray,
                post: PostStep | None = None, stamp: float = 0.0) -> np.ndarray:
    """Fuse float [0, 1] IR grey and visible grey/RGB images of the same size.

    Returns the fused image in [0, 1]: RGB where the visible image is RGB (visible Cb/Cr kept), else grey.
    This is THE fusion path: the fusion CLI and the fusion node both call it, so their outputs agree.
    """
    if ir.shape[:2] != vi.shape[:2]:
        raise ValueError(f"size mismatch: IR {ir.shape[1]}x{ir.shape[0]} vs visible {vi.shape[1]}x{vi.shape[0]}")
    vi_y, cbcr = split_luma(vi)
    fused_y = method.fuse(ir, vi_y)
    if post is not None:
        fused_y = post(fused_y, ir, vi_y, stamp)
    return merge_luma(fused_y, cbcr)


def thermal_to_gray(frame: np.ndarray) -> np.ndarray:
    """Single-channel view of a thermal frame (a bgr8 thermal camera gives its luma)."""
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        f = frame[:, :, :3].astype(np.float32)
        y = 0.114 * f[..., 0] + 0.587 * f[..., 1] + 0.299 * f[..., 2]  # BGR order
        return np.clip(np.rint(y), 0, 255).astype(np.uint8) if frame.dtype == np.uint8 else y
    raise ValueError(f"unsupported thermal frame shape {frame.shape}")


@dataclass
class FusionResult:
    """Output of :meth:`FusionPipeline.process`."""

    image: np.ndarray                      # uint8: H x W x 3 BGR (colour) or H x W (grey)
    encoding: str                          # "bgr8" or "mono8"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class FusionPipeline:
    """AGC + registration + fusion + colour for raw camera frames."""

    def __init__(self, method: FusionMethod, agc: ThermalAGC | None = None,
                 homography: np.ndarray | None = None, post: PostStep | None = None) -> None:
        self.method = method
        self.agc = agc or ThermalAGC()
        self.homography = homography
        self.post = post

    def process(self, thermal: np.ndarray, rgb: np.ndarray, rgb_encoding: str = "bgr8",
                stamp: float = 0.0) -> FusionResult:
        """Fuse one raw pair. ``rgb`` is uint8 BGR/RGB ``H x W x 3`` or grey ``H x W``.

        Raises ValueError with a clear message for empty frames, NaN-only thermal frames and size mismatches.
        """
        t0 = time.perf_counter()
        if thermal.size == 0 or rgb.size == 0:
            raise ValueError(f"empty image: thermal {thermal.shape}, rgb {rgb.shape}")
        ir = self.agc(thermal_to_gray(thermal))
        ir = warp_thermal(ir, self.homography, (rgb.shape[1], rgb.shape[0]))
        if rgb.ndim == 3:
            vi = from_uint8(rgb[:, :, :3])
            if rgb_encoding.startswith("bgr"):
                vi = vi[:, :, ::-1]
        else:
            vi = from_uint8(rgb)
        t1 = time.perf_counter()
        fused = fuse_images(self.method, ir, vi, self.post, stamp)
        t2 = time.perf_counter()
        out = to_uint8(fused)
        encoding = "mono8"
        if out.ndim == 3:
            out = np.ascontiguousarray(out[:, :, ::-1])
            encoding = "bgr8"
        t3 = time.perf_counter()
        return FusionResult(out, encoding, {"preprocess": t1 - t0, "fuse": t2 - t1, "postprocess": t3 - t2})
