"""Classical (training-free) IR/visible fusion baselines, registered by name in ``egmt_ros.fusion.methods``.

All functions take the IR grey image and the visible luma as float32 ``H x W`` arrays in [0, 1] (same size) and
return a float32 ``H x W`` fused luma (the registered :class:`FunctionMethod` clips it to [0, 1]).

Registered names:

- ``average``: pixel mean ``(ir + vi) / 2``.
- ``max``: pixel maximum.
- ``lp``: Laplacian pyramid fusion (Burt & Adelson 1983 pyramids): ``levels`` detail levels (default 4, fewer when
  the image is too small to halve that often) fused by choosing, per pixel, the coefficient with the larger absolute
  value; the coarsest (base) level is the mean of the two.
- ``gff``: guided filtering based fusion (S. Li, X. Kang, J. Hu, "Image Fusion With Guided Filtering",
  IEEE TIP 22(7), 2013): two-scale decomposition with a 31x31 mean filter, saliency = Gaussian (11x11, sigma 5)
  of the absolute 3x3 Laplacian, binary weight maps by largest saliency, refined by a guided filter guided by each
  source (base layer: r1 = 45, eps1 = 0.3; detail layer: r2 = 7, eps2 = 1e-6), normalised to sum to one per pixel.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from egmt_ros.core.methods import FunctionMethod

#: Default number of Laplacian-pyramid detail levels of ``lp``.
LP_LEVELS = 4
#: GFF parameters of Li, Kang & Hu (2013), section III.
GFF_MEAN_SIZE = 31
GFF_SAL_RADIUS = 5
GFF_SAL_SIGMA = 5.0
GFF_R1, GFF_EPS1 = 45, 0.3
GFF_R2, GFF_EPS2 = 7, 1e-6


def _f32(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img, dtype=np.float32)


# --------------------------------------------------------------------------- pixel rules

def fuse_average(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Pixel mean of the two sources."""
    return (_f32(ir) + _f32(vi)) * np.float32(0.5)


