"""Rolling rates and latency percentiles for diagnostics and benchmarks (ROS-free)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class LatencyWindow:
    """The last ``size`` samples of a duration (seconds); percentiles in milliseconds."""

    def __init__(self, size: int = 200) -> None:
        self._v: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._v.append(seconds)

    def percentiles_ms(self, *qs: float) -> list[float]:
        """Percentiles in ms (NaN when empty)."""
        with self._lock:
            if not self._v:
                return [float("nan")] * len(qs)
            arr = np.fromiter(self._v, dtype=np.float64) * 1000.0
        return [float(x) for x in np.percentile(arr, qs)]

    def __len__(self) -> int:
        return len(self._v)


class RateMeter:
    """Events per second over a sliding time window (monotonic clock)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._t: deque[float] = deque()
        self._lock = threading.Lock()
        self.last: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._t.append(now)
            self.last = now
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._t and now - self._t[0] > self.window_s:
            self._t.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._t) < 2:
                return 0.0
            span = max(now - self._t[0], 1e-9)
            return (len(self._t) - 1) / span if now == self._t[-1] else len(self._t) / max(span, self.window_s / 5)

    def silence(self, now: float | None = None) -> float | None:
        """Seconds since the last event (None if there never was one)."""
        now = time.monotonic() if now is None else now
        return None if self.last is None else now - self.last
