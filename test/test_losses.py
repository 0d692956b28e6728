"""EGMT losses (Eq. 9-15) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from egmt_ros.model.config import paper_config
from egmt_ros.model.losses import (EGMTLoss, class_weights_from_labels, focal_loss, fusion_losses, laplacian,
                                   ssim)


def rand(h: int = 24, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(seed))


def test_intensity_loss_zero_at_elementwise_max_and_mean_abs_otherwise() -> None:
    ir, vi = rand(seed=1), rand(seed=2)
    l_int, _, _ = fusion_losses(torch.maximum(ir, vi), ir, vi)
    assert l_int.item() == 0.0
    l_int, _, _ = fusion_losses(torch.zeros_like(ir), ir, vi)
    assert l_int.item() == pytest.approx(torch.maximum(ir, vi).mean().item(), abs=1e-7)


def test_laplacian_constant_is_zero_and_impulse_gives_the_kernel() -> None:
    assert torch.count_nonzero(laplacian(torch.full((1, 1, 7, 9), 0.3))) == 0
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    expected = torch.zeros(5, 5)
    expected[2, 2] = -4.0
    expected[1, 2] = expected[3, 2] = expected[2, 1] = expected[2, 3] = 1.0
    assert torch.equal(laplacian(x)[0, 0], expected)


def test_edge_loss_of_an_impulse_over_flat_sources() -> None:
    ir, vi = torch.full((1, 1, 5, 5), 0.2), torch.full((1, 1, 5, 5), 0.7)
    f = torch.full((1, 1, 5, 5), 0.5)
    f[0, 0, 2, 2] = 0.6  # |lap f| = 0.4 at the centre, 0.1 at its 4 neighbours; sources have no edges
    _, l_edge, _ = fusion_losses(f, ir, vi)
    assert l_edge.item() == pytest.approx((0.4 + 4 * 0.1) / 25, abs=1e-6)
    _, l_edge0, _ = fusion_losses(ir, ir, vi)
    assert l_edge0.item() == 0.0


def test_ssim_identical_is_one_and_matches_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    a, b = rand(40, 48, 3), rand(40, 48, 4) * 0.5 + rand(40, 48, 3) * 0.5
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    ref = structural_similarity(a[0, 0].numpy().astype(np.float64), b[0, 0].numpy().astype(np.float64),
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert ssim(a, b).item() == pytest.approx(ref, abs=1e-4)
    _, _, l_ssim = fusion_losses(a, a, a)
    assert l_ssim.item() == pytest.approx(0.0, abs=1e-5)


def test_focal_loss_single_sample_by_hand() -> None:
    # logit 0, label 1: p = 0.5, BCE = ln 2, (1 - p_t)^2 = 0.25
    assert focal_loss(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item() == pytest.approx(0.25 * math.log(2), 1e-6)
    # logit 2, label 0: p = sigmoid(2), p_t = 1 - p, BCE = -ln(1 - p); class weight 3
    p = 1 / (1 + math.exp(-2.0))
    expected = 3.0 * p ** 2 * -math.log(1 - p)
    got = focal_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), gamma=2.0, class_weights=torch.tensor([3.0]))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # gamma 0 is plain BCE
    assert focal_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), gamma=0.0).item() == pytest.approx(
        -math.log(1 - p), rel=1e-5)


def test_class_weights_inverse_positive_ratio() -> None:
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]])
    w = class_weights_from_labels(labels)
    # ratios 1, 0.25, 0 (never positive -> largest seen weight, 4): inverse (1, 4, 4), normalised to mean 1
    torch.testing.assert_close(w, torch.tensor([1.0, 4.0, 4.0]) / 3.0)


def test_task_weights_softmax_and_total() -> None:
    cfg = paper_config(num_classes=2)
    loss = EGMTLoss(cfg)
    torch.testing.assert_close(loss.task_weights(), torch.tensor([0.5, 0.5]))
    with torch.no_grad():
        loss.w.copy_(torch.tensor([0.0, math.log(3.0)]))  # exp(0) : exp(-ln 3) = 3 : 1
    torch.testing.assert_close(loss.task_weights(), torch.tensor([0.75, 0.25]))
    ir, vi, f = rand(seed=1), rand(seed=2), rand(seed=3)
    logits, labels = torch.tensor([[0.3, -1.0]]), torch.tensor([[1.0, 0.0]])
    total, parts = loss(f, ir, vi, logits, labels)
    l_int, l_edge, l_ssim = fusion_losses(f, ir, vi)
    l_fus = 1 * l_int + 15 * l_edge + 5 * l_ssim
    l_cla = focal_loss(logits, labels, 2.0)
    assert total.item() == pytest.approx((0.75 * l_fus + 0.25 * l_cla).item(), rel=1e-6)
    assert parts["fus"] == pytest.approx(l_fus.item(), rel=1e-6)
    assert parts["lambda_fus"] == pytest.approx(0.75)
    total.backward()
    assert loss.w.grad is not None and loss.w.grad.abs().sum() > 0


def test_without_mt_the_classification_term_is_absent() -> None:
    loss = EGMTLoss(paper_config(use_mt=False))
    assert loss.w is None and len(list(loss.parameters())) == 0
    ir, vi, f = rand(seed=1), rand(seed=2), rand(seed=3)
    total, parts = loss(f, ir, vi)
    assert "cla" not in parts and total.item() == pytest.approx(parts["fus"], rel=1e-6)


def test_mt_loss_requires_labels() -> None:
    loss = EGMTLoss(paper_config())
    with pytest.raises(ValueError):
        loss(rand(), rand(seed=1), rand(seed=2))
