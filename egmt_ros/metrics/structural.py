"""Structural metrics: SSIM, MS-SSIM and VIF (pixel-domain VIFp), each computed per source and **summed**.

Inputs are grey images on the 8-bit scale 0..255 (``_image.as_gray255``). Local statistics use separable
filters (OpenCV ``sepFilter2D`` in float64); the windows and constants are listed in each docstring.
"""

from __future__ import annotations

import cv2
import numpy as np

from egmt_ros.metrics._image import as_gray255, as_triple

#: SSIM stabilising constants K1, K2 (Wang et al. 2004) and the 8-bit dynamic range L.
K1, K2, DATA_RANGE = 0.01, 0.03, 255.0
#: MS-SSIM per-scale exponents (Wang, Simoncelli & Bovik 2003).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: Noise variance sigma_n^2 of the VIFp model (Sheikh & Bovik 2006, vifp_mscale.m).
VIF_SIGMA_NSQ = 2.0


def _sep(img: np.ndarray, k: np.ndarray, border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """Correlate ``img`` with the separable kernel ``outer(k, k)`` (same size output)."""
    return cv2.sepFilter2D(img, cv2.CV_64F, k, k, borderType=border)


def _gauss1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of odd length ``size`` (``outer`` of two of them = MATLAB fspecial('gaussian'))."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


# ------------------------------------------------------------------------------------------------- SSIM
def _local_stats(x: np.ndarray, k: np.ndarray, cov_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """(local mean, local variance) of x under the separable window ``k``; variance scaled by ``cov_norm``."""
    ux = _sep(x, k)
    return ux, cov_norm * (_sep(x * x, k) - ux * ux)


def _ssim_maps(x: np.ndarray, y: np.ndarray, k: np.ndarray, cov_norm: float,
               stats_y: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(SSIM map, contrast-structure map) of x vs y with the separable window ``k`` (same-size maps).

    ``stats_y`` (from :func:`_local_stats`) lets two comparisons against the same y share its statistics.
    """
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    ux, vx = _local_stats(x, k, cov_norm)
    uy, vy = stats_y if stats_y is not None else _local_stats(y, k, cov_norm)
    vxy = cov_norm * (_sep(x * y, k) - ux * uy)
    cs = (2.0 * vxy + c2) / (vx + vy + c2)
    lum = (2.0 * ux * uy + c1) / (ux * ux + uy * uy + c1)
    return lum * cs, cs


def ssim_pair(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two 0..255 images (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004), scikit-image's defaults.

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with local
    statistics over a 7 x 7 uniform window, sample (N-1) covariances, ``C1 = (0.01 * 255)^2``,
    ``C2 = (0.03 * 255)^2``, averaged over the map without its 3-pixel border: identical to
    ``skimage.metrics.structural_similarity(x, y, data_range=255)``. Range: -1 .. 1 (1 for x = y).
    """
    return _ssim_sum(as_gray255(y, "y"), [as_gray255(x, "x")])


_SSIM_WIN = 7


def _ssim_sum(y: np.ndarray, xs: list[np.ndarray]) -> float:
    """Sum over x in xs of the scikit-image-style mean SSIM(x, y), sharing y's local statistics."""
    if min(y.shape) < _SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WIN} x {_SSIM_WIN} pixels")
    k = np.full(_SSIM_WIN, 1.0 / _SSIM_WIN)
    cov_norm = _SSIM_WIN ** 2 / (_SSIM_WIN ** 2 - 1.0)
    stats_y = _local_stats(y, k, cov_norm)
    pad = (_SSIM_WIN - 1) // 2
    total = 0.0
    for x in xs:
        smap, _ = _ssim_maps(x, y, k, cov_norm, stats_y)
        total += float(smap[pad:-pad, pad:-pad].mean())
    return total


def ssim(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """SSIM of F against both sources: ``SSIM(F, A) + SSIM(F, B)``, the **sum** (CDDFuse convention).

    Each term is :func:`ssim_pair` (data_range 255). Unit: none. Range: -2 .. 2 (2 when F = A = B).
    The EGMT paper's SSIM (~0.72 on TNO) is evidently the mean over the sources, i.e. about half of this.
    """
    f, a, b = as_triple(fused, ir, vi)
    return _ssim_sum(f, [a, b])


# ---------------------------------------------------------------------------------------------- MS-SSIM
def _half(img: np.ndarray) -> np.ndarray:
    """2 x 2 block average then subsampling by 2 (msssim.m: imfilter(ones(2)/4, 'symmetric') + (1:2:end))."""
    h, w = img.shape
    p = np.pad(img, ((0, h % 2), (0, w % 2)), mode="edge")
    return p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))


def ms_ssim_pair(x: np.ndarray, y: np.ndarray) -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik, Asilomar 2003) of two 0..255 images.

    ``MS-SSIM = prod_{j<M} mean(cs_j)^{w_j} * mean(ssim_M)^{w_M}`` with weights ``MS_SSIM_WEIGHTS``
    (M = 5 scales), an 11 x 11 Gaussian window (sigma 1.5) over the valid region, population statistics,
    ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2`` and 2 x 2 averaging + subsampling between scales.
    Negative per-scale means are clipped to 0 before the fractional power. Images too small for 5 scales
    (a side < 176 px) use as many scales as fit, with the weights of those scales renormalised to sum 1.
    Range: 0 .. 1 (1 for x = y).
    """
    xf = as_gray255(x, "x")
    yf = as_gray255(y, "y")
    win = 11
    levels = len(MS_SSIM_WEIGHTS)
    while levels > 1 and min(xf.shape) / 2 ** (levels - 1) < win:
        levels -= 1
    if min(xf.shape) < win:
        raise ValueError(f"MS-SSIM needs images of at least {win} x {win} pixels")
    weights = np.array(MS_SSIM_WEIGHTS[:levels])
    weights = weights / weights.sum()
    k = _gauss1d(win, 1.5)
    pad = win // 2
    values = []
    for level in range(levels):
        smap, cs = _ssim_maps(xf, yf, k, cov_norm=1.0)
        m = smap if level == levels - 1 else cs
        values.append(max(float(m[pad:-pad, pad:-pad].mean()), 0.0))
        if level < levels - 1:
            xf, yf = _half(xf), _half(yf)
    return float(np.prod(np.power(values, weights)))


def ms_ssim(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """MS-SSIM of F against both sources: ``MS-SSIM(F, A) + MS-SSIM(F, B)`` (a **sum**, like SSIM).

    Each term is :func:`ms_ssim_pair`. Unit: none. Range: 0 .. 2. Higher is better.
    """
    f, a, b = as_triple(fused, ir, vi)
    return ms_ssim_pair(f, a) + ms_ssim_pair(f, b)


# -------------------------------------------------------------------------------------------------- VIF
def _valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Correlation with ``outer(k, k)`` keeping only the fully covered ('valid') region."""
    r = len(k) // 2
    return _sep(img, k)[r:img.shape[0] - r, r:img.shape[1] - r]


