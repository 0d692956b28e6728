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
closed form plus the 2l cells where the coupling can be non-zero (found by ranking the two cdfs against each
other), vectorised over all windows of a band of window rows. Everything that
decides a branch is in float64 with the arithmetic of the cell-by-cell formula (a point-mass pdf has SD exactly
0); the 2l correction cells are evaluated in float32, which moves the metric by < 1e-8 relative (measured
<= 4.3e-9 on 30 TNO42/M3SVD feature triples; the tests compare with the double-precision path at 1e-12 and a
cell-by-cell transcription). About 1.5 us of CPU per window (3 images' statistics, 2 source pairs).
"""

from __future__ import annotations

import ctypes
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
from scipy import fft as sp_fft
from scipy import integrate

from egmt_ros.metrics import _native
from egmt_ros.metrics._cache import WORKERS, ImageCache
from egmt_ros.metrics._image import as_triple

#: Fast-FMI window side (Haghighat's default).
FMI_WINDOW = 3
#: Taps of the discrete Meyer low-pass filter (MATLAB's 'dmey' length; PyWavelets' 62-tap table is a coarser fit).
DMEY_TAPS = 102

# Wavelet feature images of the last few images scored by fmi_w (by content: a benchmark's sources are
# transformed once for all the fused images scored against them). 3.4 MB per 640 x 480 image.
_FEATURES = ImageCache(maxsize=4)


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


@functools.lru_cache(maxsize=8)
def _filter_spectra(n_fft: int) -> Any:
    """rfft of the dmey (low, high) filters at length n_fft, as a (2, n_fft // 2 + 1) complex128 torch tensor."""
    import torch

    return torch.fft.rfft(torch.from_numpy(np.stack(dmey_filters())), n_fft, dim=-1)


def _dwt_axis(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """One-level dmey analysis along ``axis`` of a 2-D array: (low-pass, high-pass) outputs.

    Half-point symmetric extension by L - 1 samples (MATLAB 'sym', PyWavelets 'symmetric'), full convolution
    with the filter, keeping the odd samples: output length floor((N + L - 1) / 2), as dwt/pywt.dwt.
    The two convolutions share one FFT of the extended signal (torch's, double precision: ~3x scipy's here).
    """
    import torch

    n_taps = DMEY_TAPS
    pad = [(0, 0)] * x.ndim
    pad[axis] = (n_taps - 1, n_taps - 1)
    ext = np.pad(x, pad, mode="symmetric")
    n_ext = ext.shape[axis]
    n_fft = sp_fft.next_fast_len(n_ext, real=True)
    last = np.moveaxis(ext, axis, -1)  # convolve along the last dimension
    spec = torch.fft.rfft(torch.from_numpy(np.ascontiguousarray(last)), n_fft, dim=-1)
    full = torch.fft.irfft(spec[None] * _filter_spectra(n_fft)[:, None], n_fft, dim=-1)
    kept = full[..., n_taps:n_ext:2].numpy()  # 'valid' part of the full convolution, odd samples of the dwt output
    return np.moveaxis(kept[0], -1, axis), np.moveaxis(kept[1], -1, axis)


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
# Layout: the windows of a band of window rows are processed together, "structure of arrays": an (l, n) array
# holds position k (column-major inside the window) of n windows in row k, so every step is a vectorised
# operation over windows. The band sums are combined exactly (math.fsum).
_BAND = 2048  # windows per band (the working set of a band stays in the L2 cache)
_TINY = np.finfo(np.float64).tiny


def _band(feat: np.ndarray, r0: int, r1: int, w: int) -> np.ndarray:
    """The windows whose top-left corner lies in rows r0..r1-1, as an (l, n) array (row k = position k of
    every window in MATLAB's column-major ``sub(:)`` order; windows in row-major order of their corner)."""
    cols = feat.shape[1] - w + 1
    out = np.empty((w * w, r1 - r0, cols))
    for col in range(w):
        for row in range(w):
            out[col * w + row] = feat[r0 + row:r1 + row, col:col + cols]
    return out.reshape(w * w, -1)


class _Stats(NamedTuple):
    """Per-window quantities of one image's windows (columns), see :func:`_stats`."""

    cdf: np.ndarray      # (l, n) cdf of the pdf
    rcdf: np.ndarray     # (l, n) cdf of the reversed pdf
    ent: np.ndarray      # (n,) entropy of the pdf in bits
    sd: np.ndarray       # (n,) SD of the pdf as a distribution over the positions 1..l
    cen: np.ndarray      # (l, n) pdf - 1/l
    cen2: np.ndarray     # (n,) sum of cen^2
    sum_cdf: np.ndarray  # (n,) sum of the cdf
    fwd: np.ndarray      # (2, l + 1, n) cells dtype: [0, cdf] and [pdf, pdf_last]
    rev: np.ndarray      # the same for the reversed pdf


def _stats(x: np.ndarray, cells: type) -> _Stats:
    """Window statistics of an (l, n) band (overwritten): each window min-max normalised (a flat window becomes
    ones) and divided by its sum, giving its pdf. The divisions and the cumulative sums are those of the
    straightforward per-window code (a point-mass pdf must come out exactly 1 so that its SD is exactly 0)."""
    l, n = x.shape
    lo = x.min(axis=0)
    pdf = np.subtract(x, lo, out=x)
    tot = pdf.sum(axis=0)
    flat = tot == 0  # a sum of non-negative numbers is 0 only when all are 0: max == min
    if flat.any():
        pdf[:, flat] = 1.0
        tot[flat] = l
    pdf /= tot
    cdf = np.empty_like(pdf)
    rcdf = np.empty_like(pdf)
    cdf[0] = pdf[0]
    rcdf[0] = pdf[l - 1]
    for k in range(1, l):
        np.add(cdf[k - 1], pdf[k], out=cdf[k])
        np.add(rcdf[k - 1], pdf[l - 1 - k], out=rcdf[k])
    fwd = np.empty((2, l + 1, n), cells)
    rev = np.empty((2, l + 1, n), cells)
    fwd[0, 0] = 0.0
    fwd[0, 1:] = cdf
    fwd[1, :l] = pdf
    fwd[1, l] = pdf[l - 1]
    rev[0, 0] = 0.0
    rev[0, 1:] = rcdf
    rev[1, :l] = pdf[::-1]
    rev[1, l] = pdf[0]
    plogp = np.maximum(pdf, _TINY)
    np.log2(plogp, out=plogp)
    plogp *= pdf
    ent = -plogp.sum(axis=0)
    pos = np.arange(1, l + 1, dtype=np.float64)
    m1 = pos @ pdf
    sd = np.sqrt(np.maximum((pos * pos) @ pdf - m1 * m1, 0.0))
    cen = np.subtract(pdf, 1.0 / l, out=plogp)
    return _Stats(cdf, rcdf, ent, sd, cen, np.einsum("kn,kn->n", cen, cen), cdf.sum(axis=0), fwd, rev)


def _fmi_pairs(f: _Stats, s: _Stats) -> np.ndarray:
    """Fast-FMI of each window pair (columns) from the :func:`_stats` of the fused (f) and source (s) windows.
    Equal raw windows (fmi = 1) are not handled here.

    The joint entropy is ``H_joint = -g(beta) + beta (H_s + H_f) - sum_cells (g(mix) - g(prod))`` with
    ``g(p) = p log2 |p|``: the closed form of the l*l product cells ``beta f_i s_j`` plus a correction on the
    2l cells where the coupling is non-zero. Those cells are found by ranking the two cdfs against each other
    (``r_i`` = #{j: U_j < F_i}; ties put F first): breakpoint F_i closes cell (i, r_i) of mass
    ``F_i - max(F_(i-1), U_(r_i - 1))``, breakpoint U_j cell (q_j, j) with ``q_j`` = #{i: F_i <= U_j}.
    The cell masses and entropies are evaluated in the stats' cells dtype (float32 by default: the metric
    moves by < 1e-8); everything that decides a branch (c, its sign, the Frechet covariance, phi) in float64.
    """
    l, n = f.cdf.shape
    num = np.einsum("kn,kn->n", s.cen, f.cen)
    c = np.divide(num, np.sqrt(s.cen2 * f.cen2), out=np.zeros(n), where=num != 0)
    neg = c < 0
    # The countermonotone coupling of (f, s) is the comonotone coupling of (f, reversed s): U is the cdf used.
    if neg.any():
        cdf_u = np.where(neg, s.rcdf, s.cdf)
        big_u, sml_u = np.where(neg, s.rev, s.fwd)
    else:
        cdf_u = s.cdf
        big_u, sml_u = s.fwd
    big_f, sml_f = f.fwd
    less = np.less(big_u[None, 1:], big_f[1:, None])  # less[i, j] = U_j < F_i
    count = np.uint8 if l < 256 else np.intp
    r = less.sum(axis=1, dtype=count)
    lq = less.sum(axis=0, dtype=count)  # l - q_j
    # sum_ij min(F_i, U_j): F_i is the min against the l - r_i breakpoints of U not before it, U_j against l - q_j.
    sum_min = (l * f.sum_cdf - np.einsum("kn,kn->n", f.cdf, r.astype(np.float64))
               + np.einsum("kn,kn->n", cdf_u, lq.astype(np.float64)))
    # sum_ij max(F_i + S_j - 1, 0) = (l + 1) sum_i F_i - sum_ij min(F_i, S~_j)  (S~: cdf of reversed s)
    bound = np.where(neg, (l + 1) * f.sum_cdf - sum_min, sum_min)
    cov = bound - f.sum_cdf * s.sum_cdf
    sd_prod = s.sd * f.sd
    corr_bound = np.divide(cov, sd_prod, out=np.zeros(n), where=sd_prod > 0)
    phi = np.divide(c, corr_bound, out=np.zeros(n), where=(c != 0) & (corr_bound != 0))
    beta = 1.0 - phi
    # Flat indices into the (l + 1, n) tables: row r_i (F cells) and row q_j (U cells) of each column.
    cols = np.arange(n)
    ir = r.astype(np.intp)
    ir *= n
    ir += cols
    iq = l - lq.astype(np.intp)
    iq *= n
    iq += cols
    cells = np.empty((2, 2 * l, n), big_f.dtype)
    mix, prod = cells
    np.take(big_u.reshape(-1), ir, out=mix[:l], mode="wrap")      # U_(r_i - 1) (0 for r_i = 0)
    np.maximum(big_f[:-1], mix[:l], out=mix[:l])
    np.subtract(big_f[1:], mix[:l], out=mix[:l])                     # mass of cell (i, r_i)
    np.take(big_f.reshape(-1), iq, out=mix[l:], mode="wrap")      # F_(q_j - 1)
    np.maximum(big_u[:-1], mix[l:], out=mix[l:])
    np.subtract(big_u[1:], mix[l:], out=mix[l:])                     # mass of cell (q_j, j)
    np.take(sml_u.reshape(-1), ir, out=prod[:l], mode="wrap")     # u_(r_i) (u_(l-1) for r_i = l)
    prod[:l] *= sml_f[:-1]
    np.take(sml_f.reshape(-1), iq, out=prod[l:], mode="wrap")     # f_(q_j)
    prod[l:] *= sml_u[:-1]
    prod *= beta.astype(cells.dtype)
    mix *= phi.astype(cells.dtype)
    mix += prod
    g = np.abs(cells)
    np.maximum(g, np.finfo(cells.dtype).tiny, out=g)
    np.log2(g, out=g)
    g *= cells
    sums = g.sum(axis=1).astype(np.float64)
    h_sum = s.ent + f.ent
    h_joint = -beta * np.log2(np.maximum(np.abs(beta), _TINY)) + beta * h_sum - (sums[0] - sums[1])
    mi = h_sum - h_joint
    return np.divide(2.0 * mi, h_sum, out=np.zeros(n), where=(mi != 0) & (h_sum > 0))


def _fmi_band(feat_a: np.ndarray, feat_b: np.ndarray, feat_f: np.ndarray, r0: int, r1: int, w: int,
              cells: type) -> float:
    """Sum over the windows of window rows r0..r1-1 of fmi_AF + fmi_BF."""
    xf = _band(feat_f, r0, r1, w)
    xs = [_band(src, r0, r1, w) for src in (feat_a, feat_b)]
    equal = [(x == xf).all(axis=0) for x in xs]
    stats_f = _stats(xf, cells)  # (the bands are overwritten)
    total = 0.0
    for x, eq in zip(xs, equal):
        vals = _fmi_pairs(stats_f, _stats(x, cells))
        vals[eq] = 1.0
        total += float(vals.sum())
    return total


def _check_features(feat_a: np.ndarray, feat_b: np.ndarray, feat_f: np.ndarray,
                    w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fa, fb, ff = (np.ascontiguousarray(x, dtype=np.float64) for x in (feat_a, feat_b, feat_f))
    if not (fa.shape == fb.shape == ff.shape):
        raise ValueError(f"feature images differ in shape: {fa.shape}, {fb.shape}, {ff.shape}")
    if ff.ndim != 2 or ff.shape[0] < w or ff.shape[1] < w:
        raise ValueError(f"FMI needs feature images of at least {w} x {w}")
    return fa, fb, ff


def _fast_fmi_numpy(feat_a: np.ndarray, feat_b: np.ndarray, feat_f: np.ndarray, w: int = FMI_WINDOW,
                    cells: type = np.float32, workers: int = 1) -> float:
    """Fast-FMI in numpy, with the cells dtype and the number of threads over bands as parameters. One thread by
    default: on the shared 2-core development machine two threads never ran faster (the band operations are
    small, ~20k elements, and the second core was busy) and cost 10-20 % more CPU. The result does not depend
    on ``workers`` (the band sums are combined exactly)."""
    fa, fb, ff = _check_features(feat_a, feat_b, feat_f, w)
    rows, cols = ff.shape[0] - w + 1, ff.shape[1] - w + 1
    step = max(1, _BAND // cols)
    bands = [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]
    if workers > 1 and len(bands) > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda b: _fmi_band(fa, fb, ff, b[0], b[1], w, cells), bands))
    else:
        parts = [_fmi_band(fa, fb, ff, r0, r1, w, cells) for r0, r1 in bands]
    return math.fsum(parts) / 2.0 / (rows * cols)


_PROTOTYPES: tuple[_native.Prototype, ...] = (
    ("egmt_fast_fmi_rows", ctypes.c_int, (ctypes.c_void_p,) * 3 + (ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                                                                    ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)),
)


def _kernel() -> ctypes.CDLL | None:
    """The C Fast-FMI kernel (_fastfmi.c), or None (switched off or no compiler, see _native)."""
    return _native.load("fastfmi", _PROTOTYPES)


def _fast_fmi_native(feat_a: np.ndarray, feat_b: np.ndarray, feat_f: np.ndarray, w: int = FMI_WINDOW,
                     workers: int = WORKERS) -> float:
    """Fast-FMI by the C kernel (_fastfmi.c: the numpy algorithm in double precision throughout, so within
    ~1e-15 of the test's reference), window rows split over ``workers`` threads (ctypes releases the GIL); the
    per-row sums are combined exactly, so the result does not depend on ``workers``. RuntimeError if the kernel
    is not available."""
    lib = _kernel()
    if lib is None:
        raise RuntimeError("the C Fast-FMI kernel is not available (EGMT_METRICS_NATIVE=0 or no C compiler)")
    fa, fb, ff = _check_features(feat_a, feat_b, feat_f, w)
    height, width = ff.shape
    rows, cols = height - w + 1, width - w + 1
    row_sums = np.empty(rows)
    step = -(-rows // max(1, workers))

    def run(r0: int) -> None:
        r1 = min(rows, r0 + step)
        out = row_sums[r0:r1]
        if lib.egmt_fast_fmi_rows(fa.ctypes.data, fb.ctypes.data, ff.ctypes.data, height, width, w, r0, r1,
                                  out.ctypes.data) != 0:
            raise MemoryError("Fast-FMI kernel: out of memory")

    starts = range(0, rows, step)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, starts))
    else:
        for r0 in starts:
            run(r0)
    return math.fsum(row_sums.tolist()) / 2.0 / (rows * cols)


def fast_fmi(feat_a: np.ndarray, feat_b: np.ndarray, feat_f: np.ndarray, w: int = FMI_WINDOW) -> float:
    """Fast-FMI of three feature images of equal shape (see the module docstring): mean of (fmi_AF + fmi_BF)/2.
    Runs the C kernel when it can be built (see ``egmt_ros.metrics._native``), else numpy with float32 cells
    (the two differ by < 1e-8 relative)."""
    if _kernel() is not None:
        return _fast_fmi_native(feat_a, feat_b, feat_f, w)
    return _fast_fmi_numpy(feat_a, feat_b, feat_f, w)


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
    return fast_fmi(*(_FEATURES.get(x, wavelet_feature) for x in (a, b, f)))
