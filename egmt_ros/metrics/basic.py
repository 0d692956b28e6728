"""Statistics and information metrics: EN, SD, SF, AG (fused image only) and MI, CC, SCD, PSNR, NCIE (fused vs sources).

All inputs are grey images on the 8-bit scale 0..255 (uint8 or float; see ``_image.as_gray255``); everything is
computed in float64. The formulas follow the Python Evaluator of CDDFuse (Zhao et al., CVPR 2023,
``utils/Evaluator.py``), the reference used for the numbers in ``shared/data/peer_outputs/README.md``, except
that MI is reported in bits. NCIE follows Wang et al. as implemented in Z. Liu's fusion-metric toolbox / MEFB.
"""

from __future__ import annotations

import math

import numpy as np

from egmt_ros.metrics._image import LEVELS, as_gray255, as_triple, to_levels


# ----------------------------------------------------------------------------------------------- helpers
def _plogp_sum(p: np.ndarray) -> float:
    """``sum(p * log2 p)`` over the non-zero entries of a probability array."""
    nz = p[p > 0]
    return float(np.sum(nz * np.log2(nz)))


def _joint_hist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """256 x 256 joint probability of the integer grey levels of x (rows) and y (columns)."""
    codes = to_levels(x).ravel() * LEVELS + to_levels(y).ravel()
    h = np.bincount(codes, minlength=LEVELS * LEVELS).astype(np.float64)
    return h.reshape(LEVELS, LEVELS) / codes.size


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two arrays (0 when either is constant)."""
    xd = x - x.mean()
    yd = y - y.mean()
    den = math.sqrt(float(np.sum(xd * xd)) * float(np.sum(yd * yd)))
    return float(np.sum(xd * yd)) / den if den > 0 else 0.0


# ------------------------------------------------------------------------------------ single-image metrics
def entropy(img: np.ndarray) -> float:
    """EN, Shannon entropy of the grey-level histogram (Roberts et al., J. Appl. Remote Sens. 2008).

    ``EN = -sum_l p_l log2 p_l`` over the 256 integer grey levels (values are rounded to the nearest level).
    Unit: bits. Range: 0 (constant image) .. 8 (flat histogram). Higher = more information (or more noise).
    """
    lv = to_levels(as_gray255(img)).ravel()
    p = np.bincount(lv, minlength=LEVELS) / lv.size
    return -_plogp_sum(p)


def std_dev(img: np.ndarray) -> float:
    """SD, population standard deviation of the grey values: ``sqrt(mean((F - mean F)^2))`` (as CDDFuse's
    Evaluator; survey: Ma, Ma & Li, "Infrared and visible image fusion methods and applications", Inf. Fusion 2019).

    Unit: grey levels (0..255 scale). Range: 0 .. 127.5. Higher = more contrast.
    """
    return float(np.std(as_gray255(img)))


def spatial_frequency(img: np.ndarray) -> float:
    """SF, spatial frequency (Eskicioglu & Fisher, IEEE TCOM 1995): ``sqrt(RF^2 + CF^2)``.

    ``RF^2 = mean_{i,j} (F[i,j+1] - F[i,j])^2`` over the H x (W-1) horizontal neighbours and
    ``CF^2 = mean_{i,j} (F[i+1,j] - F[i,j])^2`` over the (H-1) x W vertical neighbours (CDDFuse's definition).
    Unit: grey levels per pixel. Range: 0 .. 255*sqrt(2). Higher = more detail.
    """
    f = as_gray255(img)
    rf2 = float(np.mean((f[:, 1:] - f[:, :-1]) ** 2)) if f.shape[1] > 1 else 0.0
    cf2 = float(np.mean((f[1:, :] - f[:-1, :]) ** 2)) if f.shape[0] > 1 else 0.0
    return math.sqrt(rf2 + cf2)


def average_gradient(img: np.ndarray) -> float:
    """AG, average gradient (Cui et al., Opt. Commun. 2015; CDDFuse's definition).

    ``AG = mean_{i,j} sqrt((Gx^2 + Gy^2) / 2)`` where Gx, Gy are central differences ``(F[i,j+1] - F[i,j-1]) / 2``
    inside the image and one-sided differences on the first/last column/row (``numpy.gradient``).
    Unit: grey levels per pixel. Range: 0 .. 255. Higher = sharper.
    """
    f = as_gray255(img)
    if min(f.shape) < 2:
        raise ValueError("AG needs an image of at least 2 x 2 pixels")
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


# ----------------------------------------------------------------------------------------- pair metrics
def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """Mutual information of the integer grey levels of two images, in bits.

    ``I(X;Y) = sum_{u,v} p(u,v) log2(p(u,v) / (p(u) p(v)))`` from the 256 x 256 joint histogram
    (Qu et al., Electron. Lett. 2002). Equals ``H(X) + H(Y) - H(X,Y)``.
    """
    h = _joint_hist(as_gray255(x, "x"), as_gray255(y, "y"))
    return -_plogp_sum(h.sum(axis=1)) - _plogp_sum(h.sum(axis=0)) + _plogp_sum(h)


def mi(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """MI (Qu et al. 2002): ``I(F;A) + I(F;B)``, the **sum** over the two sources (CDDFuse convention).

    Unit: bits (CDDFuse's Evaluator returns nats from ``sklearn.metrics.mutual_info_score``; divide those by
    ln 2 to compare). Range: 0 .. 2 * EN(F) <= 16. Higher = more source information in F.
    """
    f, a, b = as_triple(fused, ir, vi)
    return mutual_information(f, a) + mutual_information(f, b)


def cc(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """CC, correlation coefficient: ``(r(A, F) + r(B, F)) / 2``, the **mean** of the two Pearson correlations
    (CDDFuse's definition; Ma, Ma & Li, Inf. Fusion 2019). A constant argument gives r = 0 (CDDFuse: NaN).

    Unit: none. Range: -1 .. 1. Higher = F is more linearly related to the sources.
    """
    f, a, b = as_triple(fused, ir, vi)
    return (_corr(a, f) + _corr(b, f)) / 2.0


def scd(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """SCD, sum of the correlations of differences (Aslantas & Bendes, AEU 2015).

    ``SCD = r(F - B, A) + r(F - A, B)``: what F adds over B should correlate with A and vice versa (a **sum**).
    A constant argument gives r = 0 (e.g. F = B; CDDFuse: NaN). Unit: none. Range: -2 .. 2. Higher is better.
    """
    f, a, b = as_triple(fused, ir, vi)
    return _corr(f - b, a) + _corr(f - a, b)


def psnr(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, peak: float | None = 255.0) -> float:
    """PSNR against both sources: ``10 log10(peak^2 / ((MSE(F, A) + MSE(F, B)) / 2))`` (Ma, Ma & Li, Inf. Fusion
    2019; CDDFuse's Evaluator).

    The two MSEs are **averaged** before the log, as in CDDFuse's Evaluator. ``peak`` defaults to the 8-bit
    peak 255 (the standard definition, independent of the image content). ``peak=None`` uses ``max(F)``,
    which is what CDDFuse's Evaluator (and so the reference table in peer_outputs/README.md) actually does:
    identical whenever F reaches 255, lower otherwise (TNO42 pixel average: 14.38 dB with max(F), 16.02 dB
    with 255). Unit: dB. Range: >= 0 for 8-bit images, +inf when F = A = B. Higher = F closer to both sources.
    """
    f, a, b = as_triple(fused, ir, vi)
    mse = (float(np.mean((f - a) ** 2)) + float(np.mean((f - b) ** 2))) / 2.0
    if mse == 0.0:
        return math.inf
    top = float(f.max()) if peak is None else float(peak)
    return 10.0 * math.log10(top * top / mse)


def nonlinear_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """NCC of Wang et al.: the mutual information of the 256-level joint histogram in base-256 logs (``I / 8`` bits).

    Range: 0 .. 1 (1 only for two identical images with all 256 levels equally used).
    """
    return mutual_information(x, y) / math.log2(LEVELS)


def ncie(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """NCIE, nonlinear correlation information entropy (Wang, Shen & Zhang, Physica D 2005; Wang, Shen & Jin,
    "Performance evaluation of image fusion techniques", in Image Fusion: Algorithms and Applications, 2008).

    ``R = [[1, NCC_AB, NCC_AF], [NCC_AB, 1, NCC_BF], [NCC_AF, NCC_BF, 1]]`` with NCC from
    :func:`nonlinear_correlation` (b = 256 bins), eigenvalues ``lambda_i`` of R, K = 3 variables,
    ``H_R = -sum_i (lambda_i / K) log_b(lambda_i / K)`` and ``NCIE = 1 - H_R``.
    As in Z. Liu's toolbox (metricWang.m), MEFB and cslib, the eigen-entropy uses log base b = 256, not K, so
    NCIE runs from ``1 - log2(3)/8 = 0.8019`` (three unrelated images) to 1 (identical, flat-histogram images).
    The images are used as they are (no per-image min-max stretch; Liu's MATLAB stretches each image to 0..255
    first, cslib does not). Unit: none. Higher is better. The three sources enter jointly (no sum/mean).
    """
    f, a, b = as_triple(fused, ir, vi)
    n_ab = nonlinear_correlation(a, b)
    n_af = nonlinear_correlation(a, f)
    n_bf = nonlinear_correlation(b, f)
    r = np.array([[1.0, n_ab, n_af], [n_ab, 1.0, n_bf], [n_af, n_bf, 1.0]])
    lam = np.linalg.eigvalsh(r) / 3.0
    lam = lam[lam > 0]
    h_r = -float(np.sum(lam * np.log2(lam))) / math.log2(LEVELS)
    return 1.0 - h_r
