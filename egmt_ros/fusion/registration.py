"""Thermal -> RGB registration by a fixed 3x3 homography (ROS-free)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def parse_homography(values: Sequence[float]) -> np.ndarray | None:
    """A 3x3 float64 matrix from 9 row-major numbers; None for the identity (nothing to warp).

    Raises ValueError naming the problem for a wrong count, a NaN/infinite entry or a singular matrix.
    """
    vals = [float(v) for v in values]
    if len(vals) != 9:
        raise ValueError(f"homography needs 9 numbers (row-major 3x3), got {len(vals)}")
    h = np.asarray(vals, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(h).all():
        raise ValueError(f"homography must be 9 finite numbers, got {vals}")
    if abs(np.linalg.det(h)) < 1e-12:
        raise ValueError(f"homography is singular: {vals}")
    h = h / h[2, 2] if h[2, 2] != 0 else h
    return None if np.allclose(h, np.eye(3)) else h


def warp_thermal(thermal: np.ndarray, homography: np.ndarray | None, rgb_size: tuple[int, int]) -> np.ndarray:
    """Warp a thermal frame into the RGB image (``rgb_size`` = (width, height)).

    With no homography the thermal frame must already have the RGB size (ValueError otherwise:
    the message names both sizes).
    """
    w, h = rgb_size
    if homography is None:
        if thermal.shape[1] != w or thermal.shape[0] != h:
            raise ValueError(f"size mismatch: thermal is {thermal.shape[1]}x{thermal.shape[0]}, RGB is {w}x{h}, "
                             "and no homography is set (parameter 'homography')")
        return thermal
    return cv2.warpPerspective(thermal, homography, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
