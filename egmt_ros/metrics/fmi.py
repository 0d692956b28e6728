"""Feature mutual information FMI (Haghighat, Aghagolzadeh & Seyedarabi 2011) in its Fast-FMI form (Haghighat &
Razian 2014), on raw pixels (FMI_pixel) and on discrete-Meyer wavelet features (FMI_w, one of the EGMT eight).

Fast-FMI, per w x w sliding window (w = 3, stride 1, windows fully inside the feature image) and per source S:

1. if the source and fused windows are equal, ``fmi_SF = 1``;
2. otherwise each window is min-max normalised to [0, 1] (a flat window becomes all ones) and divided by its
   sum, giving pdfs ``s`` and ``f`` over the l = w^2 positions, taken in MATLAB's column-major order, with
   cdfs ``S_i, F_i``;
3. ``c`` = Pearson correlation of the two pdf vectors; population SDs ``sd`` of the pdfs as distributions over
   the positions 1..l;
4. the joint pdf mixes the product ``f_i s_j`` with a Frechet bound (Nelsen's method):
   for c >= 0, ``p_ij = phi U_ij + (1 - phi) f_i s_j`` with the comonotone coupling
   ``U_ij = min(F_i, S_j) - min(F_{i-1}, S_j) - min(F_i, S_{j-1}) + min(F_{i-1}, S_{j-1})`` and
   ``phi = c / corrUp``, ``corrUp = sum_ij (min(F_i, S_j) - F_i S_j) / (sd_f sd_s)`` (phi = 0 if c = 0 or an
   sd is 0); for c < 0 the same with the countermonotone coupling ``max(F_i + S_j - 1, 0)`` and ``theta``;
5. ``H_joint = -sum_ij p_ij log2 |p_ij|`` (the real part of MATLAB's complex log for negative p),
   ``I = H(s) + H(f) - H_joint``, ``fmi_SF = 2 I / (H(s) + H(f))`` (0 when I = 0).

The metric is the mean over windows of ``(fmi_AF + fmi_BF) / 2`` (the **mean** of the two sources).
This reproduces analysis_fmi.m (Haghighat's fmi.m) with the entropy of the 81-entry joint pdf evaluated in
closed form plus the at most 2l cells where the coupling is non-zero (a merge of the two cdfs), so it is exact
and vectorised.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import fft as sp_fft
from scipy import integrate

from egmt_ros.metrics._image import as_triple

#: Fast-FMI window side (Haghighat's default).
FMI_WINDOW = 3
#: Taps of the discrete Meyer low-pass filter (MATLAB's 'dmey' length; PyWavelets' 62-tap table is a coarser fit).
DMEY_TAPS = 102
_CHUNK = 1 << 13


# ------------------------------------------------------------------------------------ discrete Meyer DWT
def _nu(x: np.ndarray) -> np.ndarray:
    """Meyer's auxiliary polynomial nu(x) = x^4 (35 - 84 x + 70 x^2 - 20 x^3) on [0, 1] (0 below, 1 above)."""
    x = np.clip(x, 0.0, 1.0)
    return x ** 4 * (35.0 - 84.0 * x + 70.0 * x ** 2 - 20.0 * x ** 3)


@functools.lru_cache(maxsize=1)
def dmey_filters() -> tuple[np.ndarray, np.ndarray]:
    """(low-pass, high-pass) decomposition filters of the discrete Meyer wavelet, length ``DMEY_TAPS`` = 102.

    Computed from Meyer's scaling function (Daubechies, Ten Lectures on Wavelets, 1992, sec. 4.2.1):
    ``H(w) = sqrt(2)`` for ``|w| <= pi/3``, ``sqrt(2) cos(pi/2 nu(3|w|/pi - 1))`` for ``pi/3 <= |w| <= 2pi/3``,
    0 beyond, ``nu(x) = x^4 (35 - 84x + 70x^2 - 20x^3)``; taps ``h[k] = (1/pi) int_0^pi H(w) cos(n_k w) dw`` at
    ``n_k = k - 51`` (k = 0..101), the sampling that PyWavelets PR #311 (issue #261) reports to agree with
    MATLAB's 102-tap 'dmey' table to 4-5 digits. High-pass with PyWavelets' sign convention:
    ``g[k] = (-1)^(k+1) h[L-1-k]``.
    """
    half = DMEY_TAPS // 2

    def big_h(w: float) -> float:
        return math.sqrt(2.0) * math.cos(math.pi / 2.0 * float(_nu(np.array(3.0 * w / math.pi - 1.0))))

    lo = np.empty(DMEY_TAPS)
    for k in range(DMEY_TAPS):
        n = k - half
        flat = math.sqrt(2.0) * (math.pi / 3.0 if n == 0 else math.sin(n * math.pi / 3.0) / n)
        edge, _ = integrate.quad(lambda w: big_h(w) * math.cos(n * w), math.pi / 3.0, 2.0 * math.pi / 3.0,
                                 epsabs=1e-13, epsrel=1e-12, limit=200)
        lo[k] = (flat + edge) / math.pi
    hi = np.array([(-1) ** (k + 1) * lo[DMEY_TAPS - 1 - k] for k in range(DMEY_TAPS)])
    return lo, hi


