"""Per-stage latency bookkeeping (median and p90 in milliseconds) for the entity pipeline."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class StageTimes:
    """Collects seconds per named stage; :meth:`summary` gives n / median / p90 in ms."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, seconds: float) -> None:
        """Record one duration of ``stage``."""
        self.samples[stage].append(float(seconds))

    def add_all(self, timings: dict[str, float]) -> None:
        """Record several stages at once (e.g. a source's ``last_timings``)."""
        for k, v in timings.items():
            self.add(k, v)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """``with times.time("encode"): ...`` records the block's duration."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"n", "median_ms", "p90_ms"}}`` for every stage with samples."""
        out: dict[str, dict[str, float]] = {}
        for stage, vals in self.samples.items():
            if vals:
                arr = np.asarray(vals) * 1000.0
                out[stage] = {"n": len(vals), "median_ms": float(np.median(arr)),
                              "p90_ms": float(np.percentile(arr, 90))}
        return out

    def table(self, order: tuple[str, ...] = ("detect", "caption", "extract", "encode")) -> str:
        """A fixed-width text table: stage, n, median ms, p90 ms (stages in ``order`` first)."""
        summ = self.summary()
        stages = [s for s in order if s in summ] + sorted(s for s in summ if s not in order)
        lines = [f"{'stage':<10} {'n':>6} {'median_ms':>10} {'p90_ms':>10}"]
        for s in stages:
            r = summ[s]
            lines.append(f"{s:<10} {int(r['n']):>6} {r['median_ms']:>10.1f} {r['p90_ms']:>10.1f}")
        return "\n".join(lines)
