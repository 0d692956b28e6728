"""Thermal automatic gain control: raw 16-bit counts -> [0, 1] without flicker (ROS-free).

Each frame's robust range is its ``low``/``high`` percentiles (default 1 % / 99 %) of its finite values, computed on
a subsampled grid so it costs well under a millisecond (the whole frame when NaN rows hide most of the grid). The
range used for the mapping is an exponential moving average of those per-frame ranges (``smoothing`` = weight of
the previous range), so a hot object entering the view does not make the whole picture jump from one frame to the
next.

An outlier frame does not poison the running range: the median of the last ``window`` per-frame ranges is the
reference, and a frame whose range lies more than ``outlier_spans`` reference spans outside it (a glitch such as
+-3e38 values) is mapped with the current range and changes nothing, so the next good frame is mapped exactly as
if the outlier had never come. ``outlier_frames`` such frames in a row are a real change and are taken in.
8-bit input (mono8 / bgr8 thermal cameras that already apply AGC) is only scaled by 1/255.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from egmt_ros.core.images import from_uint8


class ThermalAGC:
    """Robust-percentile AGC with temporal smoothing and outlier-frame rejection."""

    def __init__(self, low_percentile: float = 1.0, high_percentile: float = 99.0,
                 smoothing: float = 0.9, subsample: int = 4, min_span: float = 16.0, window: int = 15,
                 outlier_spans: float = 8.0, outlier_frames: int = 3) -> None:
        if not 0.0 <= low_percentile < high_percentile <= 100.0:
            raise ValueError(f"AGC percentiles must satisfy 0 <= low < high <= 100, got "
                             f"{low_percentile}, {high_percentile}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"AGC smoothing must be in [0, 1), got {smoothing}")
        if not (window >= 1 and outlier_frames >= 1 and outlier_spans > 0):
            raise ValueError(f"AGC window, outlier_frames and outlier_spans must be positive, got {window}, "
                             f"{outlier_frames}, {outlier_spans}")
        self.low_percentile = low_percentile
        self.high_percentile = high_percentile
        self.smoothing = smoothing
        self.subsample = max(1, int(subsample))
        self.min_span = min_span
        self.outlier_spans = outlier_spans
        self.outlier_frames = outlier_frames
        self._range: tuple[float, float] | None = None
        self._window: deque[tuple[float, float]] = deque(maxlen=int(window))
        self._outlier_run = 0
        self.outliers = 0  # frames whose range was rejected

    def reset(self) -> None:
        """Forget the smoothed range (e.g. after a camera restart)."""
        self._range = None
        self._window.clear()
        self._outlier_run = 0

    @property
    def current_range(self) -> tuple[float, float] | None:
        """The (low, high) counts mapped to 0 and 1 by the last call."""
        return self._range

    def frame_range(self, frame: np.ndarray) -> tuple[float, float]:
        """The frame's (low, high) percentiles of its finite values (float64); ValueError if it has none."""
        sample = frame[:: self.subsample, :: self.subsample].astype(np.float32)
        finite = sample[np.isfinite(sample)]
        if finite.size < max(64, sample.size // 4) and self.subsample > 1:  # NaN rows hid the grid: use them all
            full = frame.astype(np.float32)
            finite = full[np.isfinite(full)]
        if finite.size == 0:
            raise ValueError("thermal frame has no finite value (all NaN/inf)")
        lo, hi = np.percentile(finite, [self.low_percentile, self.high_percentile])
        return float(lo), float(hi)

    def _is_outlier(self, lo: float, hi: float, min_span: float) -> bool:
        if not self._window:
            return False
        ref_lo = float(np.median([r[0] for r in self._window]))
        ref_hi = float(np.median([r[1] for r in self._window]))
        limit = self.outlier_spans * max(ref_hi - ref_lo, min_span)
        return max(ref_lo - lo, lo - ref_hi, ref_lo - hi, hi - ref_hi) > limit

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Map a grey frame (uint8, uint16 or float counts) to float32 [0, 1]."""
        if frame.ndim != 2:
            raise ValueError(f"AGC expects a single-channel frame, got shape {frame.shape}")
        if frame.dtype == np.uint8:
            return from_uint8(frame)
        lo_s, span = self.update(frame)
        out = frame.astype(np.float32)  # the one copy; the mapping runs in place
        with np.errstate(over="ignore", invalid="ignore"):  # +-3e38 counts: inf, then clipped
            out -= lo_s
            out *= 1.0 / span
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(out, 0.0, 1.0, out=out)

    def update(self, frame: np.ndarray) -> tuple[float, float]:
        """Take a (uint16 or float) frame's range into the running range; returns the ``(offset, span)`` that maps
        it: ``clip((frame - offset) / span, 0, 1)`` with NaN -> 0 (the mapping itself may run elsewhere, e.g. on a
        GPU: :mod:`egmt_ros.fusion.device`)."""
        min_span = self.min_span if frame.dtype == np.uint16 else 1e-6
        lo, hi = self.frame_range(frame)
        if self._is_outlier(lo, hi, min_span) and self._outlier_run + 1 < self.outlier_frames:
            self._outlier_run += 1
            self.outliers += 1
        else:
            self._outlier_run = 0
            self._window.append((lo, hi))
            if self._range is None:
                self._range = (lo, hi)
            else:
                a = self.smoothing
                self._range = (a * self._range[0] + (1 - a) * lo, a * self._range[1] + (1 - a) * hi)
        lo_s, hi_s = self._range if self._range is not None else (lo, hi)
        return lo_s, max(hi_s - lo_s, min_span)
