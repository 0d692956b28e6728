"""Fusion metrics: hand-computed values, invariants, monotonic responses, independent oracles (scikit-image SSIM,
a brute-force Fast-FMI, the slow straightforward PC and Fast-FMI that the fast ones replace), and agreement with
the independent TNO42 reference table of shared/data/peer_outputs/README.md."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import fft as sp_fft
from skimage.metrics import structural_similarity

from egmt_ros.core.images import list_pairs, load_image, load_pair, to_gray
from egmt_ros.metrics import (
    METRICS,
    PAPER_METRICS,
    average_gradient,
    cc,
    compute_all,
    entropy,
    fmi_pixel,
    fmi_w,
    mi,
    ms_ssim,
    ms_ssim_pair,
    mutual_information,
    nabf,
    ncie,
    pc,
    psnr,
    qabf,
    scd,
    spatial_frequency,
    ssim,
    ssim_pair,
    std_dev,
    vif,
)
from egmt_ros.metrics import _native
from egmt_ros.metrics import fmi as fmi_mod
from egmt_ros.metrics import phase as phase_mod
from egmt_ros.metrics.fmi import dmey_filters, dwt2_dmey, fast_fmi, wavelet_feature
from egmt_ros.metrics.gradient import QABF_DA, QABF_DG, QABF_KA, QABF_KG, QABF_TA, QABF_TG
from egmt_ros.metrics.phase import phase_congruency


def _gray255(img: np.ndarray) -> np.ndarray:
    """A [0, 1] image from load_pair on the 0..255 scale (exact integers for 8-bit files)."""
    return np.rint(to_gray(img).astype(np.float64) * 255.0)


@pytest.fixture(scope="module")
def crop(data_root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused = rounded pixel average, IR, VI) of a 128 x 160 crop of TNO pair 01 (people, trees, fence)."""
    stem, ir_p, vi_p = list_pairs(data_root / "tno42")[0]
    ir, vi = load_pair(ir_p, vi_p)
    a = _gray255(ir)[200:328, 300:460]
    b = _gray255(vi)[200:328, 300:460]
    return np.rint((a + b) / 2.0), a, b


# ------------------------------------------------------------------------------------------ input checks
def test_float_unit_range_images_are_refused(crop) -> None:
    f, a, b = crop
    with pytest.raises(ValueError, match="0..255"):
        compute_all(f / 255.0, a / 255.0, b / 255.0, names=["EN"])
    with pytest.raises(ValueError, match="multiply by 255"):
        qabf(f, a / 255.0, b)
    with pytest.raises(ValueError, match="0..255"):
        entropy(np.random.default_rng(0).random((8, 8)))
    # An integer image whose values are 0/1 is a legitimate (binary) 0..255 image.
    binary = np.zeros((4, 4), np.uint8)
    binary[:2] = 1
    assert entropy(binary) == pytest.approx(1.0)


def test_shape_mismatch_and_non_2d_are_refused(crop) -> None:
    f, a, b = crop
    with pytest.raises(ValueError, match="shape mismatch"):
        mi(f, a[:-1], b)
    with pytest.raises(ValueError, match="2-D"):
        ssim(np.stack([f] * 3, axis=-1), a, b)
    with pytest.raises(ValueError, match="41 x 41"):
        vif(f[:40, :60], a[:40, :60], b[:40, :60])
    assert vif(f[:41, :60], a[:41, :60], b[:41, :60]) > 0


