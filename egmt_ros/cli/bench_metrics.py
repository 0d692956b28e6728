"""Time every fusion metric on one image triple: the C kernels against numpy, side by side, in one run.

    python -m egmt_ros.cli.bench_metrics [--pair $EGMT_DATA/tno42:01] [--size 640x480] [--repeat 3]

The triple is an IR/visible pair of the data root (grey, resized to ``--size``, rounded to 0..255) and their rounded
pixel average as the fused image. Each metric runs ``--repeat`` times after a warm-up (filter banks, kernel
compilation), with the content caches of PC and FMI_w cleared before every run (a new triple, nothing reused); the
table gives the best wall time per metric and per path, the speed-up and the relative difference of the values.
The last rows are ``compute_all`` (all metrics, side by side on ``WORKERS`` threads, and on one thread).
Rows are the same on a machine without a C compiler, where both columns are numpy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from egmt_ros.core.images import list_pairs, load_pair, to_gray
from egmt_ros.metrics import METRICS, _native, compute_all, fmi, phase
from egmt_ros.metrics._cache import WORKERS
from egmt_ros.paths import data_root, shown_path


def load_triple(pair: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused, ir, vi) on 0..255 from ``DIR:STEM`` (a pair folder and the stem of one of its pairs)."""
    folder, _, stem = pair.rpartition(":")
    pairs = {s: (i, v) for s, i, v in list_pairs(Path(folder))}
    if stem not in pairs:
        raise SystemExit(f"no pair '{stem}' in {folder} (first stems: {sorted(pairs)[:5]})")
    a, b = (np.rint(cv2.resize(to_gray(x).astype(np.float64), size, interpolation=cv2.INTER_AREA) * 255)
            for x in load_pair(*pairs[stem]))
    return np.rint((a + b) / 2.0), a, b


def best_time(func: Callable[[], object], repeat: int) -> tuple[float, object]:
    """(best wall seconds over ``repeat`` runs with the caches cleared, last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        phase._MAPS.clear()
        fmi._FEATURES.clear()
        t = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(triple: tuple[np.ndarray, np.ndarray, np.ndarray], repeat: int) -> list[tuple[str, float, float, float]]:
    """Rows (name, kernels s, numpy s, |relative difference| of the values)."""
    f, a, b = triple
    paths: dict[str, dict[str, tuple[float, object]]] = {}
    for label in ("kernels", "numpy"):
        with _native.disabled() if label == "numpy" else contextlib.nullcontext():
            compute_all(f, a, b)  # warm-up: filter banks, dmey taps, kernel compilation
            times = {n: best_time(lambda n=n: spec.func(f, a, b), repeat) for n, spec in METRICS.items()}
            times["compute_all"] = best_time(lambda: compute_all(f, a, b), repeat)
            times["compute_all, 1 thread"] = best_time(lambda: compute_all(f, a, b, workers=1), repeat)
        paths[label] = times
    rows = []
    for name, (t_k, v_k) in paths["kernels"].items():
        t_n, v_n = paths["numpy"][name]
        if isinstance(v_k, dict):
            diff = max(_rel(v_k[m], v_n[m]) for m in v_k)
        else:
            diff = _rel(float(v_k), float(v_n))
        rows.append((name, t_k, t_n, diff))
    return rows


def _rel(x: float, y: float) -> float:
    return abs(x - y) / max(abs(y), 1e-300)


def table(rows: list[tuple[str, float, float, float]]) -> str:
    lines = ["| metric | C kernels ms | numpy ms | speed-up | rel. difference |", "|---|---|---|---|---|"]
    for name, t_k, t_n, diff in rows:
        lines.append(f"| {name} | {t_k * 1000:.0f} | {t_n * 1000:.0f} | {t_n / t_k:.1f}x | {diff:.1e} |")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", default=None, metavar="DIR:STEM",
                   help="pair folder and stem (default: the data root's tno42:01)")
    p.add_argument("--size", type=_size, default=(640, 480), metavar="WxH", help="resize to (default 640x480)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per metric; the best is reported (default 3)")
    args = p.parse_args(argv)
    pair = args.pair or f"{data_root(must_exist=True) / 'tno42'}:01"
    triple = load_triple(pair, args.size)
    kernels = "C kernels available" if fmi._kernel() and phase._kernel() else "NO C kernels (numpy)"
    folder, _, stem = pair.rpartition(":")
    print(f"# fusion metrics on {args.size[0]}x{args.size[1]} ({shown_path(folder)}:{stem}), best of {args.repeat}; "
          f"{kernels}; WORKERS={WORKERS}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    print(table(run(triple, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
