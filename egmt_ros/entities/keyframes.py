"""Which frames the (slow) entity pipeline looks at: keyframes by time and scene change, under a rate cap.

:meth:`KeyframePolicy.should_process` answers for each incoming frame, in this order:

1. the first frame, or a clock that went backwards (a bag restarted): process (``"first"``, ``"clock_reset"``);
2. less than ``min_interval_s`` since the last keyframe: skip (``"min_interval"``);
3. ``max_interval_s`` or more since the last keyframe: a forced refresh (``"max_interval"``), else
   the scene changed (the distance to the *last keyframe* exceeds ``scene_change_threshold``): ``"scene_change"``,
   else skip (``"no_change"``);
4. a rate cap: a token bucket refilled at ``max_rate_hz`` holding at most ``burst`` tokens; a keyframe costs one
   token, and without one the frame is skipped (``"rate_limit"``). So scene cuts may come ``min_interval_s`` apart a
   few times in a row, but the sustained rate stays at or below ``max_rate_hz`` (set it below 1 / the time the
   entity pipeline needs per keyframe).

Scene distance (on a grey frame downscaled to ``size``, float [0, 1] or uint8 input):
``"hist"``: Bhattacharyya distance (OpenCV ``HISTCMP_BHATTACHARYYA``, 0 = same, 1 = disjoint) of 64-bin grey
histograms; ``"ssim"``: ``1 - SSIM`` (skimage, ``data_range=1``, 7x7 window), 0 = same, up to 2.
"""

from __future__ import annotations

import cv2
import numpy as np

METHODS = ("hist", "ssim")


class KeyframePolicy:
    """Keyframe choice for the entity pipeline (see the module docstring)."""

    def __init__(self, min_interval_s: float = 1.0, max_rate_hz: float = 0.5, scene_change_threshold: float = 0.2,
                 method: str = "hist", max_interval_s: float = 10.0, burst: int = 2,
                 size: tuple[int, int] = (80, 64), bins: int = 64) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if min_interval_s < 0 or max_interval_s <= 0 or max_rate_hz <= 0 or burst < 1:
            raise ValueError("need min_interval_s >= 0, max_interval_s > 0, max_rate_hz > 0, burst >= 1")
        self.min_interval_s = float(min_interval_s)
        self.max_rate_hz = float(max_rate_hz)
        self.scene_change_threshold = float(scene_change_threshold)
        self.method = method
        self.max_interval_s = float(max_interval_s)
        self.burst = int(burst)
        self.size = (int(size[0]), int(size[1]))
        self.bins = int(bins)
        self.reset()

    def reset(self) -> None:
        """Forget the last keyframe (the next frame is processed)."""
        self.last_stamp: float | None = None
        self.last_distance: float = 0.0
        self._ref: np.ndarray | None = None
        self._ref_hist: np.ndarray | None = None
        self._tokens = float(self.burst)
        self._token_stamp: float | None = None

    def _small(self, image: np.ndarray) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim == 3:
            img = img[..., :3].mean(axis=2) if img.dtype != np.uint8 else \
                cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / 255.0
        elif img.dtype == np.uint16:
            img = img.astype(np.float32) / 65535.0
        img = img.astype(np.float32)
        if img.shape[1] != self.size[0] or img.shape[0] != self.size[1]:
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        return np.clip(img, 0.0, 1.0)

    def _hist(self, small: np.ndarray) -> np.ndarray:
        h = cv2.calcHist([small], [0], None, [self.bins], [0.0, 1.0 + 1e-6]).astype(np.float32)
        return h / max(float(h.sum()), 1e-12)

    def distance(self, image_gray_small: np.ndarray) -> float:
        """Scene distance of a frame to the last keyframe (0 when there is none)."""
        small = self._small(image_gray_small)
        return self._distance(small, self._hist(small) if self.method == "hist" else None)

    def _distance(self, small: np.ndarray, hist: np.ndarray | None) -> float:
        if self._ref is None:
            return 0.0
        if self.method == "hist":
            return float(cv2.compareHist(self._ref_hist, hist, cv2.HISTCMP_BHATTACHARYYA))
        from skimage.metrics import structural_similarity

        return float(1.0 - structural_similarity(self._ref, small, data_range=1.0, win_size=7))

    def _refill(self, stamp: float) -> None:
        if self._token_stamp is not None:
            self._tokens = min(float(self.burst), self._tokens + (stamp - self._token_stamp) * self.max_rate_hz)
        self._token_stamp = stamp

    def _accept(self, small: np.ndarray, hist: np.ndarray | None, stamp: float) -> None:
        self._ref, self._ref_hist, self.last_stamp = small, hist, stamp
        self._tokens -= 1.0

    def should_process(self, image_gray_small: np.ndarray, stamp: float) -> tuple[bool, str]:
        """(process this frame?, reason). A True answer makes this frame the new reference keyframe."""
        stamp = float(stamp)
        small = self._small(image_gray_small)
        hist = self._hist(small) if self.method == "hist" else None
        if self.last_stamp is None or stamp < self.last_stamp:
            reason = "first" if self.last_stamp is None else "clock_reset"
            self.reset()
            self._token_stamp = stamp
            self.last_distance = 0.0
            self._accept(small, hist, stamp)
            return True, reason
        self._refill(stamp)
        dt = stamp - self.last_stamp
        if dt < self.min_interval_s:
            return False, "min_interval"
        self.last_distance = self._distance(small, hist)
        if dt >= self.max_interval_s:
            reason = "max_interval"
        elif self.last_distance > self.scene_change_threshold:
            reason = "scene_change"
        else:
            return False, "no_change"
        if self._tokens < 1.0 - 1e-9:
            return False, "rate_limit"
        self._accept(small, hist, stamp)
        return True, reason