def test_uint8_and_float_inputs_give_identical_values(crop) -> None:
    f, a, b = (x[:48, :64] for x in crop)
    as_float = compute_all(f, a, b)
    as_uint8 = compute_all(f.astype(np.uint8), a.astype(np.uint8), b.astype(np.uint8))
    assert list(as_float) == list(METRICS)
    for name, value in as_float.items():
        assert as_uint8[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


# ------------------------------------------------------------------------------------- hand-computed values
def test_entropy_of_equiprobable_levels() -> None:
    two = np.zeros((4, 4), np.uint8)
    two[:, 2:] = 255
    assert entropy(two) == pytest.approx(1.0)
    four = np.repeat(np.array([[0, 60, 120, 250]], np.uint8), 4, axis=0)
    assert entropy(four) == pytest.approx(2.0)
    # p = (1/2, 1/4, 1/4) -> 1/2 + 2 * 1/4 * 2 = 1.5 bits
    three = np.array([[0, 0, 7, 9]], np.uint8)
    assert entropy(three) == pytest.approx(1.5)


def test_sd_sf_ag_of_tiny_ramps() -> None:
    halves = np.array([[0, 255], [0, 255]], np.uint8)
    assert std_dev(halves) == pytest.approx(127.5)
    ramp = np.tile(np.array([0.0, 10.0, 20.0, 30.0]), (3, 1))  # +10 per column, flat along rows
    assert spatial_frequency(ramp) == pytest.approx(10.0)  # RF^2 = 100, CF^2 = 0
    assert average_gradient(ramp) == pytest.approx(math.sqrt(100.0 / 2.0))  # Gx = 10 everywhere, Gy = 0
    plane = 10.0 * np.arange(5)[None, :] + 4.0 * np.arange(4)[:, None] + 3.0  # +10 per column, +4 per row
    assert spatial_frequency(plane) == pytest.approx(math.sqrt(100.0 + 16.0))
    assert average_gradient(plane) == pytest.approx(math.sqrt((100.0 + 16.0) / 2.0))


def test_constant_image_has_zero_en_sd_sf_ag() -> None:
    flat = np.full((9, 11), 128, np.uint8)
    assert entropy(flat) == 0.0
    assert std_dev(flat) == 0.0
    assert spatial_frequency(flat) == 0.0
    assert average_gradient(flat) == 0.0


def test_mutual_information_of_hand_built_joint_histograms() -> None:
    x = np.array([[0, 0, 0, 0, 100, 100, 100, 100]], np.uint8)
    assert mutual_information(x, x) == pytest.approx(1.0)  # identical binary variables: H = 1 bit
    y_indep = np.array([[0, 0, 100, 100, 0, 0, 100, 100]], np.uint8)
    assert mutual_information(x, y_indep) == pytest.approx(0.0, abs=1e-12)
    # joint p: (0,0) 3/8, (0,100) 1/8, (100,100) 3/8, (100,0) 1/8 -> I = 1 - H_b(1/4)
    y_noisy = np.array([[0, 0, 0, 100, 100, 100, 100, 0]], np.uint8)
    h_b = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert mutual_information(x, y_noisy) == pytest.approx(1.0 - h_b)
    # MI sums the two sources: F = A gives I(F;A) = 1 bit, B independent gives 0.
    assert mi(x, x, y_indep) == pytest.approx(1.0)


def test_mi_is_symmetric_and_invariant_to_relabelling_grey_levels(crop) -> None:
    f, a, b = crop
    assert mutual_information(f, a) == pytest.approx(mutual_information(a, f), rel=1e-12)
    lut = np.random.default_rng(3).permutation(256).astype(np.float64)
    a_perm, b_perm = lut[a.astype(int)], lut[b.astype(int)]
    assert mi(f, a_perm, b_perm) == pytest.approx(mi(f, a, b), rel=1e-12)
    assert entropy(lut[f.astype(int)]) == pytest.approx(entropy(f), rel=1e-12)
    assert mi(f, a, b) < 2 * entropy(f)


def test_psnr_scd_cc_by_hand(crop) -> None:
    src = np.full((6, 6), 50.0)
    fused = np.full((6, 6), 60.0)  # MSE 100 against both sources
    assert psnr(fused, src, src) == pytest.approx(10 * math.log10(255.0 ** 2 / 100.0))
    assert psnr(fused, src, src, peak=None) == pytest.approx(10 * math.log10(60.0 ** 2 / 100.0))  # CDDFuse: max(F)
    fused[0, 0] = 80.0  # MSE(F, A) = MSE(F, B) = (35 * 100 + 900) / 36: the two MSEs are averaged
    assert psnr(fused, src, src) == pytest.approx(10 * math.log10(255.0 ** 2 * 36 / 4400.0))
    assert psnr(src, src, src) == math.inf
    rng = np.random.default_rng(5)
    a = rng.integers(0, 100, (40, 40)).astype(np.float64)
    b = rng.integers(0, 100, (40, 40)).astype(np.float64)
    # F = A + B: F - B = A and F - A = B, so both correlations of differences are exactly 1.
    assert scd(a + b, a, b) == pytest.approx(2.0)
    assert cc(a, a, b) == pytest.approx((1.0 + np.corrcoef(a.ravel(), b.ravel())[0, 1]) / 2.0)


# ------------------------------------------------------------------------------------------------ invariants
def test_fused_equal_to_both_sources(crop) -> None:
    _, a, _ = crop
    assert ssim_pair(a, a) == pytest.approx(1.0)
    assert ssim(a, a, a) == pytest.approx(2.0)
    assert ms_ssim(a, a, a) == pytest.approx(2.0)
    assert vif(a, a, a) == pytest.approx(2.0, abs=1e-6)
    assert mi(a, a, a) == pytest.approx(2.0 * entropy(a))
    assert nabf(a, a, a) == 0.0
    assert fmi_w(a, a, a) == pytest.approx(1.0)
    assert fmi_pixel(a, a, a) == pytest.approx(1.0)
    assert cc(a, a, a) == pytest.approx(1.0)
    # Qabf: G = 1 and A = 1 wherever there is an edge, so Qabf is the product of the two sigmoids at 1.
    q_max = QABF_TG / (1 + math.exp(QABF_KG * (1 - QABF_DG))) * QABF_TA / (1 + math.exp(QABF_KA * (1 - QABF_DA)))
    assert qabf(a, a, a) == pytest.approx(q_max, rel=1e-12)
    # NCIE: R = [[1, r, r], [r, 1, r], [r, r, 1]] with r = H(A) / 8 has eigenvalues 1 + 2r, 1 - r, 1 - r.
    r = entropy(a) / 8.0
    lam = np.array([1 + 2 * r, 1 - r, 1 - r]) / 3.0
    assert ncie(a, a, a) == pytest.approx(1.0 + float(np.sum(lam * np.log2(lam))) / 8.0)


def test_ncie_extremes() -> None:
    flat_hist = np.arange(256, dtype=np.float64).reshape(16, 16)  # every level once: NCC = 1
    assert ncie(flat_hist, flat_hist, flat_hist) == pytest.approx(1.0)
    rng = np.random.default_rng(7)
    big = [rng.integers(0, 256, (512, 512)).astype(np.float64) for _ in range(3)]
    # Unrelated images: NCIE tends to 1 - log2(3)/8 (small positive MI bias from the finite sample).
    assert 1 - math.log2(3) / 8 < ncie(*big) < 1 - math.log2(3) / 8 + 0.005


def test_ssim_matches_scikit_image(crop) -> None:
    f, a, b = crop
    noisy = np.clip(f + np.random.default_rng(1).normal(0, 12, f.shape), 0, 255)
    for x, y in ((noisy, a), (f, b), (a, b)):
        assert ssim_pair(x, y) == pytest.approx(structural_similarity(x, y, data_range=255), rel=1e-9)
    assert ssim(noisy, a, b) == pytest.approx(
        structural_similarity(noisy, a, data_range=255) + structural_similarity(noisy, b, data_range=255), rel=1e-9)


# ------------------------------------------------------------------------------------- monotonic responses
def test_noise_raises_nabf_and_lowers_qabf_ssim_pc(crop) -> None:
    f, a, b = crop
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 1, f.shape)
    levels = [np.clip(np.rint(f + s * noise), 0, 255) for s in (0, 6, 20)]
    n = [nabf(x, a, b) for x in levels]
    q = [qabf(x, a, b) for x in levels]
    s = [ssim(x, a, b) for x in levels]
    p = [pc(x, a, b) for x in levels]
    assert n[0] < 1e-3  # the pixel average creates (almost) no stronger-than-source edges
    assert n[0] < n[1] < n[2]
    assert q[0] > q[1] > q[2]
    assert s[0] > s[1] > s[2]
    assert p[0] > p[1] > p[2]
    assert pc(a, a, a) > 0.9 > p[0]


