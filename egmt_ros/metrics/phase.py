"""PC: the phase-congruency fusion metric Q_P of Zhao, Laganiere & Liu (2007), as in Z. Liu's fusion-metric
toolbox (metricZhao.m + myphasecong3.m, Liu et al., IEEE TPAMI 34(1), 2012) that the EGMT paper's "PC" follows.

Phase congruency is Kovesi's PC_2 measure ("Image features from phase congruency", Videre 1(3), 1999;
"Phase congruency detects corners and edges", DICTA 2003) with log-Gabor filters computed by FFT; the
filter bank and noise model depend only on the image size and are cached per size. The six orientations of an
image run on a small thread pool, and :func:`pc` keeps the maps of the last few images by content, so the
sources of a benchmark are transformed once for all the fused images scored against them. The maps are bit for
bit those of the straightforward single-precision loop (the tests keep that loop as the reference): the
thresholds p > 0.1 and p_A > p_B make the metric jump when a pixel crosses them, so any other rounding moves it
(MKL's single-precision FFT through torch: by up to 1.6e-6 relative on 15 TNO42/M3SVD triples).
"""

from __future__ import annotations

import ctypes
import functools
import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from scipy import fft as sp_fft

from egmt_ros.metrics import _native
from egmt_ros.metrics._cache import WORKERS, ImageCache
from egmt_ros.metrics._image import as_gray255, as_triple

# Kovesi's phasecong defaults as used by myphasecong3.m.
PC_NSCALE = 4          # wavelet scales
PC_NORIENT = 6         # filter orientations
PC_MIN_WAVELENGTH = 3  # wavelength of the smallest filter (pixels)
PC_MULT = 2.1          # scaling between successive filters
PC_SIGMA_ONF = 0.55    # log-Gabor bandwidth (sigma / centre frequency)
PC_DTHETA_ON_SIGMA = 1.2  # orientation spacing / angular sigma
PC_K = 2.0             # noise threshold in standard deviations
PC_CUTOFF = 0.5        # frequency-spread cut-off
PC_G = 10.0            # frequency-spread sigmoid sharpness
PC_EPS = 1e-4          # division guard
# metricZhao.m parameters.
QP_FEATURE_THRESHOLD = 0.1
QP_C = 1e-4
QP_WINDOW, QP_SIGMA = 11, 1.5

# Phase congruency maps of the last few images scored by pc() (by content: the sources of a benchmark are
# computed once for all the fused images scored against them). 7.4 MB per 640 x 480 image.
_MAPS = ImageCache(maxsize=4)


