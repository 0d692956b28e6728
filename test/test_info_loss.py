"""The information-aware fusion objective (model/losses.py), entity-box region weights and the paper-loss collapse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.extreme_images import dot_at, extreme_pairs

from egmt_ros.data import datasets as ds
from egmt_ros.model import losses as L
from egmt_ros.model.config import paper_config, rt_config


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]


def _texture(h: int, w: int, amp: float, period: int = 6) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return amp * np.sign(np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period))


def test_smoke_over_a_warm_silhouette_takes_the_ir_structure() -> None:
    rng = np.random.default_rng(0)
    h, w = 96, 96
    ir = 0.3 + _texture(h, w, 0.03)                       # textured cool background
    ir[20:80, 36:60] = 0.6 + _texture(60, 24, 0.05)       # warm person with clothing folds
    vi = 0.9 + rng.normal(0, 0.003, (h, w))               # bright, flat smoke veils everything
    target, w_ir = L.information_target(_t(ir), _t(vi))
    t, wi = target[0, 0].numpy(), w_ir[0, 0].numpy()
    inner = (slice(26, 74), slice(40, 56))
    assert wi[inner].min() > 0.95                          # the salient silhouette is IR, whole
    assert np.abs(t[inner] - ir[inner]).max() < 0.03
    assert wi[:, :20].mean() > 0.75                        # the smoke-veiled background leans to IR as well
    # the target carries the IR's structure: correlated with IR, not with the smoke
    assert np.corrcoef(t.ravel(), ir.ravel())[0, 1] > 0.95
    assert t.mean() < 0.6 < vi.mean()


def test_textured_daylight_visible_beats_a_flat_ir_background() -> None:
    h, w = 64, 64
    vi = 0.5 + _texture(h, w, 0.15, period=12)            # daylight texture
    ir = np.full((h, w), 0.35)                            # flat thermal background, nothing warm
    target, w_ir = L.information_target(_t(ir), _t(vi))
    assert float(w_ir.mean()) < 0.03 and float(w_ir.max()) < 0.1
    assert float((target - _t(vi)).abs().mean()) < 0.01


def test_darkness_lowers_the_visible_weight() -> None:
    rng = np.random.default_rng(1)
    h, w = 64, 64
    vi = np.clip(0.02 + rng.normal(0, 0.01, (h, w)), 0, 1)  # night: dark sensor noise
    ir = 0.4 + _texture(h, w, 0.05, period=12)
    _, w_ir = L.information_target(_t(ir), _t(vi))
    assert float(w_ir.mean()) > 0.95 and float(w_ir.min()) > 0.85
    assert float(L.visible_visibility(_t(vi)).max()) <= 0.3


def test_region_maps_of_records_crop_with_the_images(tmp_path: Path) -> None:
    rec = {"size": [40, 60], "boxes": [{"class": "person", "score": 0.9, "image": "ir", "xyxy": [10, 5, 20, 25]},
                                       {"class": "car", "score": 0.5, "image": "vi", "xyxy": [30.2, 0, 59.9, 9.5]}]}
    m = ds.entity_region_maps(rec, 40, 60)
    assert m.shape == (2, 40, 60) and m[0].sum() == 10 * 20 and m[0, 5:25, 10:20].all()
    assert m[1, 0:10, 30:60].all() and m[1].sum() == 10 * 30
    half = ds.entity_region_maps(rec, 20, 30)              # the record's boxes scale to another image size
    assert half[0, 2:13, 5:10].all() and half[0].sum() == 11 * 5
    assert not ds.entity_region_maps({"size": [40, 60]}, 40, 60).any()
    # items carry the masks of their own crop (and flip)
    for sub in ("ir", "vi"):
        (tmp_path / "p" / sub).mkdir(parents=True)
    from egmt_ros.core.images import save_image
    save_image(tmp_path / "p" / "ir" / "a.png", np.zeros((40, 60), np.float32))
    save_image(tmp_path / "p" / "vi" / "a.png", np.zeros((40, 60), np.float32))
    sample = ds.collect_samples([tmp_path / "p"])[0]
    data = ds.PairFolderDataset([sample], crop=40, mode="full", records={sample.key: dict(rec, labels=[])})
    item = data[0]
    assert torch.equal(item["regions"], torch.from_numpy(m))
    batch = ds.collate_pairs([item, item])
    assert batch["regions"].shape == (2, 2, 40, 60)


def test_entity_boxes_weight_the_loss_and_raise_their_source() -> None:
    h, w = 64, 64
    ir = 0.4 + _texture(h, w, 0.05, period=12)
    vi = 0.5 + _texture(h, w, 0.05, period=12)
    regions = torch.zeros(1, 2, h, w)
    regions[0, 0, 4:28, 4:28] = 1.0                        # a box found in IR
    _, w_plain = L.information_target(_t(ir), _t(vi))
    _, w_box = L.information_target(_t(ir), _t(vi), regions, box_boost=1.0)
    assert float(w_box[0, 0, 12:20, 12:20].mean()) > float(w_plain[0, 0, 12:20, 12:20].mean()) + 0.2
    assert torch.allclose(w_box[0, 0, 40:, 40:], w_plain[0, 0, 40:, 40:])
    # the same intensity error costs 1 + region_weight times more inside a box than outside
    target, _ = L.information_target(_t(ir), _t(vi), regions)
    err_in, err_out = target.clone(), target.clone()
    err_in[0, 0, 10:20, 10:20] += 0.1
    err_out[0, 0, 40:50, 40:50] += 0.1
    l_in = L.info_fusion_losses(err_in, _t(ir), _t(vi), regions, region_weight=2.0)[0]
    l_out = L.info_fusion_losses(err_out, _t(ir), _t(vi), regions, region_weight=2.0)[0]
    assert float(l_in / l_out) == pytest.approx(3.0, rel=1e-4)


def test_objective_selection_and_gradients() -> None:
    torch.manual_seed(0)
    ir, vi = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    fused = torch.rand(2, 1, 32, 32, requires_grad=True)
    paper = L.EGMTLoss(paper_config(use_mt=False))
    total, parts = paper(fused, ir, vi)
    l_int, l_edge, l_ssim = L.fusion_losses(fused, ir, vi)
    assert float(total.detach()) == pytest.approx(float((l_int + 15 * l_edge + 5 * l_ssim).detach()), rel=1e-6)
    info = L.EGMTLoss(rt_config(use_mt=False))
    assert info.objective == "info" and info.alphas == (30.0, 10.0, 1.0)
    total, parts = info(fused, ir, vi, regions=torch.zeros(2, 2, 32, 32))
    total.backward()
    assert fused.grad is not None and float(fused.grad.abs().sum()) > 0
    assert set(parts) >= {"int", "edge", "ssim", "fus", "total"}
    with pytest.raises(ValueError, match="objective"):
        paper_config(objective="brightest")


def test_paper_objective_prefers_the_average_the_info_objective_does_not(data_root: Path) -> None:
    """The collapse of the paper recipe (docs/model.md): on real pairs Eq. 11 with a = (1, 15, 5) scores the pixel
    average lower than pixel max, so training descends towards averaging; the information target scores lower than
    both under the info objective."""
    from egmt_ros.core.images import load_pair
    from egmt_ros.core.color import split_luma

    paper, info = L.EGMTLoss(paper_config(use_mt=False)), L.EGMTLoss(rt_config(use_mt=False))
    for stem in ("00556D", "00881N"):
        ir, vi = load_pair(data_root / "msrs_train5" / "ir" / f"{stem}.png",
                           data_root / "msrs_train5" / "vi" / f"{stem}.png")
        a, v = _t(ir[::2, ::2]), _t(split_luma(vi)[0][::2, ::2])
        avg, mx = (a + v) / 2, torch.maximum(a, v)
        target, _ = L.information_target(a, v)
        p = {k: float(paper.fusion_loss(f, a, v)[0]) for k, f in (("avg", avg), ("max", mx), ("t", target))}
        q = {k: float(info.fusion_loss(f, a, v)[0]) for k, f in (("avg", avg), ("max", mx), ("t", target))}
        assert p["avg"] < p["max"], (stem, p)
        assert q["t"] < q["avg"] and q["t"] < q["max"], (stem, q)


def test_detection_term_trains_the_fusion_network_never_the_detector(data_root: Path) -> None:
    from egmt_ros.detection.yolov5_backend import load_frozen_yolov5
    from egmt_ros.model.detection_loss import DetectionConsistencyLoss
    from egmt_ros.model.network import EGMT

    with pytest.raises(ValueError, match="pickle"):
        load_frozen_yolov5()                                  # no consent, no pickle
    det_net = load_frozen_yolov5(trust_pickle=True)
    before = {k: v.clone() for k, v in det_net.state_dict().items()}
    cfg = rt_config(use_mt=False, use_ent=False, det_weight=1.0)
    model, loss_fn = EGMT(cfg), L.EGMTLoss(cfg)
    loss_fn.task_loss = DetectionConsistencyLoss(det_net)
    assert not any(p is q for p in loss_fn.parameters() for q in det_net.parameters())
    assert not any("net" in k for k in loss_fn.state_dict())  # checkpoints never carry the detector
    from egmt_ros.core.images import load_pair
    from egmt_ros.core.color import split_luma
    ir, vi = load_pair(data_root / "msrs_train5" / "ir" / "00556D.png", data_root / "msrs_train5" / "vi" / "00556D.png")
    a, v = _t(ir[160:352, 192:448]), _t(split_luma(vi)[0][160:352, 192:448])  # people and cars, 256 x 192
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fused, _ = model(a, v)
    total, parts = loss_fn(fused, a, v)
    l_det = loss_fn.task_loss(fused, a, v)
    assert parts["det"] == pytest.approx(float(l_det.detach()), rel=1e-5)
    grads = torch.autograd.grad(l_det, [fused] + [p for p in model.parameters() if p.requires_grad],
                                allow_unused=True, retain_graph=True)
    assert float(grads[0].abs().sum()) > 0                    # L_det reaches the fused image ...
    assert sum(float(g.abs().sum()) for g in grads[1:] if g is not None) > 0   # ... and the fusion network
    opt.zero_grad()
    total.backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in det_net.parameters())
    assert all(torch.equal(before[k], v) for k, v in det_net.state_dict().items())


def test_degraded_visible_crops_move_the_target_to_ir() -> None:
    vi = (0.45 + _texture(96, 96, 0.2, period=12)).astype(np.float32)   # textured daylight scene
    ir = (0.35 + _texture(96, 96, 0.08, period=16)).astype(np.float32)
    _, w_clean = L.information_target(_t(ir), _t(vi))
    dark = 0
    for seed in range(12):
        deg, trust = ds.degrade_visible(vi, np.random.default_rng(seed))
        assert deg.shape == vi.shape and deg.dtype == np.float32 and 0 <= deg.min() and deg.max() <= 1
        assert trust.shape == vi.shape and 0 <= trust.min() and trust.max() <= 1
        if deg.mean() < 0.2:                                   # darkness: visible detections barely trusted
            dark += 1
            assert np.allclose(trust, 0.2)
        else:                                                  # veil / glare: the contrast goes with the trust
            opaque = trust < 0.3
            if opaque.sum() > 50:
                assert deg[opaque].std() < 0.5 * vi[opaque].std()
        _, w_deg = L.information_target(_t(ir), _t(deg))
        assert float(w_deg.mean()) > float(w_clean.mean())   # less visible information: more IR in the target
    assert 0 < dark < 12


def test_up2_is_bilinear_upsampling() -> None:
    """The conv + pixel-shuffle x2 upsampling of the information prior equals F.interpolate's bilinear one
    (align_corners=False, borders repeated), also for 1 x 1 and odd sizes."""
    from egmt_ros.model.information import up2

    for h, w in ((1, 1), (3, 5), (17, 12)):
        x = torch.rand(2, 1, h, w)
        ref = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        torch.testing.assert_close(up2(x), ref, rtol=0, atol=1e-6)


def test_up_phases_by_4_is_bilinear_upsampling() -> None:
    """The quarter-resolution decoder's x4 prior phases: ``pixel_shuffle(up_phases(x, 4), 4)`` equals
    F.interpolate's bilinear x4 (align_corners=False, borders repeated)."""
    from egmt_ros.model.information import up_phases

    for h, w in ((1, 1), (3, 5), (17, 12)):
        x = torch.rand(2, 3, h, w)
        ref = torch.nn.functional.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)
        torch.testing.assert_close(torch.nn.functional.pixel_shuffle(up_phases(x, 4), 4), ref, rtol=0, atol=1e-6)


