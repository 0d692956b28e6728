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


#: What each metric measures and its range (for report legends; formulas and references: docs/metrics.md). "sum"
#: and "mean" say how the fused image's scores against the two sources are combined.
LEGEND: dict[str, tuple[str, str]] = {
    "PC": ("phase-congruency features of both sources kept in the fused image", "0..1"),
    "SSIM": ("structural similarity to each source, sum over the two", "-2..2"),
    "MI": ("mutual information with each source, sum over the two", "0..2 EN(F)"),
    "Qabf": ("share of the sources' edge strength and orientation kept", "0..1"),
    "PSNR": ("peak signal-to-noise ratio against the sources (mean MSE)", ">= 0"),
    "FMI_w": ("feature mutual information on wavelet features, mean over the sources", "0..1"),
    "Nabf": ("artefacts: edges in the fused image that neither source has", "0..1"),
    "NCIE": ("nonlinear correlation information entropy of the three images", "0.80..1"),
    "EN": ("entropy of the fused grey levels (information content)", "0..8"),
    "SD": ("standard deviation of the fused grey levels (contrast)", "0..127.5"),
    "SF": ("spatial frequency: row and column differences (detail)", "0..361"),
    "AG": ("average gradient (sharpness)", "0..255"),
    "SCD": ("sum of the correlations of differences: what each source adds", "-2..2"),
    "VIF": ("visual information fidelity to each source, sum over the two", "0..~2"),
    "CC": ("correlation coefficient with each source, mean over the two", "-1..1"),
    "MS_SSIM": ("multi-scale SSIM to each source, sum over the two", "0..2"),
    "FMI_pixel": ("feature mutual information on the grey values, mean over the sources", "0..1"),
}

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