def vif_pair(ref: np.ndarray, dist: np.ndarray) -> float:
    """Pixel-domain visual information fidelity VIFp (Sheikh & Bovik, IEEE TIP 2006; vifp_mscale.m).

    Four scales s = 1..4 with Gaussian windows of size ``N = 2^(5-s) + 1`` (17, 9, 5, 3) and sigma ``N / 5``;
    before scales 2..4 both images are filtered ('valid') and subsampled by 2. Per scale, with local means,
    variances ``s1^2, s2^2`` and covariance ``s12`` (valid region): ``g = s12 / s1^2``,
    ``sv^2 = s2^2 - g s12`` (g < 0 -> g = 0, sv^2 = s2^2; flat reference -> g = 0; sv^2 >= 1e-10),
    ``num += sum log10(1 + g^2 s1^2 / (sv^2 + sigma_n^2))``, ``den += sum log10(1 + s1^2 / sigma_n^2)``,
    ``sigma_n^2 = 2``. VIFp = num / den (1.0 when den = 0). Range: 0 .. ~1 (> 1 for contrast enhancement).
    Raises ValueError when the images are too small for the four scales (a side < 41 px).
    """
    return _vif_sum(as_gray255(dist, "dist"), [as_gray255(ref, "ref")])


def _vif_sum(dist: np.ndarray, refs: list[np.ndarray]) -> float:
    """Sum over the references of VIFp(ref, dist), sharing the distorted image's pyramid and statistics."""
    eps = 1e-10
    d = dist
    rs = list(refs)
    num = [0.0] * len(rs)
    den = [0.0] * len(rs)
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        k = _gauss1d(n, n / 5.0)
        if scale > 1:
            if min(d.shape) < n:
                raise ValueError("VIF needs images of at least 41 x 41 pixels (four scales)")
            d = _valid(d, k)[::2, ::2]
            rs = [_valid(r, k)[::2, ::2] for r in rs]
        if min(d.shape) < n:
            raise ValueError("VIF needs images of at least 41 x 41 pixels (four scales)")
        mu2 = _valid(d, k)
        s2 = np.maximum(_valid(d * d, k) - mu2 * mu2, 0.0)
        flat_dist = s2 < eps
        for i, r in enumerate(rs):
            mu1 = _valid(r, k)
            s1 = np.maximum(_valid(r * r, k) - mu1 * mu1, 0.0)
            s12 = _valid(r * d, k) - mu1 * mu2
            g = s12 / (s1 + eps)
            flat_ref = s1 < eps
            # vifp_mscale.m's special cases, folded: g = 0 on a flat reference, a flat distorted image or a
            # negative gain, and then sv^2 = s2^2 - g s12 gives exactly its sv^2 (s2^2, or <= eps on flat dist).
            g[flat_ref | flat_dist | (g < 0)] = 0.0
            sv = np.maximum(s2 - g * s12, eps)
            s1[flat_ref] = 0.0
            num[i] += float(np.sum(np.log10(1.0 + g * g * s1 / (sv + VIF_SIGMA_NSQ))))
            den[i] += float(np.sum(np.log10(1.0 + s1 / VIF_SIGMA_NSQ)))
    return sum(1.0 if dn == 0.0 else nm / dn for nm, dn in zip(num, den))


def vif(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIF of F against both sources: ``VIFp(A, F) + VIFp(B, F)``, the **sum** (CDDFuse / VIF-Benchmark).

    Each term is :func:`vif_pair` with the source as reference. Unit: none. Range: 0 .. ~2. Higher is better.
    """
    f, a, b = as_triple(fused, ir, vi)
    return _vif_sum(f, [a, b])

