"""egmt_ros.metrics: fusion metrics (grey images on the 0..255 scale) and multi-label classification metrics.

See docs/metrics.md for every formula, unit, range, source combination, reference and constant.
"""

from egmt_ros.metrics.basic import (
    average_gradient,
    cc,
    entropy,
    mi,
    mutual_information,
    ncie,
    psnr,
    scd,
    spatial_frequency,
    std_dev,
)
from egmt_ros.metrics.fmi import fmi_pixel, fmi_w
from egmt_ros.metrics.fusion import METRICS, PAPER_METRICS, MetricSpec, compute_all
from egmt_ros.metrics.gradient import nabf, qabf
from egmt_ros.metrics.multilabel import multilabel_scores
from egmt_ros.metrics.phase import pc, phase_congruency
from egmt_ros.metrics.structural import ms_ssim, ms_ssim_pair, ssim, ssim_pair, vif, vif_pair

__all__ = [
    "METRICS", "PAPER_METRICS", "MetricSpec", "compute_all", "multilabel_scores",
    "average_gradient", "cc", "entropy", "fmi_pixel", "fmi_w", "mi", "ms_ssim", "ms_ssim_pair",
    "mutual_information", "nabf", "ncie", "pc", "phase_congruency", "psnr", "qabf", "scd",
    "spatial_frequency", "ssim", "ssim_pair", "std_dev", "vif", "vif_pair",
]