def fuse_max(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Pixel maximum of the two sources."""
    return np.maximum(_f32(ir), _f32(vi))


# --------------------------------------------------------------------------- Laplacian pyramid

def _usable_levels(shape: tuple[int, ...], levels: int) -> int:
    """``levels`` capped so that the coarsest level is still at least 2 pixels on its short side."""
    n, short = 0, min(shape[:2])
    while n < levels and short >= 4:
        short = (short + 1) // 2
        n += 1
    return n


def laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """``[detail_0 (full size), ..., detail_{n-1}, base]`` with ``n = levels`` (capped for small images).

    Works for any size (odd sizes included): every ``pyrUp`` targets the exact size of the finer level.
    """
    g = [_f32(img)]
    for _ in range(_usable_levels(img.shape, levels)):
        g.append(cv2.pyrDown(g[-1]))
    pyr = [g[i] - cv2.pyrUp(g[i + 1], dstsize=(g[i].shape[1], g[i].shape[0])) for i in range(len(g) - 1)]
    pyr.append(g[-1])
    return pyr


def reconstruct_pyramid(pyr: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`laplacian_pyramid`."""
    img = pyr[-1]
    for detail in reversed(pyr[:-1]):
        img = cv2.pyrUp(img, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return img


def fuse_lp(ir: np.ndarray, vi: np.ndarray, levels: int = LP_LEVELS) -> np.ndarray:
    """Laplacian pyramid fusion: max-abs selection of the detail coefficients, mean of the base level."""
    pa, pb = laplacian_pyramid(ir, levels), laplacian_pyramid(vi, levels)
    fused = [np.where(np.abs(a) >= np.abs(b), a, b) for a, b in zip(pa[:-1], pb[:-1])]
    fused.append((pa[-1] + pb[-1]) * np.float32(0.5))
    return reconstruct_pyramid(fused)


# --------------------------------------------------------------------------- guided filter + GFF

def _window_count(shape: tuple[int, int], r: int) -> np.ndarray:
    """Number of pixels of the ``(2r+1) x (2r+1)`` window that lie inside an image of ``shape``."""
    k = (2 * r + 1, 2 * r + 1)
    return cv2.boxFilter(np.ones(shape, np.float32), -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)


def box_mean(img: np.ndarray, r: int, count: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``H x W`` ``img`` over the ``(2r+1) x (2r+1)`` window clipped to the image.

    This is He et al.'s ``boxfilter(I, r) / N``: any ``r`` works, also windows larger than the image.
    ``count`` may pass a precomputed :func:`_window_count` for this shape and ``r``.
    """
    k = (2 * r + 1, 2 * r + 1)
    s = cv2.boxFilter(_f32(img), -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    return s / (_window_count(img.shape[:2], r) if count is None else count)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter (K. He, J. Sun, X. Tang, ECCV 2010 / TPAMI 2013) built from box means.

    ``q = mean(a) * I + mean(b)`` with ``a = cov(I, p) / (var(I) + eps)``, ``b = mean(p) - a * mean(I)``,
    all means over ``(2r+1) x (2r+1)`` windows. ``guide`` and ``src`` are ``H x W``.
    """
    i, p = _f32(guide), _f32(src)
    n = _window_count(i.shape, r)
    mean_i, mean_p = box_mean(i, r, n), box_mean(p, r, n)
    cov_ip = box_mean(i * p, r, n) - mean_i * mean_p
    var_i = box_mean(i * i, r, n) - mean_i * mean_i
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return box_mean(a, r, n) * i + box_mean(b, r, n)


def gff_saliency(img: np.ndarray) -> np.ndarray:
    """Saliency of GFF: Gaussian low-pass (11x11, sigma 5) of the absolute 3x3 Laplacian."""
    lap = np.abs(cv2.Laplacian(_f32(img), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REPLICATE))
    k = 2 * GFF_SAL_RADIUS + 1
    return cv2.GaussianBlur(lap, (k, k), GFF_SAL_SIGMA, borderType=cv2.BORDER_REPLICATE)


def _normalise(w: np.ndarray) -> np.ndarray:
    """Clip weights to [0, 1] (a guided filter can overshoot; the authors' code does the same) and normalise
    along the last axis to sum to 1 (equal weights where all are 0)."""
    w = np.clip(w, 0.0, 1.0)
    s = w.sum(axis=2, keepdims=True)
    even = np.full_like(w, 1.0 / w.shape[2])
    return np.where(s > 1e-6, w / np.maximum(s, 1e-6), even).astype(np.float32)


def gff_weights(ir: np.ndarray, vi: np.ndarray, r1: int = GFF_R1, eps1: float = GFF_EPS1,
                r2: int = GFF_R2, eps2: float = GFF_EPS2) -> tuple[np.ndarray, np.ndarray]:
    """(base weights, detail weights) of GFF, each ``H x W x 2`` (IR, visible), summing to 1 per pixel."""
    ir, vi = _f32(ir), _f32(vi)
    # binary maps: 1 where this source has the largest saliency (ties go to IR, so the maps sum to 1)
    p_ir = (gff_saliency(ir) >= gff_saliency(vi)).astype(np.float32)
    p_vi = 1.0 - p_ir
    wb = np.stack([guided_filter(ir, p_ir, r1, eps1), guided_filter(vi, p_vi, r1, eps1)], axis=2)
    wd = np.stack([guided_filter(ir, p_ir, r2, eps2), guided_filter(vi, p_vi, r2, eps2)], axis=2)
    return _normalise(wb), _normalise(wd)


def fuse_gff(ir: np.ndarray, vi: np.ndarray, r1: int = GFF_R1, eps1: float = GFF_EPS1,
             r2: int = GFF_R2, eps2: float = GFF_EPS2) -> np.ndarray:
    """Guided filtering based fusion (Li, Kang & Hu, IEEE TIP 2013), see the module docstring."""
    ir, vi = _f32(ir), _f32(vi)
    k = (GFF_MEAN_SIZE, GFF_MEAN_SIZE)
    base_ir = cv2.blur(ir, k, borderType=cv2.BORDER_REPLICATE)
    base_vi = cv2.blur(vi, k, borderType=cv2.BORDER_REPLICATE)
    wb, wd = gff_weights(ir, vi, r1, eps1, r2, eps2)
    base = wb[..., 0] * base_ir + wb[..., 1] * base_vi
    detail = wd[..., 0] * (ir - base_ir) + wd[..., 1] * (vi - base_vi)
    return base + detail


# --------------------------------------------------------------------------- the methods (registered in fusion.methods)

#: name -> (fusion function, description, its parameters and their defaults)
METHODS: dict[str, tuple[Callable[..., np.ndarray], str, dict]] = {
    "average": (fuse_average, "pixel mean", {}),
    "max": (fuse_max, "pixel maximum", {}),
    "lp": (fuse_lp, "Laplacian pyramid: max-abs details, mean base", {"levels": LP_LEVELS}),
    "gff": (fuse_gff, "guided filtering fusion (Li, Kang, Hu, TIP 2013)",
            {"r1": GFF_R1, "eps1": GFF_EPS1, "r2": GFF_R2, "eps2": GFF_EPS2}),
}


def factory(name: str) -> Callable[..., FunctionMethod]:
    """A factory of the classical method ``name`` taking its parameters as keyword arguments."""
    func, description, defaults = METHODS[name]

    def make(**kwargs) -> FunctionMethod:
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"{name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(defaults)}")
        return FunctionMethod(name, func, description, {**defaults, **kwargs})
    return make