def test_blur_lowers_sf_ag_qabf_ms_ssim(crop) -> None:
    f, a, b = crop
    levels = [f] + [cv2.GaussianBlur(f, (0, 0), s) for s in (1.0, 2.5)]
    for metric in (lambda x: spatial_frequency(x), lambda x: average_gradient(x), lambda x: qabf(x, a, b),
                   lambda x: ms_ssim(x, a, b), lambda x: fmi_w(x, a, b)):
        v = [metric(x) for x in levels]
        assert v[0] > v[1] > v[2]
    assert ms_ssim_pair(a, cv2.GaussianBlur(a, (0, 0), 2.0)) < 1.0


# --------------------------------------------------------------------------------------- FMI oracles
def _fmi_window_bruteforce(src: np.ndarray, fus: np.ndarray) -> float:
    """Haghighat's Fast-FMI for one window pair, written out cell by cell over the full l x l joint pdf."""
    if np.array_equal(src, fus):
        return 1.0

    def pdf(x: np.ndarray) -> np.ndarray:
        v = x.flatten(order="F")  # MATLAB's column-major x(:)
        v = np.ones_like(v) if v.max() == v.min() else (v - v.min()) / (v.max() - v.min())
        return v / v.sum()

    s, f = pdf(src), pdf(fus)
    n = len(s)
    cs, cf = np.concatenate([[0.0], np.cumsum(s)]), np.concatenate([[0.0], np.cumsum(f)])
    num = float(np.sum((s - s.mean()) * (f - f.mean())))
    c = 0.0 if num == 0 else num / math.sqrt(np.sum((s - s.mean()) ** 2) * np.sum((f - f.mean()) ** 2))
    pos = np.arange(1, n + 1)
    sd_s = math.sqrt(max(np.sum(pos ** 2 * s) - np.sum(pos * s) ** 2, 0.0))
    sd_f = math.sqrt(max(np.sum(pos ** 2 * f) - np.sum(pos * f) ** 2, 0.0))
    if c >= 0:
        def bound(u: float, v: float) -> float:
            return min(u, v)  # Frechet upper bound
    else:
        def bound(u: float, v: float) -> float:
            return max(u + v - 1.0, 0.0)  # Frechet lower bound
    if c == 0 or sd_s == 0 or sd_f == 0:
        mix = 0.0
    else:
        cov = sum(bound(cf[i], cs[j]) - cf[i] * cs[j] for i in range(1, n + 1) for j in range(1, n + 1))
        mix = c / (cov / (sd_s * sd_f))
    h_joint = 0.0
    for i in range(1, n + 1):
        for j in range(1, n + 1):
            cell = bound(cf[i], cs[j]) - bound(cf[i - 1], cs[j]) - bound(cf[i], cs[j - 1]) + bound(cf[i - 1], cs[j - 1])
            p = mix * cell + (1 - mix) * f[i - 1] * s[j - 1]
            if p != 0:
                h_joint -= p * math.log2(abs(p))
    h_s = -sum(x * math.log2(x) for x in s if x > 0)
    h_f = -sum(x * math.log2(x) for x in f if x > 0)
    mutual = h_s + h_f - h_joint
    return 0.0 if mutual == 0 else 2 * mutual / (h_s + h_f)


def _fmi_bruteforce(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    vals = [(_fmi_window_bruteforce(a[i:i + 3, j:j + 3], f[i:i + 3, j:j + 3])
             + _fmi_window_bruteforce(b[i:i + 3, j:j + 3], f[i:i + 3, j:j + 3])) / 2
            for i in range(f.shape[0] - 2) for j in range(f.shape[1] - 2)]
    return float(np.mean(vals))


def test_vectorised_fmi_equals_bruteforce() -> None:
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, (9, 11)).astype(np.float64)
    b = rng.integers(0, 256, (9, 11)).astype(np.float64)
    a[:4, :5] = 40.0  # flat windows
    b[5:, 6:] = np.round(b[5:, 6:] / 85) * 85  # ties and zero pdf entries
    f = np.clip(np.round((a + b) / 2 + rng.normal(0, 25, a.shape)), 0, 255)
    f[:, :3] = a[:, :3]  # windows equal to the source
    f[6:, 4:] = 255 - b[6:, 4:]  # anti-correlated windows (the Frechet lower bound branch)
    expected = _fmi_bruteforce(a, b, f)
    assert fmi_mod._fast_fmi_numpy(a, b, f, cells=np.float64) == pytest.approx(expected, rel=1e-12)
    # single-precision cells (numpy's default)
    assert fmi_mod._fast_fmi_numpy(a, b, f) == pytest.approx(expected, rel=1e-7)
    assert fmi_mod._fast_fmi_native(a, b, f) == pytest.approx(expected, rel=1e-12)
    assert fast_fmi(a, b, f) == pytest.approx(expected, rel=1e-12)  # the C kernel


