"""EGMT multi-task loss (paper Eq. 9-15).

``L_total = lambda_1 * L_fus + lambda_2 * L_cla`` (Eq. 9) with ``lambda_i = softmax(-w_i / tau)`` over learnable
``w`` (Eq. 10; ``w = 0`` gives ``lambda = (0.5, 0.5)``).

Note (as in the paper, nothing clever done about it): the weights are a softmax of learnable parameters trained by the
same optimiser, and the total is a convex combination of the two task losses, so the optimiser lowers the total by
moving weight onto whichever task loss is currently smaller. Over a long run ``lambda`` drifts towards that task;
the ``parts`` dict reports ``lambda_fus``/``lambda_cla`` each step so a training log shows the drift.
With ``use_mt`` off there is no classification term, no ``w`` and ``L_total = L_fus``.

Fusion loss (Eq. 11-14), on images in [0, 1]:

- ``L_int = mean |F - max(IR, VI)|`` (Eq. 12)
- ``L_edge = mean | |lap F| - max(|lap IR|, |lap VI|) |`` with ``lap`` the 4-neighbour Laplacian
  ``[[0,1,0],[1,-4,1],[0,1,0]]`` and replicate padding (a constant image has Laplacian 0 everywhere) (Eq. 13)
- ``L_ssim = (1 - SSIM(F, IR)) + (1 - SSIM(F, VI))`` with an 11 x 11 Gaussian window (sigma 1.5), data range 1,
  K1 = 0.01, K2 = 0.03, mean over the valid (unpadded) SSIM map; images smaller than 11 px use the largest odd
  window that fits (Eq. 14)
- ``L_fus = a1 L_int + a2 L_edge + a3 L_ssim``, ``(a1, a2, a3) = (1, 15, 5)`` (Eq. 11)

Information-aware fusion loss (``config.objective == "info"``; egmt_ros's deviation from Eq. 12-14, the why is in
docs/model.md "Objective"). The intensity target ``T`` and the IR share of its detail ``w_d`` come from the local
information of each source (:mod:`egmt_ros.model.information`: Weber contrast, visibility of the visible image, IR
saliency, entity boxes, two scales). With ``R = 1 + region_weight * (inside any entity box)``:

- ``L_int = mean R |F - T|`` (:func:`information_target`)
- ``L_grad = mean R | |sobel F| - max(|sobel IR|, |sobel VI|) |`` (structure from whichever source has it)
- ``L_ssim = mean over the valid SSIM map of  w_d (1 - SSIM(F, IR)) + (1 - w_d) (1 - SSIM(F, VI))``
- ``L_fus = a1 L_int + a2 L_grad + a3 L_ssim``

Either objective adds ``det_weight * L_det`` (:mod:`egmt_ros.model.detection_loss`) when ``config.det_weight`` > 0
and a detector is attached (``EGMTLoss.task_loss``).

Classification loss (Eq. 15): focal loss on the multi-label logits, mean over samples and classes of
``alpha_c * (1 - p_t)^gamma * BCE(p, y)`` with ``p_t`` the probability given to the true label (Lin et al.;
the paper writes ``(1 - p_hat_i)``), ``gamma = 2`` and ``alpha_c`` the class weight of :func:`class_weights_from_labels`
(inversely proportional to the class's positive ratio, normalised to mean 1; all ones when not given).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egmt_ros.model.config import EGMTConfig
from egmt_ros.model.information import (box_mean, information_map, information_target, ir_saliency,  # noqa: F401
                                        sobel_magnitude, visible_visibility)

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
#: Objectives of :class:`EGMTLoss`: ``paper`` (Eq. 12-14) and ``info`` (information-aware, see the docstring).
OBJECTIVES = ("paper", "info")


def laplacian(x: Tensor) -> Tensor:
    """4-neighbour Laplacian of ``[B, 1, H, W]`` with replicate padding (same size out)."""
    k = _LAPLACIAN.to(x.device, x.dtype).view(1, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def region_weight_map(regions: Tensor | None, like: Tensor, region_weight: float) -> Tensor:
    """``1 + region_weight * max over sources of the entity-box masks`` (ones without regions)."""
    if regions is None or region_weight == 0.0:
        return torch.ones_like(like)
    return 1.0 + region_weight * regions.amax(dim=1, keepdim=True)


def info_fusion_losses(fused: Tensor, ir: Tensor, vi: Tensor, regions: Tensor | None = None,
                       region_weight: float = 2.0, box_boost: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(L_int, L_grad, L_ssim) of the information-aware objective (module docstring); no gradient flows into the
    targets."""
    with torch.no_grad():
        target, w = information_target(ir, vi, regions, box_boost)
        r = region_weight_map(regions, fused, region_weight)
        g_src = torch.maximum(sobel_magnitude(ir), sobel_magnitude(vi))
    r_norm = r / r.mean()
    l_int = torch.mean(r_norm * torch.abs(fused - target))
    l_grad = torch.mean(r_norm * torch.abs(sobel_magnitude(fused) - g_src))
    f, a, v = fused, ir, vi
    size = _window_size(f, 11)
    m = _blur(torch.cat([f, a, v, f * f, a * a, v * v, f * a, f * v], dim=1), size, 1.5)
    mu_f, mu_a, mu_v, ff, aa, vv, fa, fv = m.unbind(1)
    c = size // 2
    wv = w[:, 0, c:w.shape[-2] - c, c:w.shape[-1] - c]
    l_ssim = torch.mean(wv * (1.0 - _ssim_map(mu_f, mu_a, ff, aa, fa, 1.0))
                        + (1.0 - wv) * (1.0 - _ssim_map(mu_f, mu_v, ff, vv, fv, 1.0)))
    return l_int, l_grad, l_ssim


