"""Thermal automatic gain control: raw 16-bit counts -> [0, 1] without flicker (ROS-free).

Each frame's robust range is its ``low``/``high`` percentiles (default 1 % / 99 %, computed on a
subsampled grid so it costs well under a millisecond). The range used for the mapping is an exponential
moving average of those per-frame ranges (``smoothing`` = weight of the previous range), so a hot object
entering the view does not make the whole picture jump from one frame to the next.
8-bit input (mono8 / bgr8 thermal cameras that already apply AGC) is only scaled by 1/255.
"""

from __future__ import annotations

import numpy as np

from egmt_ros.data.images import from_uint8


class ThermalAGC:
    """Robust-percentile AGC with temporal smoothing."""

    def __init__(self, low_percentile: float = 1.0, high_percentile: float = 99.0,
                 smoothing: float = 0.9, subsample: int = 4, min_span: float = 16.0) -> None:
        if not 0.0 <= low_percentile < high_percentile <= 100.0:
            raise ValueError(f"AGC percentiles must satisfy 0 <= low < high <= 100, got "
                             f"{low_percentile}, {high_percentile}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"AGC smoothing must be in [0, 1), got {smoothing}")
        self.low_percentile = low_percentile
        self.high_percentile = high_percentile
        self.smoothing = smoothing
        self.subsample = max(1, int(subsample))
        self.min_span = min_span
        self._range: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the smoothed range (e.g. after a camera restart)."""
        self._range = None

    @property
    def current_range(self) -> tuple[float, float] | None:
        """The (low, high) counts mapped to 0 and 1 by the last call."""
        return self._range

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Map a grey frame (uint8, uint16 or float counts) to float32 [0, 1]."""
        if frame.ndim != 2:
            raise ValueError(f"AGC expects a single-channel frame, got shape {frame.shape}")
        if frame.dtype == np.uint8:
            return from_uint8(frame)
        sample = frame[:: self.subsample, :: self.subsample].astype(np.float32)
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            raise ValueError("thermal frame has no finite value (all NaN/inf)")
        lo, hi = np.percentile(finite, [self.low_percentile, self.high_percentile])
        if self._range is None:
            self._range = (float(lo), float(hi))
        else:
            a = self.smoothing
            self._range = (a * self._range[0] + (1 - a) * float(lo), a * self._range[1] + (1 - a) * float(hi))
        lo_s, hi_s = self._range
        span = max(hi_s - lo_s, self.min_span if frame.dtype == np.uint16 else 1e-6)
        out = (frame.astype(np.float32) - lo_s) * (1.0 / span)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(out, 0.0, 1.0, out=out)