def test_block_statistics_from_4x4_phases_equal_those_of_the_half_resolution_image() -> None:
    """The quarter-resolution prior reads the 4 x 4 phases the decoder has: block mean, within-block variance and
    the half-resolution Sobel magnitude (a stencil on the phase grid, with the image's replicate border) equal the
    statistics of the 2 x 2-averaged image everywhere, borders included."""
    from egmt_ros.model.information import _Blocks, _half

    src = torch.rand(2, 2, 24, 36, generator=torch.Generator().manual_seed(2))
    src[:, :, :4] = 1.0  # a bright border band: a wrong border padding shows in g
    half, quarter = _Blocks(_half(src)), _Blocks.of_quarter_phases(torch.nn.functional.pixel_unshuffle(src, 4))
    for name in ("m1", "v", "g", "mu", "sd"):
        torch.testing.assert_close(getattr(quarter, name), getattr(half, name), rtol=0, atol=2e-6, msg=name)


def test_untrained_quarter_decoder_is_close_to_the_information_target(data_root: Path) -> None:
    """``detail_scale`` 4: the prior is formed at 1/4 resolution (saliency on 4 x 4 block means, logit before the
    upsampling), a close copy of the information target on real pairs, not the pixel average."""
    import cv2

    from egmt_ros.model.information import information_target
    from egmt_ros.model.network import EGMT

    m = EGMT(rt_config(scale=16, window=4, detail_scale=4, channels=8, heads=2, detail_channels=4)).eval()
    for stem in ("FLIR_00122", "FLIR_00211"):
        ir, vi = (cv2.imread(str(data_root / "roadscene" / d / f"{stem}.jpg"), cv2.IMREAD_GRAYSCALE)
                  for d in ("ir", "vi"))
        h, w = ir.shape[0] // 16 * 16, ir.shape[1] // 16 * 16
        a, b = _t(ir[:h, :w] / 255.0), _t(vi[:h, :w] / 255.0)
        with torch.no_grad():
            d = (m.fuse(a, b) - information_target(a, b)[0]).abs()
            assert float(d.mean()) < 3e-3 and float(torch.quantile(d.flatten(), 0.99)) < 3e-2
            assert float((m.fuse(a, b) - (a + b) / 2).abs().mean()) > 0.02