def _gaussian_1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _window_size(x: Tensor, window: int) -> int:
    size = min(window, x.shape[-2], x.shape[-1])
    return size if size % 2 else size - 1


def _blur(x: Tensor, size: int, sigma: float) -> Tensor:
    """Separable Gaussian filter of every channel of ``[B, K, H, W]``, 'valid' output (one grouped conv per axis)."""
    k = x.shape[1]
    g = _gaussian_1d(size, sigma, x.device, x.dtype)
    x = F.conv2d(x, g.view(1, 1, 1, size).expand(k, 1, 1, size), groups=k)
    return F.conv2d(x, g.view(1, 1, size, 1).expand(k, 1, size, 1), groups=k)


def _ssim_map(mu_x: Tensor, mu_y: Tensor, xx: Tensor, yy: Tensor, xy: Tensor, data_range: float) -> Tensor:
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sxx, syy, sxy = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Mean SSIM of ``[B, 1, H, W]`` images (Gaussian window, 'valid' map, data range ``data_range``)."""
    m = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), _window_size(x, window), sigma)
    return _ssim_map(*m.unbind(1), data_range).mean()


def fusion_losses(fused: Tensor, ir: Tensor, vi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(L_int, L_edge, L_ssim) of Eq. 12-14 (batched: one Laplacian conv, one separable Gaussian for both SSIMs)."""
    l_int = torch.mean(torch.abs(fused - torch.maximum(ir, vi)))
    b = fused.shape[0]
    lap = torch.abs(laplacian(torch.cat([fused, ir, vi], dim=0)))
    l_edge = torch.mean(torch.abs(lap[:b] - torch.maximum(lap[b:2 * b], lap[2 * b:])))
    f, a, v = fused, ir, vi
    m = _blur(torch.cat([f, a, v, f * f, a * a, v * v, f * a, f * v], dim=1), _window_size(f, 11), 1.5)
    mu_f, mu_a, mu_v, ff, aa, vv, fa, fv = m.unbind(1)
    l_ssim = (1.0 - _ssim_map(mu_f, mu_a, ff, aa, fa, 1.0).mean()) + (1.0 - _ssim_map(mu_f, mu_v, ff, vv, fv,
                                                                                          1.0).mean())
    return l_int, l_edge, l_ssim


def focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0, class_weights: Tensor | None = None) -> Tensor:
    """Eq. 15: mean over samples and classes of ``alpha_c * (1 - p_t)^gamma * BCE``; logits/labels ``[B, C]``."""
    labels = labels.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * labels + (1.0 - p) * (1.0 - labels)
    loss = (1.0 - p_t) ** gamma * bce
    if class_weights is not None:
        loss = loss * class_weights.to(loss.device, loss.dtype)[None, :]
    return loss.mean()


def class_weights_from_labels(labels: Tensor, eps: float = 1e-6) -> Tensor:
    """Class weights ``alpha_c`` inversely proportional to each class's positive ratio, normalised to mean 1.

    ``labels``: ``[N, C]`` 0/1 over the training set. A class with no positive gets the largest observed weight
    (not infinity).
    """
    ratio = labels.to(torch.float32).mean(dim=0)
    inv = 1.0 / ratio.clamp_min(eps)
    seen = ratio > 0
    if seen.any():
        inv = torch.where(seen, inv, inv[seen].max())
    else:
        inv = torch.ones_like(inv)
    return inv / inv.mean()


class EGMTLoss(nn.Module):
    """Eq. 9-15 with the learnable task weights ``w`` (Eq. 10); ``L_fus`` by ``config.objective``: ``paper``
    (Eq. 11-14) or ``info`` (see the module docstring)."""

    def __init__(self, config: EGMTConfig) -> None:
        super().__init__()
        self.config = config
        self.alphas = tuple(float(a) for a in config.alphas)
        self.gamma = float(config.focal_gamma)
        self.tau = float(config.tau)
        self.objective = config.objective
        self.w = nn.Parameter(torch.zeros(2)) if config.use_mt else None
        #: optional detection-aware term (``config.det_weight`` > 0): a callable ``(fused, ir, vi) -> L_det``, e.g.
        #: :class:`egmt_ros.model.detection_loss.DetectionConsistencyLoss`; a plain attribute, so the frozen
        #: detector is neither a parameter nor in the state dict
        self.task_loss: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None

    def task_weights(self) -> Tensor:
        """(lambda_fus, lambda_cla) = softmax(-w / tau); ``[1.0]`` without use_mt."""
        if self.w is None:
            return torch.ones(1)
        return torch.softmax(-self.w / self.tau, dim=0)

    def fusion_loss(self, fused: Tensor, ir: Tensor, vi: Tensor,
                    regions: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """(L_fus, parts int/edge/ssim/fus as floats) of the configured objective (``edge`` is L_grad for info),
        plus ``det_weight * L_det`` when a task loss is attached (part ``det``)."""
        if self.objective == "info":
            terms = info_fusion_losses(fused, ir, vi, regions, self.config.region_weight, self.config.box_boost)
        else:
            terms = fusion_losses(fused, ir, vi)
        l_fus = sum(a * t for a, t in zip(self.alphas, terms))
        parts = {k: float(t.detach()) for k, t in zip(("int", "edge", "ssim"), terms)}
        if self.task_loss is not None and self.config.det_weight > 0:
            l_det = self.task_loss(fused, ir, vi)
            l_fus = l_fus + self.config.det_weight * l_det
            parts["det"] = float(l_det.detach())
        parts["fus"] = float(l_fus.detach())
        return l_fus, parts

    def forward(self, fused: Tensor, ir: Tensor, vi: Tensor, logits: Tensor | None = None,
                labels: Tensor | None = None, class_weights: Tensor | None = None,
                regions: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """(total loss, parts as floats: int, edge, ssim, fus, cla, lambda_fus, lambda_cla, total)."""
        l_fus, parts = self.fusion_loss(fused, ir, vi, regions)
        if self.w is None:
            total = l_fus
        else:
            if logits is None or labels is None:
                raise ValueError("use_mt is on: EGMTLoss needs logits and labels")
            l_cla = focal_loss(logits, labels, self.gamma, class_weights)
            lam = self.task_weights()
            total = lam[0] * l_fus + lam[1] * l_cla
            parts.update({"cla": float(l_cla.detach()), "lambda_fus": float(lam[0].detach()),
                          "lambda_cla": float(lam[1].detach())})
        parts["total"] = float(total.detach())
        return total, parts