@functools.lru_cache(maxsize=2)
def _filter_bank(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Filters for one image size: (log-Gabor filters [norient, nscale, r, c] in float32, tfac [norient]).

    Kovesi's noise threshold depends on the image only through the median energy of the smallest scale,
    so per orientation ``T = sqrt(meanE2n) * tfac[o]``."""
    def axis(n: int) -> np.ndarray:
        if n % 2:
            return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1 if n > 1 else 1)
        return np.arange(-n / 2, n / 2) / n

    x, y = np.meshgrid(axis(cols), axis(rows))
    radius = np.sqrt(x * x + y * y)
    radius[rows // 2, cols // 2] = 1.0
    theta = np.arctan2(-y, x)
    radius = sp_fft.ifftshift(radius)
    theta = sp_fft.ifftshift(theta)
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    # Low-pass (radius 0.45, order 15) so no frequencies from the FFT corners leak in.
    lx = (np.arange(1, cols + 1)[None, :] - (cols // 2 + 1)) / cols
    ly = (np.arange(1, rows + 1)[:, None] - (rows // 2 + 1)) / rows
    lp = sp_fft.fftshift(1.0 / (1.0 + (np.sqrt(lx * lx + ly * ly) / 0.45) ** 30))
    log_gabor = np.empty((PC_NSCALE, rows, cols))
    for s in range(PC_NSCALE):
        fo = 1.0 / (PC_MIN_WAVELENGTH * PC_MULT ** s)
        lg = np.exp(-(np.log(radius / fo) ** 2) / (2.0 * math.log(PC_SIGMA_ONF) ** 2)) * lp
        lg[0, 0] = 0.0
        log_gabor[s] = lg
    theta_sigma = math.pi / PC_NORIENT / PC_DTHETA_ON_SIGMA
    bank = np.empty((PC_NORIENT, PC_NSCALE, rows, cols), np.float32)
    tfac = np.empty(PC_NORIENT)
    for o in range(PC_NORIENT):
        angl = o * math.pi / PC_NORIENT
        ds = sin_t * math.cos(angl) - cos_t * math.sin(angl)
        dc = cos_t * math.cos(angl) + sin_t * math.sin(angl)
        spread = np.exp(-(np.arctan2(ds, dc) ** 2) / (2.0 * theta_sigma ** 2))
        filters = log_gabor * spread
        bank[o] = filters
        spatial = sp_fft.ifft2(filters, axes=(1, 2)).real * math.sqrt(rows * cols)
        flat = spatial.reshape(PC_NSCALE, -1)
        gram = flat @ flat.T
        sum_an2 = float(np.trace(gram))
        sum_aiaj = float((gram.sum() - np.trace(gram)) / 2.0)
        em_n = float(np.sum(filters[0] ** 2))
        # EstNoiseEnergy2 = 2 P sumAn2 + 4 P sumAiAj with P = meanE2n / EM_n; tau = sqrt(E2 / 2);
        # T = (tau sqrt(pi/2) + k tau sqrt(2 - pi/2)) / 1.7. T = sqrt(meanE2n) * tfac.
        tau_unit = math.sqrt((2.0 * sum_an2 + 4.0 * sum_aiaj) / em_n / 2.0)
        tfac[o] = tau_unit * (math.sqrt(math.pi / 2.0) + PC_K * math.sqrt(2.0 - math.pi / 2.0)) / 1.7
    return bank, tfac


def _orientation(spectrum: np.ndarray, filters: np.ndarray, tfac: float,
                 angl: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One orientation of :func:`phase_congruency`: ``(sum_an, weighted, cx^2, cy^2, cx cy)``.

    The arithmetic is that of myphasecong3.m in single precision (complex64 FFTs and amplitudes); the noise
    threshold is a float64 scalar, so the thresholded energy and what follows are float64. Buffers are reused
    in place; every operation and its dtype are those of the straightforward transcription (the tests compare
    the maps bit for bit)."""
    eo = np.multiply(spectrum[None], filters)
    eo = sp_fft.ifft2(eo, axes=(1, 2), overwrite_x=True)
    amp = np.abs(eo)
    sum_an = amp.sum(axis=0)
    max_an = amp.max(axis=0)
    # Noise: median of the smallest-scale energy^2 -> Rayleigh mean -> threshold (Kovesi).
    sq = np.multiply(amp[0], amp[0])
    mean_e2n = -float(np.median(sq, overwrite_input=True)) / math.log(0.5)
    # Unit vector of the weighted mean phase, (MeanE + i MeanO) = sum_eo / (|sum_eo| + eps); then per scale
    # E MeanE + O MeanO - |E MeanO - O MeanE| = Re(eo conj(u)) - |Im(eo conj(u))|.
    unit = eo.sum(axis=0)
    den = np.abs(unit)
    den += PC_EPS
    np.divide(unit, den, out=unit)
    np.conjugate(unit, out=unit)
    np.multiply(eo, unit[None], out=eo)
    energy = eo.real.sum(axis=0)
    np.abs(eo.imag, out=amp)
    energy -= amp.sum(axis=0, out=den)
    del eo, amp
    threshold = np.float64(math.sqrt(mean_e2n) * tfac)
    weighted = np.subtract(energy, threshold)  # float32 array - float64 scalar -> float64 (as in the loop)
    np.maximum(weighted, 0.0, out=weighted)
    width = np.add(max_an, PC_EPS, out=max_an)
    np.divide(sum_an, width, out=width)
    width /= PC_NSCALE
    # weight = 1 / (1 + exp((cutOff - width) g)), float32
    weight = np.subtract(np.float32(PC_CUTOFF), width, out=width)
    weight *= np.float32(PC_G)
    np.exp(weight, out=weight)
    np.add(np.float32(1.0), weight, out=weight)
    np.divide(np.float32(1.0), weight, out=weight)
    np.multiply(weight, weighted, out=weighted)
    pc_o = np.divide(weighted, sum_an, out=np.zeros_like(weighted), where=sum_an > 0)
    cx = pc_o * np.float32(math.cos(angl))
    cy = np.multiply(pc_o, np.float32(math.sin(angl)), out=pc_o)
    return sum_an, weighted, cx * cx, cy * cy, np.multiply(cx, cy, out=cx)


def _moments(total_energy: np.ndarray, total_an: np.ndarray, cov_x2: np.ndarray, cov_y2: np.ndarray,
             cov_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(PC, M, m) from the sums over orientations (float32 accumulators, as myphasecong3.m in single precision)."""
    pc = total_energy.astype(np.float64) / (total_an + PC_EPS)
    cov_x2 = cov_x2.astype(np.float64) / (PC_NORIENT / 2)
    cov_y2 = cov_y2.astype(np.float64) / (PC_NORIENT / 2)
    cov_xy = cov_xy.astype(np.float64) / PC_NORIENT
    denom = np.sqrt(cov_xy * cov_xy + (cov_x2 - cov_y2) ** 2) + PC_EPS
    big_m = (cov_y2 + cov_x2 + denom) / 2.0
    small_m = (cov_y2 + cov_x2 - denom) / 2.0
    return pc, big_m, small_m


def _phase_congruency(im: np.ndarray, pool: ThreadPoolExecutor | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`phase_congruency` of a checked float64 image in numpy (scipy's FFT), the orientations on ``pool`` if
    given (the results are accumulated in orientation order either way). Bit for bit the reference loop."""
    rows, cols = im.shape
    bank, tfac = _filter_bank(rows, cols)
    # Single precision for the 1 + 24 FFTs and the per-orientation amplitudes (the metric moves by < 1e-6).
    spectrum = sp_fft.fft2(im.astype(np.float32))
    args = [(spectrum, bank[o], tfac[o], o * math.pi / PC_NORIENT) for o in range(PC_NORIENT)]
    parts = pool.map(lambda a: _orientation(*a), args) if pool is not None else (_orientation(*a) for a in args)
    total_energy = np.zeros((rows, cols), np.float32)
    total_an = np.zeros((rows, cols), np.float32)
    cov_x2 = np.zeros((rows, cols), np.float32)
    cov_y2 = np.zeros((rows, cols), np.float32)
    cov_xy = np.zeros((rows, cols), np.float32)
    for sum_an, weighted, cxx, cyy, cxy in parts:  # accumulated in orientation order, as the serial loop
        total_an += sum_an
        total_energy += weighted
        cov_x2 += cxx
        cov_y2 += cyy
        cov_xy += cxy
    return _moments(total_energy, total_an, cov_x2, cov_y2, cov_xy)


_P, _I64, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_PROTOTYPES: tuple[_native.Prototype, ...] = (
    ("egmt_pc_nscale", ctypes.c_int, ()),
    ("egmt_pc_noise", None, (_P, _I64, _P)),
    ("egmt_pc_orientation", None, (_P, _I64, _I64, _I64, ctypes.c_double) + (_F32,) * 5 + (_P,) * 5),
    ("egmt_pc_filter", None, (_P, _P, _I64, ctypes.c_int, _I64, _I64, _P)),
    ("egmt_qp_feature", ctypes.c_int, (_P,) * 7 + (_I64, _I64, _P, ctypes.c_int, ctypes.c_double, _P)),
    ("egmt_select2_nonneg", ctypes.c_int, (_P, _I64, _I64, _P)),
)


def _kernel() -> ctypes.CDLL | None:
    """The C phase-congruency kernel (_pc.c), or None (switched off, no compiler, or built for another number of
    scales than PC_NSCALE; see _native)."""
    lib = _native.load("pc", _PROTOTYPES)
    return lib if lib is not None and lib.egmt_pc_nscale() == PC_NSCALE else None


def _median_nonneg(lib: ctypes.CDLL, x: np.ndarray) -> np.float32:
    """np.median of a non-negative float32 vector (the mean of the two middle values for an even count, in
    float32), by the kernel's radix selection."""
    n = x.size
    if n < 3:
        return np.median(x)
    mid = np.empty(2, np.float32)
    k = n // 2 - 1 if n % 2 == 0 else n // 2
    if lib.egmt_select2_nonneg(x.ctypes.data, n, k, mid.ctypes.data) != 0:
        raise MemoryError("PC kernel: out of memory")
    return mid[0] if n % 2 else (mid[0] + mid[1]) / np.float32(2)


def _phase_congruency_native(im: np.ndarray, workers: int = WORKERS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`phase_congruency` of a checked float64 image with torch's FFT (MKL) and the C kernel _pc.c for the
    per-pixel arithmetic of each orientation (``workers`` threads over the pixels). Within ~1e-6 of the numpy
    maps: the FFT rounds differently, the arithmetic is the same single-precision sequence."""
    import torch

    lib = _kernel()
    if lib is None:
        raise RuntimeError("the C phase-congruency kernel is not available (EGMT_METRICS_NATIVE=0 or no C compiler)")
    rows, cols = im.shape
    npix = rows * cols
    bank, tfac = _filter_bank(rows, cols)
    spectrum = torch.fft.fft2(torch.from_numpy(im.astype(np.float32))).numpy()
    sums = [np.zeros(npix, np.float32) for _ in range(5)]
    sq = np.empty(npix, np.float32)
    filtered = torch.empty((PC_NSCALE, rows, cols), dtype=torch.complex64)
    starts = range(0, npix, -(-npix // max(1, workers)))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for o in range(PC_NORIENT):
            bank_o = bank[o]
            list(pool.map(lambda p0: lib.egmt_pc_filter(spectrum.ctypes.data, bank_o.ctypes.data, npix, PC_NSCALE, p0,
                                                         min(npix, p0 + starts.step), filtered.data_ptr()), starts))
            eo = torch.fft.ifft2(filtered).numpy()  # (nscale, rows, cols) complex64
            lib.egmt_pc_noise(eo.ctypes.data, npix, sq.ctypes.data)
            mean_e2n = -float(_median_nonneg(lib, sq)) / math.log(0.5)
            threshold = math.sqrt(mean_e2n) * float(tfac[o])
            angl = o * math.pi / PC_NORIENT
            args = (threshold, math.cos(angl), math.sin(angl), PC_EPS, PC_CUTOFF, PC_G, *(x.ctypes.data for x in sums))
            list(pool.map(lambda p0: lib.egmt_pc_orientation(eo.ctypes.data, npix, p0, min(npix, p0 + starts.step),
                                                              *args), starts))
    total_an, total_energy, cov_x2, cov_y2, cov_xy = (x.reshape(rows, cols) for x in sums)
    return _moments(total_energy, total_an, cov_x2, cov_y2, cov_xy)


def _maps(im: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(PC, M, m) of a checked float64 image: the C kernel with torch's FFT when available, else numpy."""
    if _kernel() is not None:
        return _phase_congruency_native(im)
    if WORKERS < 2:
        return _phase_congruency(im)
    with ThreadPoolExecutor(WORKERS) as pool:
        return _phase_congruency(im, pool)


def phase_congruency(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kovesi's phase congruency of a 0..255 grey image as in myphasecong3.m: ``(PC, M, m)``.

    PC = sum over orientations of the frequency-spread-weighted, noise-thresholded energy divided by the
    summed amplitudes (0..1); M and m are the maximum and minimum moments of the PC covariance (edge and
    corner strength). Parameters: the ``PC_*`` module constants (4 scales, 6 orientations, minimum wavelength
    3, multiplier 2.1, sigmaOnf 0.55, dThetaOnSigma 1.2, k 2, cutOff 0.5, g 10). The six orientations run on
    ``WORKERS`` threads; the result does not depend on it. With the C kernel (see ``egmt_ros.metrics._native``)
    the FFTs run in torch and the per-pixel arithmetic in C; without it, all in numpy.
    """
    return _maps(as_gray255(img))


def _gauss_kernel() -> np.ndarray:
    x = np.arange(QP_WINDOW) - (QP_WINDOW - 1) / 2
    k = np.exp(-(x * x) / (2 * QP_SIGMA ** 2))
    return k / k.sum()


_QP_KERNEL = _gauss_kernel()


def _gauss_same(img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """filter2(fspecial('gaussian', 11, 1.5), img, 'same'): zero-padded correlation."""
    return cv2.sepFilter2D(img, cv2.CV_64F, _QP_KERNEL, _QP_KERNEL, dst=out, borderType=cv2.BORDER_CONSTANT)


def _feature_score(f1: np.ndarray, f2: np.ndarray, fmax: np.ndarray, ff: np.ndarray,
                   masks: tuple[np.ndarray, np.ndarray, np.ndarray],
                   outside: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """metricZhao.m's correlation_coeffcient: local correlations of one feature map of F with the same map of
    A, of B and of their max-PC composite, best of the three per pixel, summed and divided by |mask_max|.
    (``outside`` are the complements of ``masks``; the arithmetic is done in place, in the order of
    ``r = (cov + C) / (sqrt(|var var_f|) + C)``.)"""
    tmp = np.multiply(ff, ff)
    mu_f = _gauss_same(ff)
    var_f = _gauss_same(tmp)
    var_f -= np.multiply(mu_f, mu_f, out=tmp)
    s, mu, var, cov = (np.empty_like(ff) for _ in range(4))
    best = None
    for src, mask, out in zip((f1, f2, fmax), masks, outside):
        np.multiply(src, mask, out=s)
        _gauss_same(s, mu)
        _gauss_same(np.multiply(s, s, out=tmp), var)
        var -= np.multiply(mu, mu, out=tmp)
        _gauss_same(np.multiply(s, ff, out=tmp), cov)
        cov -= np.multiply(mu, mu_f, out=tmp)
        cov += QP_C
        np.multiply(var, var_f, out=var)
        np.abs(var, out=var)
        np.sqrt(var, out=var)
        var += QP_C
        r = np.divide(cov, var, out=cov)
        r[out] = 0.0
        if best is None:
            best, cov = r, np.empty_like(ff)
        else:
            np.maximum(best, r, out=best)
    count = int(masks[2].sum())
    return float(best.sum()) / count if count else 0.0


def _feature_score_native(lib: ctypes.CDLL, f1: np.ndarray, f2: np.ndarray, fmax: np.ndarray, ff: np.ndarray,
                          masks: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """:func:`_feature_score` by the C kernel (the same formula; Gaussian filtering with its own summation order,
    so within ~1e-13 of it)."""
    rows, cols = ff.shape
    arrays = [np.ascontiguousarray(x, np.float64) for x in (f1, f2, fmax, ff)]
    bytes_ = [np.ascontiguousarray(m, np.uint8) for m in masks]
    total = ctypes.c_double()
    if lib.egmt_qp_feature(*(x.ctypes.data for x in arrays), *(m.ctypes.data for m in bytes_), rows, cols,
                           _QP_KERNEL.ctypes.data, QP_WINDOW, QP_C, ctypes.byref(total)) != 0:
        raise MemoryError("PC kernel: out of memory")
    count = int(masks[2].sum())
    return total.value / count if count else 0.0


def pc(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """PC (Q_P), phase-congruency based fusion metric (J. Zhao, R. Laganiere & Z. Liu, "Performance assessment
    of combinative pixel-level image fusion based on an absolute feature measurement", IJICIC 3(6A), 2007),
    following metricZhao.m of Liu's toolbox (the phase congruency maps are computed in single precision; a
    double-precision run differs by <= 3e-7 relative on 15 TNO42/M3SVD triples).

    From :func:`phase_congruency` of A, B and F: phase congruency p, maximum moment M and minimum moment m.
    The composite source takes, per pixel, the features of the source with the larger p. For each feature
    k in (p, M, m): ``C(X, F) = (s_XF + C) / (sqrt(|s_X^2 s_F^2|) + C)`` with local (co)variances from an
    11 x 11 Gaussian window (sigma 1.5, zero-padded), C = 1e-4, source features masked to pixels whose p > 0.1;
    ``P_k = sum max(C(A, F), C(B, F), C(max, F)) / |{p_max > 0.1}|`` (each term counted only inside its mask).
    ``PC = P_p * P_M * P_m`` (exponents alpha = beta = gamma = 1). The sources enter jointly (best of A, B and
    the composite per pixel, no sum/mean). Unit: none. Range: about 0 .. 1. Higher = F keeps the salient
    features (edges, corners) of the sources.
    """
    f, a, b = as_triple(fused, ir, vi)
    maps = [_MAPS.get(x, _maps) for x in (a, b, f)]
    (pc_a, big_a, small_a), (pc_b, big_b, small_b), (pc_f, big_f, small_f) = maps
    pick_a = pc_a > pc_b
    pc_max = np.where(pick_a, pc_a, pc_b)
    masks = (pc_a > QP_FEATURE_THRESHOLD, pc_b > QP_FEATURE_THRESHOLD, pc_max > QP_FEATURE_THRESHOLD)
    features = [(fa, fb, np.where(pick_a, fa, fb), ff)
                for fa, fb, ff in ((pc_a, pc_b, pc_f), (big_a, big_b, big_f), (small_a, small_b, small_f))]
    lib = _kernel()
    if lib is not None:
        with ThreadPoolExecutor(max(1, WORKERS)) as pool:
            scores = list(pool.map(lambda feat: _feature_score_native(lib, *feat, masks), features))
    else:
        outside = tuple(~m for m in masks)
        scores = [_feature_score(*feat, masks, outside) for feat in features]
    return math.prod(scores)