def test_prior_from_the_decoders_phases_equals_the_prior_from_the_images() -> None:
    """The rt decoder hands the prior the 2 x 2 phases it already has (pixel_unshuffle); the prior's half-resolution
    image is then their mean: the same prior as from the images (to float rounding), one full-size read less."""
    from egmt_ros.model.information import half_from_phases, information_prior_half

    src = torch.rand(2, 2, 24, 36, generator=torch.Generator().manual_seed(1))
    phases = torch.nn.functional.pixel_unshuffle(src, 2)
    torch.testing.assert_close(half_from_phases(phases), torch.nn.functional.avg_pool2d(src, 2), rtol=0, atol=1e-7)
    for a, b in zip(information_prior_half(src, phases=phases), information_prior_half(src)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 9), (33, 45)])
def test_information_maps_any_size_and_batch(hw: tuple[int, int]) -> None:
    """Odd sizes are replicate-padded to multiples of 4 and cropped back: every map has the input's shape, is finite
    and in range; each image of a batch gets what it gets alone (per-image saliency statistics)."""
    from egmt_ros.model.information import information_prior

    g = torch.Generator().manual_seed(0)
    ir, vi = torch.rand(3, 1, *hw, generator=g), torch.rand(3, 1, *hw, generator=g)
    ir[0], vi[2] = 0.2 * ir[0], 0.7 + 0.3 * vi[2]
    target, w = L.information_target(ir, vi)
    w_p, r = information_prior(ir, vi)
    maps = (target, w, w_p, r, L.information_map(ir), L.visible_visibility(vi), L.ir_saliency(ir))
    for m in maps:
        assert m.shape == ir.shape and torch.isfinite(m).all()
    assert 0 <= float(target.min()) and float(target.max()) <= 1 and 0 < float(w.min()) and float(w.max()) < 1
    assert 0 <= float(maps[-1].min()) and float(maps[-1].max()) <= 1
    for i in range(3):
        t_i, w_i = L.information_target(ir[i:i + 1], vi[i:i + 1])
        torch.testing.assert_close(target[i:i + 1], t_i, rtol=0, atol=1e-6)
        torch.testing.assert_close(w[i:i + 1], w_i, rtol=0, atol=1e-6)