def _dwt_axis(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """One-level dmey analysis along ``axis``: (low-pass, high-pass) outputs.

    Half-point symmetric extension by L - 1 samples (MATLAB 'sym', PyWavelets 'symmetric'), full convolution
    with the filter, keeping the odd samples: output length floor((N + L - 1) / 2), as dwt/pywt.dwt.
    The two convolutions share one FFT of the extended signal.
    """
    lo, hi = dmey_filters()
    n_taps = len(lo)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (n_taps - 1, n_taps - 1)
    ext = np.pad(x, pad, mode="symmetric")
    n_ext = ext.shape[axis]
    n_fft = sp_fft.next_fast_len(n_ext, real=True)
    spec = sp_fft.rfft(ext, n_fft, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    keep = np.arange(n_taps, n_ext, 2)  # 'valid' part of the full convolution, odd samples of the dwt output
    outs = []
    for filt in (lo, hi):
        full = sp_fft.irfft(spec * sp_fft.rfft(filt, n_fft).reshape(shape), n_fft, axis=axis)
        outs.append(np.take(full, keep, axis=axis))
    return outs[0], outs[1]


def dwt2_dmey(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One-level 2-D discrete Meyer DWT ``(cA, cH, cV, cD)`` with MATLAB's dwt2 / PyWavelets' dwt2 conventions
    (cH: high-pass along axis 0 and low-pass along axis 1; cV the other way round)."""
    x = np.asarray(img, dtype=np.float64)
    l0, h0 = _dwt_axis(x, 0)
    c_a, c_v = _dwt_axis(l0, 1)
    c_h, c_d = _dwt_axis(h0, 1)
    return c_a, c_h, c_v, c_d


def wavelet_feature(img: np.ndarray) -> np.ndarray:
    """FMI_w's feature image: ``[[cA, cH], [cV, cD]]`` of the dmey DWT, min-max rescaled to [0, 1] (analysis_fmi.m)."""
    c_a, c_h, c_v, c_d = dwt2_dmey(img)
    feat = np.block([[c_a, c_h], [c_v, c_d]])
    lo, hi = float(feat.min()), float(feat.max())
    return np.ones_like(feat) if hi == lo else (feat - lo) / (hi - lo)


# ------------------------------------------------------------------------------------------- Fast-FMI
def _windows(feat: np.ndarray, w: int) -> np.ndarray:
    """All w x w windows as rows of length w*w, column-major inside the window (MATLAB's ``sub(:)``)."""
    v = np.lib.stride_tricks.sliding_window_view(feat, (w, w))
    return np.ascontiguousarray(v.transpose(0, 1, 3, 2)).reshape(-1, w * w)


def _pdf_stats(win: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-window quantities of one image's windows (rows): (pdf, cdf, entropy in bits, population SD of the pdf
    over positions 1..l, pdf minus its mean 1/l). A row is min-max normalised (a flat row becomes ones) and
    divided by its sum."""
    n, l = win.shape
    lo = win.min(axis=1, keepdims=True)
    rng = win.max(axis=1, keepdims=True) - lo
    flat = rng[:, 0] == 0
    pdf = win - lo
    pdf[flat] = 1.0
    pdf /= pdf.sum(axis=1, keepdims=True)
    cdf = np.cumsum(pdf, axis=1)
    ent = -np.sum(_plogp(pdf), axis=1)
    pos = np.arange(1, l + 1, dtype=np.float64)
    m1 = pdf @ pos
    sd = np.sqrt(np.maximum(pdf @ (pos * pos) - m1 * m1, 0.0))
    return pdf, cdf, ent, sd, pdf - 1.0 / l


def _plogp(p: np.ndarray) -> np.ndarray:
    """Elementwise ``p * log2 |p|`` with 0 for p = 0."""
    a = np.abs(p)
    a[a == 0] = 1.0
    return p * np.log2(a)


def _merge(cdf_f: np.ndarray, cdf_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge the breakpoints of two cdfs per row: (sorted values, True where the value came from cdf_s).

    Ties put cdf_f first. The source is carried in the lowest mantissa bit (a change of at most one ulp) so
    one plain sort of non-negative float64 bit patterns does the job.
    """
    bits_f = np.maximum(cdf_f, 0.0).view(np.int64) & ~1
    bits_s = np.maximum(cdf_s, 0.0).view(np.int64) | 1
    merged = np.sort(np.concatenate([bits_f, bits_s], axis=1), axis=1)
    from_s = (merged & 1).astype(bool)
    return merged.view(np.float64), from_s


def _fmi_rows(f: tuple[np.ndarray, ...], s: tuple[np.ndarray, ...]) -> np.ndarray:
    """Fast-FMI of each window pair from the ``_pdf_stats`` of the fused (f) and source (s) windows.

    Equal raw windows (fmi = 1) are not handled here.
    """
    pdf_f, cdf_f, h_f, sd_f, cen_f = f
    pdf_s, cdf_s, h_s, sd_s, cen_s = s
    n, l = pdf_f.shape
    num = np.sum(cen_s * cen_f, axis=1)
    den = np.sqrt(np.sum(cen_s * cen_s, axis=1) * np.sum(cen_f * cen_f, axis=1))
    c = np.divide(num, den, out=np.zeros(n), where=num != 0)
    neg = c < 0
    # The countermonotone coupling of (f, s) is the comonotone coupling of (f, reversed s).
    pdf_u, cdf_u = pdf_s, cdf_s
    if neg.any():
        pdf_u = pdf_s.copy()
        pdf_u[neg] = pdf_s[neg, ::-1]
        cdf_u = cdf_s.copy()
        cdf_u[neg] = np.cumsum(pdf_u[neg], axis=1)
    srt, from_s = _merge(cdf_f, cdf_u)
    s_before = np.cumsum(from_s, axis=1) - from_s
    f_before = np.arange(2 * l) - s_before
    # sum_ij min(F_i, S_j): each breakpoint pairs with every breakpoint of the other cdf not already before it.
    sum_min = np.sum(srt * (l - np.where(from_s, f_before, s_before)), axis=1)
    sum_cdf_f = cdf_f.sum(axis=1)
    # sum_ij max(F_i + S_j - 1, 0) = (l + 1) sum_i F_i - sum_ij min(F_i, S~_j)  (S~: cdf of reversed s)
    bound = np.where(neg, (l + 1) * sum_cdf_f - sum_min, sum_min)
    cov = bound - sum_cdf_f * cdf_s.sum(axis=1)
    sd_prod = sd_s * sd_f
    corr_bound = np.divide(cov, sd_prod, out=np.zeros(n), where=sd_prod > 0)
    phi = np.divide(c, corr_bound, out=np.zeros(n), where=(c != 0) & (corr_bound != 0))
    beta = 1.0 - phi
    # H_joint = sum over all l*l cells of g(beta f_i s_j) (closed form) + corrections on the coupling's cells,
    # cell k of the merge having mass d_k at (i, j) = (#f breakpoints before k, #s breakpoints before k).
    d = np.diff(srt, axis=1, prepend=0.0)
    prod = np.take_along_axis(pdf_f, np.minimum(f_before, l - 1), axis=1)
    prod *= np.take_along_axis(pdf_u, np.minimum(s_before, l - 1), axis=1)
    prod *= beta[:, None]
    mix = d
    mix *= phi[:, None]
    mix += prod
    h_joint = -_plogp(beta) + beta * (h_s + h_f) - np.sum(_plogp(mix) - _plogp(prod), axis=1)
    h_sum = h_s + h_f
    mi = h_sum - h_joint
    return np.divide(2.0 * mi, h_sum, out=np.zeros(n), where=(mi != 0) & (h_sum > 0))


def fast_fmi(feat_a: np.ndarray, feat_b: np.ndarray, feat_f: np.ndarray, w: int = FMI_WINDOW) -> float:
    """Fast-FMI of three feature images of equal shape (see the module docstring): mean of (fmi_AF + fmi_BF)/2."""
    if feat_f.shape[0] < w or feat_f.shape[1] < w:
        raise ValueError(f"FMI needs feature images of at least {w} x {w}")
    wa, wb, wf = (_windows(np.asarray(x, dtype=np.float64), w) for x in (feat_a, feat_b, feat_f))
    total = 0.0
    for start in range(0, wf.shape[0], _CHUNK):
        sl = slice(start, start + _CHUNK)
        stats_f = _pdf_stats(wf[sl])
        for ws in (wa[sl], wb[sl]):
            vals = _fmi_rows(stats_f, _pdf_stats(ws))
            vals[np.all(ws == wf[sl], axis=1)] = 1.0
            total += float(np.sum(vals)) / 2.0
    return total / wf.shape[0]


def fmi_pixel(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """FMI_pixel: Fast-FMI (Haghighat & Razian 2014) on the raw grey values, 3 x 3 windows; **mean** of the two
    sources. Unit: none (normalised MI). Range: 0 .. 1 (1 for F = A = B). Higher is better. (The VIF-Benchmark
    script's "FMI_pixel" calls fmi.m without a feature name and so silently uses its default 'edge' feature.)
    """
    f, a, b = as_triple(fused, ir, vi)
    return fast_fmi(a, b, f)


def fmi_w(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """FMI_w: Fast-FMI (Haghighat & Razian 2014) on discrete-Meyer wavelet features (:func:`wavelet_feature`,
    one-level dmey DWT, sub-bands tiled ``[[cA, cH], [cV, cD]]`` and rescaled to [0, 1]), 3 x 3 windows;
    **mean** of the two sources. Unit: none. Range: 0 .. 1 (1 for F = A = B). Higher is better.
    """
    f, a, b = as_triple(fused, ir, vi)
    return fast_fmi(wavelet_feature(a), wavelet_feature(b), wavelet_feature(f))
