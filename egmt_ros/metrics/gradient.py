"""Edge-transfer metrics from Sobel gradients: Qabf (Xydeas & Petrovic 2000) and Nabf (Shreyamsha Kumar's modified
fusion-artifact measure).

Inputs are grey images on the 8-bit scale 0..255 (``_image.as_gray255``). The scale matters for Nabf: its
edge threshold ``Td = 2`` is in grey levels of the Sobel/8 gradient, so a [0, 1] input (as the VIF-Benchmark
MATLAB script passes) makes every weight ``wt_min`` and silently turns Nabf into a different measure.
"""

from __future__ import annotations

import math

import numpy as np

from egmt_ros.metrics._image import as_triple

# Xydeas & Petrovic (Electron. Lett. 36(4), 2000) Qabf constants.
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
QABF_L = 1.0

# Petrovic parameters as used by Shreyamsha Kumar's objective_fusion_perform_fn.m (analysis_nabf.m).
NABF_TD, NABF_WT_MIN, NABF_LG = 2.0, 0.001, 1.5
NABF_NRG, NABF_KG, NABF_SIGMAG = 0.9999, 19.0, 0.5
NABF_NRA, NABF_KA, NABF_SIGMAA = 0.9995, 22.0, 0.5


def _sobel(img: np.ndarray, pad_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(horizontal derivative, vertical derivative) from the 3 x 3 Sobel masks (unscaled), same-size output.

    ``pad_mode`` is a ``numpy.pad`` mode for the 1-pixel border ('constant' = zero padding, 'reflect' = mirror
    without repeating the edge pixel).
    """
    p = np.pad(img, 1, mode=pad_mode)
    # Vertical smoothing [1, 2, 1] then horizontal difference, and the transpose.
    sm_v = p[:-2, :] + 2.0 * p[1:-1, :] + p[2:, :]
    gx = sm_v[:, 2:] - sm_v[:, :-2]
    sm_h = p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]
    gy = sm_h[2:, :] - sm_h[:-2, :]
    return gx, gy


def _ratio(g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
    """Relative edge strength ``min(g1, g2) / max(g1, g2)``; 0 where either is 0."""
    lo = np.minimum(g1, g2)
    hi = np.maximum(g1, g2)
    out = np.zeros_like(hi)
    np.divide(lo, hi, out=out, where=lo > 0)
    return out


# ------------------------------------------------------------------------------------------------- Qabf
def _qabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel strength g and orientation alpha = atan(s_y / s_x) (pi/2 where s_x = 0), zero-padded border.

    s_x = right - left and s_y = top - bottom (y axis up), the signs of Qabf.m's ``filter2`` masks: the pi/2
    assigned to s_x = 0 is only consistent with the other angles under this convention.
    """
    gx, gy = _sobel(img, "constant")
    g = np.sqrt(gx * gx + gy * gy)
    ratio = np.full_like(g, np.inf)  # atan(inf) = pi/2 where s_x = 0
    np.divide(-gy, gx, out=ratio, where=gx != 0)
    return g, np.arctan(ratio)


def _qabf_preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Edge preservation Q^{SF} = Q_g * Q_a of one source S in F."""
    g_rel = _ratio(g_s, g_f)
    a_rel = 1.0 - np.abs(a_s - a_f) / (math.pi / 2)
    q_g = QABF_TG / (1.0 + np.exp(QABF_KG * (g_rel - QABF_DG)))
    q_a = QABF_TA / (1.0 + np.exp(QABF_KA * (a_rel - QABF_DA)))
    return q_g * q_a


def qabf(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Qabf, gradient-based edge transfer (Xydeas & Petrovic, "Objective image fusion performance measure",
    Electron. Lett. 36(4), 2000).

    Sobel gradients (3 x 3, zero-padded border) give strength ``g`` and orientation ``alpha = atan(s_y / s_x)``
    (y axis up; pi/2 where s_x = 0).
    For a source S: ``G = min(g_S, g_F) / max(g_S, g_F)`` (0 where one is 0), ``A = 1 - |alpha_S - alpha_F| / (pi/2)``,
    ``Q_g = Tg / (1 + exp(kg (G - Dg)))``, ``Q_a = Ta / (1 + exp(ka (A - Da)))``, ``Q^{SF} = Q_g Q_a`` with
    Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8. The sources are combined by the
    gradient-weighted mean ``Qabf = sum(Q^{AF} w_A + Q^{BF} w_B) / sum(w_A + w_B)``, ``w = g^L``, L = 1.
    Unit: none. Range: 0 .. ~0.99 (Tg * Ta). Higher = more edge information transferred. Matches CDDFuse's
    Evaluator (which sets G = g_F instead of 1 where g_S = g_F > 0; identical for integer images, whose
    non-zero Sobel magnitudes are >= 1 where Q_g saturates).
    """
    f, a, b = as_triple(fused, ir, vi)
    g_a, al_a = _qabf_edges(a)
    g_b, al_b = _qabf_edges(b)
    g_f, al_f = _qabf_edges(f)
    w_a, w_b = g_a ** QABF_L, g_b ** QABF_L
    den = float(np.sum(w_a + w_b))
    if den == 0.0:
        return 0.0
    q_af = _qabf_preservation(g_a, al_a, g_f, al_f)
    q_bf = _qabf_preservation(g_b, al_b, g_f, al_f)
    return float(np.sum(q_af * w_a + q_bf * w_b)) / den


# ------------------------------------------------------------------------------------------------- Nabf
def _nabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sobel/8 (gx, gy, strength) with a mirrored border (sobel_fn.m)."""
    gx, gy = _sobel(img, "reflect")
    gx /= 8.0
    gy /= 8.0
    return gx, gy, np.sqrt(gx * gx + gy * gy)


def _nabf_angle(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Orientation atan(gx / gy): +-pi/2 where gy = 0, 0 where both are 0 (analysis_nabf.m)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.arctan(gx / gy)
    alpha[(gx == 0) & (gy == 0)] = 0.0
    return alpha


def _nabf_weight(g: np.ndarray) -> np.ndarray:
    """Petrovic's weights: ``g^Lg`` where ``g >= Td``, else ``wt_min``."""
    w = np.full_like(g, NABF_WT_MIN)
    strong = g >= NABF_TD
    w[strong] = g[strong] ** NABF_LG
    return w


def _nabf_preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Petrovic's edge preservation Q^{SF} = sqrt(Q_g Q_a) (objective_fusion_perform_fn.m)."""
    g_rel = _ratio(g_s, g_f)
    a_rel = np.abs(np.abs(a_s - a_f) - math.pi / 2) * 2.0 / math.pi
    q_g = NABF_NRG / (1.0 + np.exp(-NABF_KG * (g_rel - NABF_SIGMAG)))
    q_a = NABF_NRA / (1.0 + np.exp(-NABF_KA * (a_rel - NABF_SIGMAA)))
    return np.sqrt(q_g * q_a)


def nabf(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Nabf, fusion artifacts: the *modified* measure of B. K. Shreyamsha Kumar ("Multifocus and multispectral
    image fusion based on pixel significance using discrete cosine harmonic wavelet transform", SIVP 7, 2013;
    objective_fusion_perform_fn.m / analysis_nabf.m of the VIF-Benchmark, ported by cslib).

    Gradients: Sobel masks / 8 with a mirrored 1-pixel border, strength g, orientation ``atan(gx / gy)``.
    For a source S: ``G = min(g_S, g_F)/max(g_S, g_F)`` (0 where one is 0),
    ``A = | |alpha_S - alpha_F| - pi/2 | * 2/pi``, ``Q_g = 0.9999 / (1 + exp(-19 (G - 0.5)))``,
    ``Q_a = 0.9995 / (1 + exp(-22 (A - 0.5)))``, ``Q^{SF} = sqrt(Q_g Q_a)``; weights ``w_S = g_S^1.5`` where
    ``g_S >= Td = 2`` else ``0.001``. Artifact pixels are those where F has a stronger edge than both sources,
    ``AM = [g_F > g_A and g_F > g_B]``, and
    ``Nabf = sum(AM ((1 - Q^{AF}) w_A + (1 - Q^{BF}) w_B)) / sum(w_A + w_B)``.
    This is the variant the reference table and the EGMT-era papers report (cslib's port, on 0..255). Not
    implemented: Petrovic's original NABF1 (``AM (2 - Q^{AF} - Q^{BF})`` weighted by ``w_A + w_B``), which
    double-counts and can exceed 1, and the same code fed [0, 1] images, where every weight is 0.001.
    Unit: none. Range: 0 .. 1. Lower is better (0 for F = A = B and for the pixel average).
    """
    f, a, b = as_triple(fused, ir, vi)
    edges = [_nabf_edges(x) for x in (a, b, f)]
    g_a, g_b, g_f = (e[2] for e in edges)
    w_a, w_b = _nabf_weight(g_a), _nabf_weight(g_b)
    artifact = (g_f > g_a) & (g_f > g_b)
    if not artifact.any():
        return 0.0
    # Only artifact pixels enter the numerator: evaluate orientations and Q there only.
    (ga, al_a), (gb, al_b), (gf, al_f) = ((e[2][artifact], _nabf_angle(e[0][artifact], e[1][artifact]))
                                          for e in edges)
    q_af = _nabf_preservation(ga, al_a, gf, al_f)
    q_bf = _nabf_preservation(gb, al_b, gf, al_f)
    num = float(np.sum((1.0 - q_af) * w_a[artifact] + (1.0 - q_bf) * w_b[artifact]))
    return num / float(np.sum(w_a) + np.sum(w_b))
