"""Helpers shared by the slow fusion metrics (PC, FMI_w): the worker count of PC's thread pool and a small
content-addressed cache for per-image intermediate results.

A benchmark scores the same two source images against several fused images; the per-image part of PC (the phase
congruency maps) and of FMI_w (the wavelet feature image) of the sources is then computed once. The cache key is
the image's shape, dtype and the SHA-256 digest of its bytes (about 2 ms for a 640 x 480 float64 image), so a
hit means equal content, whatever the array object. Cached arrays are read-only.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

#: Threads used by PC for the six orientations of an image (numpy and scipy.fft release the GIL in their kernels):
#: 2, or the number of CPUs if fewer, or ``$EGMT_METRICS_THREADS``. The values do not depend on it: the
#: orientations are independent and are accumulated in a fixed order.
WORKERS = max(1, int(os.environ.get("EGMT_METRICS_THREADS", 0)) or min(2, os.cpu_count() or 1))


def _freeze(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, tuple):
        for v in value:
            _freeze(v)
    return value


class ImageCache:
    """LRU cache of ``compute(img)`` keyed by the content of ``img`` (at most ``maxsize`` entries, thread-safe)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(img: np.ndarray) -> tuple:
        arr = np.ascontiguousarray(img)
        return arr.shape, arr.dtype.str, hashlib.sha256(arr.data).digest()

    def get(self, img: np.ndarray, compute: Callable[[np.ndarray], Any]) -> Any:
        """The cached ``compute(img)`` for this content, computing (and storing, read-only) it on a miss."""
        key = self.key(img)
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = _freeze(compute(img))
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
