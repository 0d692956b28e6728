"""Colour handling: the network fuses the luma (Y); the fused colour image takes the visible Cb/Cr.

Full-range ITU-R BT.601 YCbCr on float [0, 1] data (the convention of SeAFusion and TarDAL's test scripts).
"""

from __future__ import annotations

import numpy as np

_RGB2YCC = np.array([[0.299, 0.587, 0.114],
                     [-0.168736, -0.331264, 0.5],
                     [0.5, -0.418688, -0.081312]], dtype=np.float32)
_YCC2RGB = np.linalg.inv(_RGB2YCC).astype(np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB float ``H x W x 3`` in [0, 1] -> YCbCr with Y in [0, 1] and Cb, Cr centred on 0.5."""
    ycc = rgb @ _RGB2YCC.T
    ycc[..., 1:] += 0.5
    return ycc.astype(np.float32)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`, clipped to [0, 1]."""
    tmp = ycc.astype(np.float32).copy()
    tmp[..., 1:] -= 0.5
    return np.clip(tmp @ _YCC2RGB.T, 0.0, 1.0).astype(np.float32)


def split_luma(vi: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(Y, CbCr or None) of a visible image that is grey ``H x W`` or RGB ``H x W x 3``."""
    if vi.ndim == 2:
        return vi.astype(np.float32), None
    ycc = rgb_to_ycbcr(vi)
    return np.ascontiguousarray(ycc[..., 0]), np.ascontiguousarray(ycc[..., 1:])


def merge_luma(y: np.ndarray, cbcr: np.ndarray | None) -> np.ndarray:
    """Fused luma + visible chroma -> RGB (or the grey luma itself when there is no chroma)."""
    y = np.clip(y, 0.0, 1.0).astype(np.float32)
    if cbcr is None:
        return y
    return ycbcr_to_rgb(np.concatenate([y[..., None], cbcr], axis=-1))
