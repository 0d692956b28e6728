"""Colour handling: the network fuses the luma (Y); the fused colour image takes the visible Cb/Cr.

Full-range ITU-R BT.601 YCbCr on float [0, 1] data (the convention of SeAFusion and TarDAL's test scripts):
``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cr = 0.713 (R - Y) + 0.5``, ``Cb = 0.564 (B - Y) + 0.5``
(OpenCV's ``COLOR_RGB2YCrCb`` constants, within 3e-4 of the exact 0.5/0.701 and 0.5/0.886; ~15x faster than a
numpy matrix product). Chroma is kept in OpenCV's (Cr, Cb) channel order.
"""

from __future__ import annotations

import cv2
import numpy as np


def rgb_to_ycrcb(rgb: np.ndarray) -> np.ndarray:
    """RGB float ``H x W x 3`` in [0, 1] -> (Y, Cr, Cb) with Y in [0, 1] and chroma centred on 0.5."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2YCrCb)


def ycrcb_to_rgb(ycc: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycrcb`, clipped to [0, 1]; ``bgr``: in B, G, R channel order (the same values: each
    output channel has its own formula)."""
    rgb = cv2.cvtColor(np.ascontiguousarray(ycc, dtype=np.float32), cv2.COLOR_YCrCb2BGR if bgr else cv2.COLOR_YCrCb2RGB)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def split_luma(vi: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(Y, CrCb or None) of a visible image that is grey ``H x W`` or RGB ``H x W x 3``."""
    if vi.ndim == 2:
        return vi.astype(np.float32, copy=False), None
    y, cr, cb = cv2.split(rgb_to_ycrcb(vi))  # OpenCV's planar copies: ~5x faster than numpy's strided ones
    return y, cv2.merge([cr, cb])


def merge_luma(y: np.ndarray, crcb: np.ndarray | None, bgr: bool = False) -> np.ndarray:
    """Fused luma + visible chroma -> RGB (``bgr``: BGR, for an 8-bit camera image; same values) or the grey luma
    itself when there is no chroma."""
    y = np.clip(y, 0.0, 1.0).astype(np.float32, copy=False)
    if crcb is None:
        return y
    return ycrcb_to_rgb(cv2.merge([y, *cv2.split(np.ascontiguousarray(crcb, dtype=np.float32))]), bgr)
