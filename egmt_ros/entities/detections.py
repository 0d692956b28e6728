"""Entities from a detector that already runs elsewhere (the detection node's /egmt/detections), ROS-free.

The entity node's offline default: it does not run a second detector. It keeps the recent detection results
(stamp, [(class name, score)]) and, for a keyframe at stamp t, pools those within ``window_s`` of t: each class
once, scored by its best detection, classes under ``min_score`` left out; then the vocabulary words.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

import numpy as np

from egmt_ros.entities.extractor import MAX_ENTITIES
from egmt_ros.entities.sources import Entity, EntitySet, parse_vocabulary


class DetectionsEntitySource:
    """An :class:`~egmt_ros.entities.sources.EntitySource` fed with detection results as they arrive."""

    def __init__(self, vocabulary: str | Sequence[str] | None = None, vocabulary_score: float = 1.0,
                 window_s: float = 1.0, min_score: float = 0.3, max_entities: int = MAX_ENTITIES,
                 history: int = 64) -> None:
        self.vocabulary = parse_vocabulary(vocabulary)
        self.vocabulary_score = float(vocabulary_score)
        self.window_s = float(window_s)
        self.min_score = float(min_score)
        self.max_entities = int(max_entities)
        self._results: deque[tuple[float, list[tuple[str, float]]]] = deque(maxlen=history)
        self._lock = threading.Lock()
        self.last_timings: dict[str, float] = {}

    def add(self, stamp: float, detections: Sequence[tuple[str, float]]) -> None:
        """Record one frame's detections (class name, score)."""
        with self._lock:
            self._results.append((float(stamp), [(str(c).strip().lower(), float(s)) for c, s in detections]))

    def extract(self, ir: np.ndarray | None = None, vi: np.ndarray | None = None, stamp: float = 0.0,
                fused: np.ndarray | None = None) -> EntitySet:
        """The entities of the keyframe at ``stamp`` (the images are not needed)."""
        best: dict[str, float] = {}
        with self._lock:
            results = list(self._results)
        for t, dets in results:
            if abs(t - stamp) <= self.window_s:
                for c, s in dets:
                    if s >= self.min_score:
                        best[c] = max(best.get(c, 0.0), s)
        ents = [Entity(c, s, "detector") for c, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))]
        ents += [Entity(w, self.vocabulary_score, "vocabulary") for w in self.vocabulary if w not in best]
        return EntitySet(stamp, ents[: self.max_entities])