def test_dmey_filters_are_an_orthonormal_pair() -> None:
    lo, hi = dmey_filters()
    assert len(lo) == len(hi) == 102
    assert lo.sum() == pytest.approx(math.sqrt(2.0), abs=1e-5)  # DC gain, up to the 102-tap truncation
    assert float(np.dot(lo, lo)) == pytest.approx(1.0, abs=1e-9)
    for m in range(1, 8):  # orthogonal to its even shifts
        assert abs(float(np.dot(lo[:-2 * m], lo[2 * m:]))) < 1e-9
    assert abs(float(hi.sum())) < 1e-5  # high-pass: no DC (up to truncation)
    for m in range(0, 8):
        assert abs(float(np.dot(lo[:len(lo) - 2 * m], hi[2 * m:]))) < 1e-9
    c_a, c_h, c_v, c_d = dwt2_dmey(np.full((20, 30), 7.0))
    assert c_a.shape == c_h.shape == c_v.shape == c_d.shape == ((20 + 101) // 2, (30 + 101) // 2)
    assert np.allclose(c_a, 14.0) and np.abs(c_h).max() < 1e-4 and np.abs(c_d).max() < 1e-4


# -------------------------------------------------------------------- slow reference implementations (oracles)
# The straightforward transcriptions that PC and Fast-FMI had before they were made fast (git history of
# egmt_ros/metrics/phase.py and fmi.py): the fast code must reproduce them (PC bit for bit, Fast-FMI to the
# single-precision cell arithmetic).
def _phase_congruency_reference(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    im = np.asarray(img, dtype=np.float64)
    rows, cols = im.shape
    bank, tfac = phase_mod._filter_bank(rows, cols)
    spectrum = sp_fft.fft2(im.astype(np.float32))
    total_energy = np.zeros((rows, cols), np.float32)
    total_an = np.zeros((rows, cols), np.float32)
    cov_x2 = np.zeros((rows, cols), np.float32)
    cov_y2 = np.zeros((rows, cols), np.float32)
    cov_xy = np.zeros((rows, cols), np.float32)
    for o in range(phase_mod.PC_NORIENT):
        angl = o * math.pi / phase_mod.PC_NORIENT
        eo = sp_fft.ifft2(spectrum[None] * bank[o], axes=(1, 2), overwrite_x=True)
        amp = np.abs(eo)
        sum_an = amp.sum(axis=0)
        max_an = amp.max(axis=0)
        sum_eo = eo.sum(axis=0)
        unit = np.conj(sum_eo / (np.abs(sum_eo) + phase_mod.PC_EPS))
        proj = eo * unit[None]
        energy = proj.real.sum(axis=0) - np.abs(proj.imag).sum(axis=0)
        mean_e2n = -float(np.median(amp[0] ** 2)) / math.log(0.5)
        threshold = math.sqrt(mean_e2n) * tfac[o]
        energy = np.maximum(energy - threshold, 0.0)
        width = sum_an / (max_an + phase_mod.PC_EPS) / phase_mod.PC_NSCALE
        weight = np.float32(1.0) / (np.float32(1.0) + np.exp(
            (np.float32(phase_mod.PC_CUTOFF) - width) * np.float32(phase_mod.PC_G)))
        weighted = weight * energy
        total_an += sum_an
        total_energy += weighted
        pc_o = np.divide(weighted, sum_an, out=np.zeros_like(weighted), where=sum_an > 0)
        cx = pc_o * np.float32(math.cos(angl))
        cy = pc_o * np.float32(math.sin(angl))
        cov_x2 += cx * cx
        cov_y2 += cy * cy
        cov_xy += cx * cy
    pc_map = total_energy.astype(np.float64) / (total_an + phase_mod.PC_EPS)
    cov_x2 = cov_x2.astype(np.float64) / (phase_mod.PC_NORIENT / 2)
    cov_y2 = cov_y2.astype(np.float64) / (phase_mod.PC_NORIENT / 2)
    cov_xy = cov_xy.astype(np.float64) / phase_mod.PC_NORIENT
    denom = np.sqrt(cov_xy * cov_xy + (cov_x2 - cov_y2) ** 2) + phase_mod.PC_EPS
    return pc_map, (cov_y2 + cov_x2 + denom) / 2.0, (cov_y2 + cov_x2 - denom) / 2.0


def _pc_reference(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    x = np.arange(11) - 5.0
    k = np.exp(-(x * x) / (2 * 1.5 ** 2))
    k /= k.sum()

    def gauss(img: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(img, cv2.CV_64F, k, k, borderType=cv2.BORDER_CONSTANT)

    def feature_score(f1, f2, fmax, ff, masks) -> float:
        mu_f = gauss(ff)
        var_f = gauss(ff * ff) - mu_f * mu_f
        best = np.full_like(ff, -np.inf)
        for src, mask in zip((f1, f2, fmax), masks):
            s = src * mask
            mu = gauss(s)
            var = gauss(s * s) - mu * mu
            cov = gauss(s * ff) - mu * mu_f
            r = (cov + 1e-4) / (np.sqrt(np.abs(var * var_f)) + 1e-4)
            best = np.maximum(best, np.where(mask, r, 0.0))
        count = int(masks[2].sum())
        return float(best.sum()) / count if count else 0.0

    (pc_a, big_a, small_a), (pc_b, big_b, small_b), (pc_f, big_f, small_f) = (
        _phase_congruency_reference(np.asarray(x_, np.float64)) for x_ in (ir, vi, fused))
    pick_a = pc_a > pc_b
    pc_max = np.where(pick_a, pc_a, pc_b)
    masks = (pc_a > 0.1, pc_b > 0.1, pc_max > 0.1)
    score = 1.0
    for fa, fb, ff in ((pc_a, pc_b, pc_f), (big_a, big_b, big_f), (small_a, small_b, small_f)):
        score *= feature_score(fa, fb, np.where(pick_a, fa, fb), ff, masks)
    return score


def _fast_fmi_reference(feat_a: np.ndarray, feat_b: np.ndarray, feat_f: np.ndarray, w: int = 3) -> float:
    """Fast-FMI with one window per row (n x l arrays), a sort-based merge of the two cdfs, all in float64."""

    def windows(feat: np.ndarray) -> np.ndarray:
        v = np.lib.stride_tricks.sliding_window_view(np.asarray(feat, np.float64), (w, w))
        return np.ascontiguousarray(v.transpose(0, 1, 3, 2)).reshape(-1, w * w)

    def plogp(p: np.ndarray) -> np.ndarray:
        a = np.abs(p)
        a[a == 0] = 1.0
        return p * np.log2(a)

    def pdf_stats(win: np.ndarray):
        n, l = win.shape
        lo = win.min(axis=1, keepdims=True)
        flat = (win.max(axis=1, keepdims=True) - lo)[:, 0] == 0
        pdf = win - lo
        pdf[flat] = 1.0
        pdf /= pdf.sum(axis=1, keepdims=True)
        pos = np.arange(1, l + 1, dtype=np.float64)
        m1 = pdf @ pos
        sd = np.sqrt(np.maximum(pdf @ (pos * pos) - m1 * m1, 0.0))
        return pdf, np.cumsum(pdf, axis=1), -np.sum(plogp(pdf), axis=1), sd, pdf - 1.0 / l

    def fmi_rows(f, s) -> np.ndarray:
        pdf_f, cdf_f, h_f, sd_f, cen_f = f
        pdf_s, cdf_s, h_s, sd_s, cen_s = s
        n, l = pdf_f.shape
        num = np.sum(cen_s * cen_f, axis=1)
        den = np.sqrt(np.sum(cen_s * cen_s, axis=1) * np.sum(cen_f * cen_f, axis=1))
        c = np.divide(num, den, out=np.zeros(n), where=num != 0)
        neg = c < 0
        pdf_u, cdf_u = pdf_s.copy(), cdf_s.copy()
        pdf_u[neg] = pdf_s[neg, ::-1]
        cdf_u[neg] = np.cumsum(pdf_u[neg], axis=1)
        # Merge the two cdfs (ties: F first; the source rides in the lowest mantissa bit).
        bits_f = np.maximum(cdf_f, 0.0).view(np.int64) & ~1
        bits_u = np.maximum(cdf_u, 0.0).view(np.int64) | 1
        merged = np.sort(np.concatenate([bits_f, bits_u], axis=1), axis=1)
        from_s = (merged & 1).astype(bool)
        srt = merged.view(np.float64)
        s_before = np.cumsum(from_s, axis=1) - from_s
        f_before = np.arange(2 * l) - s_before
        sum_min = np.sum(srt * (l - np.where(from_s, f_before, s_before)), axis=1)
        sum_cdf_f = cdf_f.sum(axis=1)
        bound = np.where(neg, (l + 1) * sum_cdf_f - sum_min, sum_min)
        cov = bound - sum_cdf_f * cdf_s.sum(axis=1)
        sd_prod = sd_s * sd_f
        corr_bound = np.divide(cov, sd_prod, out=np.zeros(n), where=sd_prod > 0)
        phi = np.divide(c, corr_bound, out=np.zeros(n), where=(c != 0) & (corr_bound != 0))
        beta = 1.0 - phi
        d = np.diff(srt, axis=1, prepend=0.0)
        prod = np.take_along_axis(pdf_f, np.minimum(f_before, l - 1), axis=1)
        prod *= np.take_along_axis(pdf_u, np.minimum(s_before, l - 1), axis=1)
        prod *= beta[:, None]
        mix = phi[:, None] * d + prod
        h_joint = -plogp(beta) + beta * (h_s + h_f) - np.sum(plogp(mix) - plogp(prod), axis=1)
        h_sum = h_s + h_f
        mi_ = h_sum - h_joint
        return np.divide(2.0 * mi_, h_sum, out=np.zeros(n), where=(mi_ != 0) & (h_sum > 0))

    wa, wb, wf = windows(feat_a), windows(feat_b), windows(feat_f)
    stats_f = pdf_stats(wf)
    total = 0.0
    for ws in (wa, wb):
        vals = fmi_rows(stats_f, pdf_stats(ws))
        vals[np.all(ws == wf, axis=1)] = 1.0
        total += float(np.sum(vals)) / 2.0
    return total / wf.shape[0]


def _hard_fmi_images(seed: int, shape: tuple[int, int] = (23, 31)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources and fused image with every special case of Fast-FMI: flat windows, windows equal to a source,
    single-spike windows (point-mass pdf, SD exactly 0), ties and zeros in the pdfs, anti-correlated windows."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.float64)
    b = rng.integers(0, 256, shape).astype(np.float64)
    a[:6, :7] = 40.0
    a[2, 3] = 41.0  # spikes on a flat patch
    b[-7:, -8:] = 200.0
    b[-4, -5] = 10.0
    b[5:12, 10:] = np.round(b[5:12, 10:] / 85) * 85
    f = np.clip(np.round((a + b) / 2 + rng.normal(0, 25, shape)), 0, 255)
    f[:, :4] = a[:, :4]
    f[12:, 3:14] = 255 - b[12:, 3:14]
    f[:5, -6:] = 7.0
    # Isolated spikes on a flat patch of A: point-mass pdfs whose SD must come out exactly 0. The heights are
    # ones for which d * (1 / d) != 1, so a reciprocal instead of the division would be caught.
    a[14:23, 16:31] = 100.0
    for i, (r, c) in enumerate([(15, 17), (15, 21), (15, 25), (15, 29), (19, 17), (19, 21), (19, 25), (19, 29)]):
        a[r, c] = 100.0 + (49, 98, 103, 107, 49, 98, 103, 107)[i] * (1 if i < 4 else -0.5)
    return a, b, f


def test_pc_equals_reference(data_root: Path) -> None:
    """numpy's maps are bit for bit the reference loop's; the C kernel with torch's FFT (the default) is within
    2e-5 of them (measured <= 1.6e-5 on 32 TNO42 triples) and PC within 5e-5 relative (measured <= 1.6e-5: the
    FFT rounds differently and a few pixels cross the p > 0.1 threshold)."""
    pairs = {stem: (ir_p, vi_p) for stem, ir_p, vi_p in list_pairs(data_root / "tno42")}
    rng = np.random.default_rng(4)
    noise = rng.integers(0, 256, (61, 90)).astype(np.float64)
    ref_maps = _phase_congruency_reference(noise)
    for got, ref in zip(phase_mod._phase_congruency(noise), ref_maps):
        assert np.array_equal(got, ref)
    maps = phase_congruency(noise)
    for got, ref in zip(maps, ref_maps):
        assert got.flags.writeable and np.abs(got - ref).max() < 2e-5
        assert not np.array_equal(got, ref)  # the torch + C path did run
    for stem in ("05", "34"):
        a, b = (_gray255(x) for x in load_pair(*pairs[stem]))
        f = np.rint((a + b) / 2.0)
        ref_maps = _phase_congruency_reference(f)
        for got, nat, ref in zip(phase_mod._phase_congruency(f), phase_mod._phase_congruency_native(f), ref_maps):
            assert np.array_equal(got, ref), stem
            assert np.abs(nat - ref).max() < 2e-5, stem
        expected = _pc_reference(f, a, b)
        first = pc(f, a, b)
        assert first == pytest.approx(expected, rel=5e-5, abs=0)
        # Second call: all three maps come from the content cache (new arrays, same content).
        assert pc(f.copy(), a.copy(), b.copy()) == first
        # Same sources, another fused image (the benchmark case): sources cached, F computed.
        g = np.maximum(a, b)
        assert pc(g, a, b) == pytest.approx(_pc_reference(g, a, b), rel=5e-5, abs=0)
    assert pc(noise, noise, noise) == pytest.approx(_pc_reference(noise, noise, noise), rel=5e-5, abs=0)


def test_pc_kernel_feature_score_equals_numpy(data_root: Path) -> None:
    """Q_P's local-correlation score of one feature map: the C kernel (own Gaussian filtering) against numpy/OpenCV."""
    pairs = {stem: (ir_p, vi_p) for stem, ir_p, vi_p in list_pairs(data_root / "tno42")}
    a, b = (_gray255(x) for x in load_pair(*pairs["05"]))
    f = np.rint((a + b) / 2.0)
    (pc_a, big_a, _), (pc_b, big_b, _), (pc_f, big_f, _) = (phase_mod._phase_congruency(x) for x in (a, b, f))
    pick_a = pc_a > pc_b
    masks = (pc_a > 0.1, pc_b > 0.1, np.where(pick_a, pc_a, pc_b) > 0.1)
    outside = tuple(~m for m in masks)
    lib = phase_mod._kernel()
    for fa, fb, ff in ((pc_a, pc_b, pc_f), (big_a, big_b, big_f)):
        fmax = np.where(pick_a, fa, fb)
        expected = phase_mod._feature_score(fa, fb, fmax, ff, masks, outside)
        assert phase_mod._feature_score_native(lib, fa, fb, fmax, ff, masks) == pytest.approx(expected, rel=1e-12)
    # An all-False composite mask: score 0, as numpy
    none = tuple(np.zeros_like(m) for m in masks)
    assert phase_mod._feature_score_native(lib, pc_a, pc_b, pc_a, pc_f, none) == 0.0


def test_pc_kernel_median_equals_numpy() -> None:
    """The radix-selection median behind PC's noise estimate: np.median exactly (value and float32 dtype), also
    with ties, zeros, odd counts and middle values in different upper-16-bit buckets (the third pass)."""
    lib = phase_mod._kernel()
    assert lib is not None
    rng = np.random.default_rng(0)
    one = np.float32(1.0)
    cases = [rng.random(307200).astype(np.float32), rng.random(30719).astype(np.float32),
             np.round(rng.random(1000) * 5).astype(np.float32), np.zeros(10, np.float32),
             (rng.random(5000) ** 8).astype(np.float32), np.array([5.0, 1.0, 70000.0, 1e-30], np.float32),
             np.array([1.0, np.nextafter(one, np.float32(2)), 3.0, 4.0], np.float32),
             np.array([1.0, 1.0 + 2 ** -7, 5.0, 7.0], np.float32), np.array([2.0, 1.0, 3.0], np.float32),
             np.array([2.0, 1.0], np.float32)]
    for x in cases:
        before = x.copy()
        got, ref = phase_mod._median_nonneg(lib, x), np.median(x)
        assert got == ref and got.dtype == ref.dtype, x.size
        assert np.array_equal(x, before)


def test_fast_fmi_equals_reference_on_hard_cases() -> None:
    for seed in (11, 12):
        a, b, f = _hard_fmi_images(seed)
        ref = _fast_fmi_reference(a, b, f)
        # numpy, double-precision cells: the same arithmetic up to summation order.
        assert fmi_mod._fast_fmi_numpy(a, b, f, cells=np.float64) == pytest.approx(ref, rel=1e-12)
        # numpy's default single-precision cells, on one thread and on two (bands combined exactly: same bits).
        one = fmi_mod._fast_fmi_numpy(a, b, f, workers=1)
        assert one == pytest.approx(ref, rel=1e-7)
        assert fmi_mod._fast_fmi_numpy(a, b, f, workers=2) == one
        # The C kernel (double precision, its own log2) on 1, 2 and 3 threads: rows combined exactly.
        native = fmi_mod._fast_fmi_native(a, b, f, workers=1)
        assert native == pytest.approx(ref, rel=1e-12)
        assert fmi_mod._fast_fmi_native(a, b, f, workers=2) == native
        assert fmi_mod._fast_fmi_native(a, b, f, workers=3) == native
        assert fast_fmi(a, b, f) == native
        # Another window size (the kernel's generic path; 3 x 3 has a specialised one).
        ref4 = _fast_fmi_reference(a, b, f, w=4)
        assert fmi_mod._fast_fmi_native(a, b, f, w=4) == pytest.approx(ref4, rel=1e-12)
        assert fmi_mod._fast_fmi_numpy(a, b, f, w=4, cells=np.float64) == pytest.approx(ref4, rel=1e-12)
        # Wavelet features (floats in [0, 1]) of the same images.
        fa, fb, ff = (wavelet_feature(x) for x in (a, b, f))
        ref_w = _fast_fmi_reference(fa, fb, ff)
        assert fmi_mod._fast_fmi_numpy(fa, fb, ff, cells=np.float64) == pytest.approx(ref_w, rel=1e-12)
        assert fmi_mod._fast_fmi_numpy(fa, fb, ff) == pytest.approx(ref_w, rel=1e-7)
        assert fast_fmi(fa, fb, ff) == pytest.approx(ref_w, rel=1e-12)
    for func in (fast_fmi, fmi_mod._fast_fmi_numpy, fmi_mod._fast_fmi_native):
        with pytest.raises(ValueError, match="at least 3 x 3"):
            func(a[:2], b[:2], f[:2])
        with pytest.raises(ValueError, match="differ in shape"):
            func(a, b, f[:-1])


def test_native_kernels_are_built_once_and_their_absence_falls_back_to_numpy(tmp_path: Path, monkeypatch) -> None:
    """A C kernel is compiled into the cache folder once (a second build reuses the file); with no compiler,
    Fast-FMI warns and runs in numpy with the same value (to numpy's float32 cells); switched off, PC runs in
    numpy too (maps bit for bit the reference loop's)."""
    a, b, f = _hard_fmi_images(13)
    ref = _fast_fmi_reference(a, b, f)
    monkeypatch.setenv("EGMT_CACHE_DIR", str(tmp_path / "cache"))
    lib = _native.build("fastfmi")
    assert lib.parent == tmp_path / "cache" and lib.name.startswith("fastfmi-") and lib.suffix == ".so"
    stamp = lib.stat().st_mtime_ns
    assert _native.build("fastfmi") == lib and lib.stat().st_mtime_ns == stamp
    assert [p.name for p in lib.parent.iterdir()] == [lib.name]  # no temporary file left behind
    # A cache folder that cannot be created (here: a file in the way): a private folder in the temporary folder.
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("EGMT_CACHE_DIR", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    fallback = _native.build("fastfmi")
    assert fallback.parent == tmp_path / "tmp" / f"egmt_ros-{os.getuid()}" and fallback.name == lib.name
    assert fallback.parent.stat().st_mode & 0o777 == 0o700
    fallback.parent.chmod(0o777)  # writable by others: refused
    with pytest.raises(RuntimeError, match="not private"):
        _native.build("fastfmi")
    fallback.parent.chmod(0o700)
    monkeypatch.setenv("EGMT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(RuntimeError, match="no C compiler found"):
        _native.build("fastfmi")
    _native.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="'fastfmi' is not available, using numpy"):
            assert fmi_mod._kernel() is None
        assert fast_fmi(a, b, f) == pytest.approx(ref, rel=1e-7)
        with pytest.raises(RuntimeError, match="not available"):
            fmi_mod._fast_fmi_native(a, b, f)
        monkeypatch.delenv("CC")
        monkeypatch.setenv("EGMT_METRICS_NATIVE", "0")
        _native.load.cache_clear()
        assert fmi_mod._kernel() is None and phase_mod._kernel() is None  # switched off: no warning, numpy
        assert fast_fmi(a, b, f) == fmi_mod._fast_fmi_numpy(a, b, f)
        phase_mod._MAPS.clear()
        assert pc(f, a, b) == pytest.approx(_pc_reference(f, a, b), rel=1e-12, abs=0)  # numpy maps: bit for bit
    finally:
        _native.load.cache_clear()
        phase_mod._MAPS.clear()
    monkeypatch.delenv("EGMT_METRICS_NATIVE")
    assert fmi_mod._kernel() is not None and fast_fmi(a, b, f) == pytest.approx(ref, rel=1e-12)
    assert phase_mod._kernel() is not None


def test_fmi_equals_reference_on_tno_pairs(data_root: Path) -> None:
    pairs = {stem: (ir_p, vi_p) for stem, ir_p, vi_p in list_pairs(data_root / "tno42")}
    for stem, fuse in (("05", lambda a, b: np.rint((a + b) / 2.0)),
                       ("34", np.maximum)):  # max: many windows equal to a source
        a, b = (_gray255(x) for x in load_pair(*pairs[stem]))
        f = fuse(a, b)
        assert fmi_pixel(f, a, b) == pytest.approx(_fast_fmi_reference(a, b, f), rel=1e-12)
        feats = [wavelet_feature(x) for x in (a, b, f)]
        assert fmi_w(f, a, b) == pytest.approx(_fast_fmi_reference(*feats), rel=1e-12)


# ---------------------------------------------------------------------------------------------- registry
def test_registry_and_compute_all(crop) -> None:
    assert PAPER_METRICS == ("PC", "SSIM", "MI", "Qabf", "PSNR", "FMI_w", "Nabf", "NCIE")
    assert [n for n, s in METRICS.items() if s.paper] == list(PAPER_METRICS)
    assert {"EN", "SD", "SF", "AG", "SCD", "VIF", "CC", "MS_SSIM", "FMI_pixel"} <= set(METRICS)
    assert all(spec.name == name and spec.unit for name, spec in METRICS.items())
    assert [n for n, s in METRICS.items() if not s.higher_is_better] == ["Nabf"]
    assert METRICS["MI"].unit.startswith("bits")
    f, a, b = crop
    out = compute_all(f, a, b, names=["SSIM", "EN"])
    assert list(out) == ["SSIM", "EN"]
    assert out["EN"] == entropy(f) and out["SSIM"] == ssim(f, a, b)
    with pytest.raises(KeyError, match="unknown"):
        compute_all(f, a, b, names=["SSIM", "NoSuchMetric"])


# -------------------------------------------------------------------------- independent reference table
# TNO42 means from shared/data/peer_outputs/README.md (CDDFuse's Evaluator for EN..PSNR, cslib's Nabf/NCIE).
REFERENCE = {
    "SeAFusion": dict(EN=7.134, SD=44.24, SF=12.25, AG=4.958, MI=2.833, SCD=1.728, VIF=0.704, Qabf=0.488,
                      SSIM=1.297, PSNR=13.26, Nabf=0.0807, NCIE=0.8069),
    "pixel average": dict(EN=6.157, SD=24.82, SF=6.46, AG=2.506, MI=2.215, SCD=1.595, VIF=0.573, Qabf=0.350,
                          SSIM=1.457, PSNR=14.38, Nabf=0.0000, NCIE=0.8050),
}
# The table prints 4 significant digits (rounding error <= 0.08 %); 0.5 % is 6x that and still far below any
# convention slip (MI in nats: -31 %, PSNR peak 255 vs max(F): +11 %, SSIM/SF on [0, 1]: orders of magnitude).
REL_TOL = 0.005
# NCIE and Nabf are printed to 4 decimals; NCIE lives in [0.80, 1], so a relative bound would be meaningless.
ABS_TOL = {"NCIE": 1.5e-4, "Nabf": 1.5e-4}


_TABLE_FUNCS = {
    "EN": lambda f, a, b: entropy(f), "SD": lambda f, a, b: std_dev(f), "SF": lambda f, a, b: spatial_frequency(f),
    "AG": lambda f, a, b: average_gradient(f), "MI": mi, "SCD": scd, "VIF": vif, "Qabf": qabf, "SSIM": ssim,
    "PSNR": lambda f, a, b: psnr(f, a, b, peak=None), "Nabf": nabf, "NCIE": ncie,
}
# To stay fast, the pixel average skips the three slowest metrics (VIF, Qabf, SSIM): SeAFusion checks them, and
# docs/metrics.md lists the agreement of all twelve columns for all seven rows of the table.
CHECKED = {"SeAFusion": tuple(_TABLE_FUNCS),
           "pixel average": ("EN", "SD", "SF", "AG", "MI", "SCD", "PSNR", "Nabf", "NCIE")}


def test_tno42_means_agree_with_reference_table(data_root: Path) -> None:
    sums: dict[str, dict[str, float]] = {m: dict.fromkeys(CHECKED[m], 0.0) for m in CHECKED}
    psnr_255 = 0.0
    pairs = list_pairs(data_root / "tno42")
    assert len(pairs) == 42
    for stem, ir_p, vi_p in pairs:
        ir, vi = load_pair(ir_p, vi_p)
        a, b = _gray255(ir), _gray255(vi)
        fused = {
            "SeAFusion": _gray255(load_image(data_root / "peer_outputs" / "tno42" / "SeAFusion" / f"{stem}.png")),
            # Stored as 8 bits, rounded to the nearest level: truncating instead moves EN by +3 % and SF, MI by 0.5 %.
            "pixel average": np.rint((a + b) / 2.0),
        }
        for method, f in fused.items():
            for k in CHECKED[method]:
                sums[method][k] += _TABLE_FUNCS[k](f, a, b)
        psnr_255 += psnr(fused["pixel average"], a, b)
    for method, checked in CHECKED.items():
        for k in checked:
            got, expected = sums[method][k] / len(pairs), REFERENCE[method][k]
            if k in ABS_TOL:
                assert abs(got - expected) <= ABS_TOL[k], (method, k, got, expected)
            else:
                assert got == pytest.approx(expected, rel=REL_TOL), (method, k, got, expected)
    # The reference's PSNR peak is max(F) (CDDFuse); the pixel average rarely reaches 255, so the 8-bit peak
    # of our default PSNR gives a clearly higher value on it.
    assert psnr_255 / len(pairs) > REFERENCE["pixel average"]["PSNR"] + 1.0
