"""The fusion metric registry: every metric by name with its direction, unit and provenance, and ``compute_all``.

Every metric takes ``(fused, ir, vi)`` grey images (or the Y channel) on the 8-bit scale 0..255, uint8 or
float, all the same shape, and returns a Python float. A float image whose maximum is <= 1.0 is refused
(ValueError): that is a [0, 1] image and must be multiplied by 255 first. Formulas, units, ranges, how the two
sources are combined, references and constants: each function's docstring and docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from egmt_ros.metrics._cache import WORKERS
from egmt_ros.metrics._image import as_triple
from egmt_ros.metrics.basic import average_gradient, cc, entropy, mi, ncie, psnr, scd, spatial_frequency, std_dev
from egmt_ros.metrics.fmi import fmi_pixel, fmi_w
from egmt_ros.metrics.gradient import nabf, qabf
from egmt_ros.metrics.phase import pc
from egmt_ros.metrics.structural import ms_ssim, ssim, vif

MetricFunc = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class MetricSpec:
    """One fusion metric: ``func(fused, ir, vi) -> float`` plus what is needed to read its value."""

    name: str
    func: MetricFunc
    higher_is_better: bool
    unit: str
    paper: bool  # one of the EGMT paper's eight (Tables I-IV)


def _fused_only(single: Callable[[np.ndarray], float]) -> MetricFunc:
    """Wrap a single-image metric as ``func(fused, ir, vi)`` (the sources are checked, then ignored)."""

    def func(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
        f, _, _ = as_triple(fused, ir, vi)
        return single(f)

    func.__name__ = single.__name__
    func.__doc__ = single.__doc__
    return func


#: The EGMT paper's eight metrics, in the column order of its Tables I-IV.
PAPER_METRICS: tuple[str, ...] = ("PC", "SSIM", "MI", "Qabf", "PSNR", "FMI_w", "Nabf", "NCIE")

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("PC", pc, True, "none", True),
    MetricSpec("SSIM", ssim, True, "none (sum over 2 sources)", True),
    MetricSpec("MI", mi, True, "bits (sum over 2 sources)", True),
    MetricSpec("Qabf", qabf, True, "none", True),
    MetricSpec("PSNR", psnr, True, "dB", True),
    MetricSpec("FMI_w", fmi_w, True, "none", True),
    MetricSpec("Nabf", nabf, False, "none", True),
    MetricSpec("NCIE", ncie, True, "none", True),
    MetricSpec("EN", _fused_only(entropy), True, "bits", False),
    MetricSpec("SD", _fused_only(std_dev), True, "grey levels", False),
    MetricSpec("SF", _fused_only(spatial_frequency), True, "grey levels / pixel", False),
    MetricSpec("AG", _fused_only(average_gradient), True, "grey levels / pixel", False),
    MetricSpec("SCD", scd, True, "none (sum over 2 sources)", False),
    MetricSpec("VIF", vif, True, "none (sum over 2 sources)", False),
    MetricSpec("CC", cc, True, "none (mean over 2 sources)", False),
    MetricSpec("MS_SSIM", ms_ssim, True, "none (sum over 2 sources)", False),
    MetricSpec("FMI_pixel", fmi_pixel, True, "none", False),
)}


# The metrics that take longest, started first when compute_all runs metrics side by side.
_SLOW_FIRST = ("PC", "FMI_w", "FMI_pixel", "MS_SSIM", "VIF", "Qabf", "Nabf")


def compute_all(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray,
                names: Sequence[str] | None = None, workers: int = WORKERS) -> dict[str, float]:
    """``{name: value}`` for the named metrics (default: all of ``METRICS``, in registry order).

    Inputs: grey (or Y) images on the 0..255 scale, uint8 or float, same shape; a float image with
    max <= 1.0 raises ValueError (scale [0, 1] images by 255 first). Unknown names raise KeyError.
    Minimum sizes (ValueError below them): VIF 41 x 41, MS_SSIM 11 x 11, SSIM 7 x 7, FMI 3 x 3, AG 2 x 2.
    The metrics run side by side on ``workers`` threads (default ``WORKERS``: 2, ``$EGMT_METRICS_THREADS``), the
    slowest first; their values do not depend on it. Cost of a new 640 x 480 triple: see docs/metrics.md
    ("Time per metric"); PC and FMI_w reuse the sources' transforms for further fused images.
    """
    chosen = list(METRICS) if names is None else list(names)
    unknown = [n for n in chosen if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown fusion metric(s) {unknown}; known: {sorted(METRICS)}")
    f, a, b = as_triple(fused, ir, vi)
    if workers < 2 or len(chosen) < 2:
        return {n: float(METRICS[n].func(f, a, b)) for n in chosen}
    order = sorted(chosen, key=lambda n: _SLOW_FIRST.index(n) if n in _SLOW_FIRST else len(_SLOW_FIRST))
    with ThreadPoolExecutor(workers) as pool:
        futures = {n: pool.submit(METRICS[n].func, f, a, b) for n in order}
        return {n: float(futures[n].result()) for n in chosen}