def test_information_target_of_extreme_inputs() -> None:
    """Flat black, flat white, flat grey, a single bright pixel and IR == VI: finite target and gradients (zero
    variances under the square roots, clamped weights under the logs), IR == VI gives that image back, a single
    warm IR pixel on black is kept."""
    h, w = 24, 40
    cases = extreme_pairs(h, w)
    for name, (ir0, vi0) in cases.items():
        ir, vi = ir0.clone().requires_grad_(), vi0.clone().requires_grad_()
        target, w_ir = L.information_target(ir, vi)
        assert torch.isfinite(target).all() and torch.isfinite(w_ir).all(), name
        (target.sum() + w_ir.sum()).backward()
        assert torch.isfinite(ir.grad).all() and torch.isfinite(vi.grad).all(), name
        if torch.equal(ir0, vi0):
            torch.testing.assert_close(target.detach(), vi0, rtol=0, atol=1e-6)
    dot, zeros = cases["dot in ir"]
    assert float(L.information_target(dot, zeros)[0][(..., *dot_at(h, w))]) > 0.9


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_information_target_in_half_precision_has_no_nan(dtype: torch.dtype) -> None:
    """float16 (TensorRT fp16, the torch backend's float16) and bfloat16: flat and saturated frames gave 0 / 0 in the
    IR share (both fourth powers underflow in float16); now every extreme pair gives a finite target, equal sources
    give that image back, and a textured pair stays near its float32 target."""
    for name, (ir, vi) in extreme_pairs(24, 40).items():
        target, w_ir = L.information_target(ir.to(dtype), vi.to(dtype))
        assert target.dtype == dtype and torch.isfinite(target).all() and torch.isfinite(w_ir).all(), name
        if torch.equal(ir, vi):
            torch.testing.assert_close(target.float(), vi, rtol=0, atol=1e-2)
    ir, vi = (_t(0.4 + _texture(48, 64, 0.1, period=p)) for p in (8, 12))
    assert float((L.information_target(ir.to(dtype), vi.to(dtype))[0].float()
                  - L.information_target(ir, vi)[0]).abs().max()) < 0.05
