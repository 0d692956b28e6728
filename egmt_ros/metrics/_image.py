"""Input checks shared by the fusion metrics: every metric works on grey images on the 8-bit scale 0..255.

The research code this project learns from mixes [0, 1] and 0..255 inputs silently (SF on 0-1 vs 0-255,
SSIM without data_range, Nabf thresholds that only make sense on 0..255). Here a float image whose maximum
is <= 1.0 is refused instead of being guessed at: scale it with ``img * 255`` first.
"""

from __future__ import annotations

import numpy as np

#: Number of grey levels used by the histogram metrics (EN, MI, NCIE).
LEVELS = 256


def as_gray255(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Check one grey image on the 0..255 scale and return it as float64 (no copy when already float64).

    Accepts any integer dtype (uint8, uint16 holding 0..255, ...) or a float dtype. Raises ValueError for a
    non-2-D array, non-finite values, or a float array whose maximum is <= 1.0 (a [0, 1] image: multiply by 255).
    """
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grey image (H x W), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be an integer or float array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} has NaN or infinite values")
        if float(arr.max()) <= 1.0:
            raise ValueError(
                f"{name} is a float array with max <= 1.0, which looks like a [0, 1] image; the metrics "
                "expect the 8-bit scale 0..255 (pass uint8, or multiply by 255)")
    return arr.astype(np.float64, copy=False)


def as_triple(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a (fused, ir, vi) triple: each as in :func:`as_gray255`, all of the same shape."""
    f = as_gray255(fused, "fused")
    a = as_gray255(ir, "ir")
    b = as_gray255(vi, "vi")
    if not (f.shape == a.shape == b.shape):
        raise ValueError(f"shape mismatch: fused {f.shape}, ir {a.shape}, vi {b.shape}")
    return f, a, b


def to_levels(img: np.ndarray) -> np.ndarray:
    """Integer grey levels 0..255 (rounded half to even, clipped) used as histogram bins."""
    return np.clip(np.rint(img), 0, LEVELS - 1).astype(np.intp)
