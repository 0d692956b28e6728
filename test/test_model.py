"""EGMT network: shapes, entities, gradients, ablation switches, determinism, config, text encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.extreme_images import dot_at, extreme_pairs

from egmt_ros.model.config import EGMTConfig, paper_config, rt_config
from egmt_ros.model.losses import EGMTLoss
from egmt_ros.model.network import EGMT, reflect_pad_to_multiple

D = 16  # text dim of the tiny test models


def small(variant: str, **kw) -> EGMTConfig:
    """Tiny configs: the point of these tests is behaviour, not size."""
    if variant == "paper":
        return paper_config(channels=8, heads=2, window=4, text_dim=D, num_classes=3, **kw)
    return rt_config(**{**dict(channels=8, heads=2, window=4, scale=4, detail_channels=4, text_dim=D, num_classes=3),
                        **kw})


def build(variant: str, seed: int = 0, **kw) -> EGMT:
    """A random-init model; the rt decoder's zero-initialised last conv is randomised so outputs depend on it."""
    torch.manual_seed(seed)
    m = EGMT(small(variant, **kw))
    if m.rt:
        torch.nn.init.normal_(m.recon.out.weight, std=0.1)
        torch.nn.init.normal_(m.recon.out.bias, std=0.1)
    return m


def images(h: int, w: int, b: int = 1, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, h, w, generator=g), torch.rand(b, 1, h, w, generator=g)


VARIANTS = ["paper", "rt"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("hw", [(37, 53), (1, 1), (2, 3), (16, 16), (5, 40)])
def test_any_size_same_shape_in_range(variant: str, hw: tuple[int, int]) -> None:
    m = build(variant).eval()
    ir, vi = images(*hw, b=2)
    fused, logits = m(ir, vi, torch.randn(2, 3, D))
    assert fused.shape == (2, 1, *hw)
    assert torch.isfinite(fused).all() and fused.min() >= 0 and fused.max() <= 1
    assert logits is not None and logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_entities_no_nan_and_masked_entities_are_ignored(variant: str) -> None:
    m = build(variant).eval()
    ir, vi = images(24, 20, b=2)
    with torch.no_grad():
        f_none, l_none = m(ir, vi, None)
        f_zero, l_zero = m(ir, vi, torch.zeros(2, 0, D))
        ent = torch.randn(2, 3, D)
        f_masked, l_masked = m(ir, vi, ent, torch.zeros(2, 3, dtype=torch.bool))
        f_ent, _ = m(ir, vi, ent)
        part = torch.tensor([[True, True, False], [True, True, False]])
        f_part, l_part = m(ir, vi, ent, part)
        f_two, l_two = m(ir, vi, ent[:, :2])
    for t in (f_none, l_none, f_zero, f_masked, l_masked, f_ent):
        assert torch.isfinite(t).all()
    assert torch.equal(f_none, f_zero)
    torch.testing.assert_close(f_masked, f_zero, rtol=0, atol=1e-6)   # all-masked == no entities
    torch.testing.assert_close(f_part, f_two, rtol=0, atol=1e-6)      # a masked entity has no effect
    torch.testing.assert_close(l_part, l_two, rtol=0, atol=1e-6)
    assert (f_ent - f_zero).abs().max() > 1e-6                        # real entities do change the fusion


def test_fuse_only_equals_forward_and_skips_head() -> None:
    m = build("paper").eval()
    ir, vi = images(20, 28)
    ent = torch.randn(1, 2, D)
    with torch.no_grad():
        fused, _ = m(ir, vi, ent)
        assert torch.equal(m.fuse(ir, vi, ent), fused)


def test_untrained_rt_is_the_pixel_average_or_the_information_target() -> None:
    """The rt decoder's last conv starts at zero: without ``info_prior`` the output is the pixel average; with it,
    the information target of the info objective."""
    from egmt_ros.model.information import information_prior

    torch.manual_seed(0)
    ir, vi = images(40, 48)  # a multiple of the rt padding: the prior sees the same image as the target
    plain = EGMT(small("rt", info_prior=False)).eval()
    prior = EGMT(small("rt", info_prior=True, detail_scale=2)).eval()  # exactly; 4: a close copy (test_info_loss)
    w, r = information_prior(ir, vi)
    with torch.no_grad():
        torch.testing.assert_close(plain.fuse(ir, vi), (ir + vi) / 2, rtol=0, atol=1e-6)
        torch.testing.assert_close(prior.fuse(ir, vi), (vi + w * (ir - vi) + r).clamp(0, 1), rtol=0, atol=1e-5)
        assert float((prior.fuse(ir, vi) - (ir + vi) / 2).abs().max()) > 0.05


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant: str) -> None:
    m = build(variant).train()
    loss_fn = EGMTLoss(m.config)
    ir, vi = images(24, 32, b=2)
    fused, logits = m(ir, vi, torch.randn(2, 3, D), torch.tensor([[True, True, False], [True, True, True]]))
    total, parts = loss_fn(fused, ir, vi, logits, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    total.backward()
    missing = [n for n, p in list(m.named_parameters()) + list(loss_fn.named_parameters())
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert set(parts) >= {"int", "edge", "ssim", "fus", "cla", "lambda_fus", "lambda_cla", "total"}


def test_entity_masking_only_while_training() -> None:
    m = build("paper")
    ir, vi = images(16, 16)
    ent = torch.randn(1, 4, D)
    m.eval()
    with torch.no_grad():
        a, b = m(ir, vi, ent)[1], m(ir, vi, ent)[1]
    assert torch.equal(a, b)
    m.train()
    with torch.no_grad():
        torch.manual_seed(3)
        c = m(ir, vi, ent)[1]
        torch.manual_seed(4)
        d = m(ir, vi, ent)[1]
    assert not torch.equal(c, d)  # a different random 60 % of the entity features is zeroed


def _brute_force_head(m: EGMT, feats: torch.Tensor, aligned: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    v = m.head_joint(feats).flatten(2).transpose(1, 2)  # [B, T, C]
    joint = v[:, :, None, :] * aligned[:, None, :, :]    # [B, T, M, C]
    joint = joint.masked_fill(~valid[:, None, :, None], float("-inf"))
    return m.head_fc(joint.amax(dim=(1, 2)))


def test_head_max_pooling_trick_equals_brute_force() -> None:
    m = build("paper").eval()
    feats = torch.randn(2, 16, 5, 7)
    aligned, valid, _ = m._entities(torch.randn(2, 3, D), torch.tensor([[True, False, True], [False] * 3]), 2, feats)
    with torch.no_grad():
        torch.testing.assert_close(m._head(feats, aligned, valid), _brute_force_head(m, feats, aligned, valid))


ABLATIONS = {
    "use_ca": lambda m: m.blocks[0].ca is None,
    "use_ta": lambda m: m.blocks[0].ta_ir is None and m.blocks[0].ta_vi is None,
    "use_cgha": lambda m: m.blocks[0].cgha_ir.q_te is None and m.blocks[0].cgha_vi.kv_vis is None,
    "use_ti": lambda m: m.blocks[0].cgha_ir is None and m.blocks[0].cgha_vi is None and m.text_align is not None,
    "use_ent": lambda m: m.text_align is None and m.null_entity is None and m.blocks[0].cgha_ir is None,
    "use_mt": lambda m: m.head_fc is None and m.head_joint is None,
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("switch", sorted(ABLATIONS))
def test_ablation_switch_removes_its_parameters(variant: str, switch: str) -> None:
    full = build(variant)
    ablated = build(variant, **{switch: False})
    assert ablated.num_params() < full.num_params()
    assert ABLATIONS[switch](ablated)
    assert not ABLATIONS[switch](full)
    ir, vi = images(19, 23)
    fused, logits = ablated.eval()(ir, vi, torch.randn(1, 2, D))
    assert fused.shape == ir.shape and torch.isfinite(fused).all()
    assert (logits is None) == (switch == "use_mt")


def test_without_text_the_entities_do_not_matter() -> None:
    m = build("paper", use_ent=False).eval()
    ir, vi = images(16, 16)
    with torch.no_grad():
        assert torch.equal(m(ir, vi, torch.randn(1, 3, D))[0], m(ir, vi, None)[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_deterministic_for_a_fixed_seed(variant: str) -> None:
    a, b = build(variant, seed=7).eval(), build(variant, seed=7).eval()
    c = build(variant, seed=8).eval()
    ir, vi = images(21, 30)
    ent = torch.randn(1, 2, D, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fa, fb, fc = a.fuse(ir, vi, ent), b.fuse(ir, vi, ent), c.fuse(ir, vi, ent)
        assert torch.equal(fa, fb) and torch.equal(fa, a.fuse(ir, vi, ent))
        assert not torch.equal(fa, fc)


def test_batch_items_are_independent() -> None:
    m = build("rt").eval()
    ir, vi = images(26, 18, b=3)
    ent = torch.randn(3, 2, D)
    with torch.no_grad():
        batch = m.fuse(ir, vi, ent)
        single = m.fuse(ir[1:2], vi[1:2], ent[1:2])
    torch.testing.assert_close(batch[1:2], single, rtol=0, atol=1e-5)


def test_rt_batch_items_with_different_statistics_are_independent() -> None:
    """The information prior's IR saliency uses per-image statistics: fusing a batch of three images with very
    different means and contrasts (and entity masks) equals fusing each alone, at a size no block divides."""
    m = build("rt").eval()
    assert m.config.info_prior and m.config.shift_windows
    ir, vi = images(33, 45, b=3)
    ir[0], ir[2], vi[1] = 0.1 * ir[0], 0.8 + 0.2 * ir[2], 1.0 - vi[1]
    ir[1, :, 10:20, 10:20] = 1.0  # a warm object in one image only
    ent = torch.randn(3, 2, D)
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    with torch.no_grad():
        batch = m.fuse(ir, vi, ent, mask)
        for i in range(3):
            single = m.fuse(ir[i:i + 1], vi[i:i + 1], ent[i:i + 1], mask[i:i + 1])
            torch.testing.assert_close(batch[i:i + 1], single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("detail", [dict(detail_scale=2), dict(detail_scale=4, scale=16)], ids=["half", "quarter"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 9), (33, 45), (481, 641)])
def test_rt_with_info_prior_and_shifted_windows_fuses_any_size(hw: tuple[int, int], detail: dict) -> None:
    """rt_config's information prior and shifted windows, with the half- and the quarter-resolution decoder (the
    latter with the ECIM at 1/16, input padded to a multiple of 16): any size, batch 1 and 3, with and without
    entities."""
    m = build("rt", **detail).eval()
    for b in (1, 3):
        ir, vi = images(*hw, b=b)
        for ent in (None, torch.randn(b, 2, D)):
            with torch.no_grad():
                y = m.fuse(ir, vi, ent)
            assert y.shape == ir.shape and torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def test_detail_scale_sets_the_padding_and_is_checked() -> None:
    assert rt_config(scale=16, detail_scale=4).pad_multiple == 16
    assert rt_config(scale=2, detail_scale=4).pad_multiple == 4
    assert rt_config(scale=2, detail_scale=2, info_prior=False).pad_multiple == 2
    with pytest.raises(ValueError, match="detail_scale"):
        rt_config(detail_scale=8)


@pytest.mark.parametrize("factor", [2, 4])
def test_highpass_on_phases_equals_the_full_resolution_highpass(factor: int) -> None:
    """The rt decoder blends per sub-pixel phase and shuffles once: the Laplacian taken on the phase grid equals
    the full-resolution one (replicate border) unshuffled, so the output is the full-resolution formula's."""
    from egmt_ros.model.network import highpass_phases

    def highpass(x: torch.Tensor) -> torch.Tensor:  # the full-resolution definition, replicate borders
        p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        return 4.0 * x - p[..., :-2, 1:-1] - p[..., 2:, 1:-1] - p[..., 1:-1, :-2] - p[..., 1:-1, 2:]

    x = torch.rand(2, 3, 8 * factor, 5 * factor, generator=torch.Generator().manual_seed(3))
    x[..., 0, :] = 1.0
    x[..., :, -1] = 0.0  # a border band: a wrong border padding shows
    got = highpass_phases(torch.nn.functional.pixel_unshuffle(x, factor), factor)
    torch.testing.assert_close(got, torch.nn.functional.pixel_unshuffle(highpass(x), factor), rtol=0, atol=1e-6)


def test_shifted_windows_attend_across_the_unshifted_window_borders() -> None:
    """``shift_windows``: the token attention's windows are offset by half a window. On an 8 x 8 grid with 4 x 4
    windows, perturbing token (3, 3) changes exactly rows and columns 0..3 unshifted, 2..5 shifted (a window that
    bridges four unshifted ones); token (0, 0) shifted: rows and columns 0..1 (the replicate-padded corner window)."""
    from egmt_ros.model.network import ECIMBlock, window_partition, window_reverse

    torch.manual_seed(0)
    blk = ECIMBlock(small("rt")).eval()
    x = torch.randn(1, 8, 8, 8)

    def changed(src: tuple[int, int], shift: bool) -> torch.Tensor:
        def attend(grid: torch.Tensor) -> torch.Tensor:
            t = window_partition(grid, 4)
            return window_reverse(blk._shifted(blk.ta_ir, t, 1, 8, 8) if shift else blk.ta_ir(t), 4, 1, 8, 8)

        moved = x.clone()
        moved[0, src[0], src[1]] += torch.linspace(-1.0, 1.0, 8)  # not a constant: LayerNorm would remove it
        return (attend(moved) - attend(x))[0].abs().amax(dim=-1) > 1e-6

    def block(r0: int, r1: int) -> torch.Tensor:
        m = torch.zeros(8, 8, dtype=torch.bool)
        m[r0:r1, r0:r1] = True
        return m

    with torch.no_grad():
        assert torch.equal(changed((3, 3), False), block(0, 4))
        assert torch.equal(changed((3, 3), True), block(2, 6))
        assert torch.equal(changed((0, 0), True), block(0, 2))


@pytest.mark.parametrize("scale", [1, 2])
def test_rt_info_prior_with_a_scale_below_its_block_size_runs(scale: int) -> None:
    """The prior works on 4 x 4-pixel blocks, so an rt model with ``scale`` 1 or 2 pads its input to a multiple of
    4 (before, sizes that were not failed: prior and decoder maps of different sizes); its untrained output is the
    information target there too."""
    from egmt_ros.model.information import information_target

    cfg = rt_config(channels=8, heads=2, window=4, scale=scale, detail_scale=2, detail_channels=4, text_dim=D,
                    num_classes=3)
    assert cfg.pad_multiple == 4 and rt_config(scale=scale, detail_scale=2, info_prior=False).pad_multiple == 2
    m = EGMT(cfg).eval()
    for hw in ((6, 6), (7, 9), (1, 1)):
        ir, vi = images(*hw)
        with torch.no_grad():
            y = m.fuse(ir, vi, torch.randn(1, 2, D))
        assert y.shape == ir.shape and torch.isfinite(y).all()
    ir, vi = images(12, 20)
    with torch.no_grad():
        torch.testing.assert_close(m.fuse(ir, vi), information_target(ir, vi)[0], rtol=0, atol=1e-5)


def test_rt_extreme_inputs_give_finite_outputs_and_gradients() -> None:
    """Flat, saturated and single-pixel inputs (zero variance, clamped weights in the prior's logit): finite output
    in [0, 1] and finite gradients for the inputs and every parameter, untrained and with a random decoder."""
    untrained, randomised = EGMT(small("rt")).train(), build("rt").train()
    for name, (ir0, vi0) in extreme_pairs(24, 40).items():
        for m in (untrained, randomised):
            m.zero_grad()
            ir, vi = ir0.clone().requires_grad_(), vi0.clone().requires_grad_()
            y = m.fuse(ir, vi, torch.randn(1, 2, D))
            assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1, name
            (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
            grads = [ir.grad, vi.grad] + [p.grad for p in m.parameters() if p.grad is not None]
            assert all(torch.isfinite(g).all() for g in grads), name


def test_rt_in_float16_on_extreme_inputs_has_no_nan() -> None:
    """The rt network in float16 (TensorRT fp16, the torch backend's float16): a black, white or flat frame made the
    information prior 0 / 0 (NaN everywhere); now finite, in [0, 1], and equal sources come back."""
    m = build("rt").eval().half()
    with torch.no_grad():
        for name, (ir, vi) in extreme_pairs(24, 40).items():
            y = m.fuse(ir.half(), vi.half(), torch.randn(1, 2, D).half())
            assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1, name
        flat = torch.full((1, 1, 24, 40), 0.5)
        untrained = EGMT(small("rt")).eval().half()
        torch.testing.assert_close(untrained.fuse(flat.half(), flat.half()).float(), flat, rtol=0, atol=1e-3)


def test_untrained_rt_gives_back_equal_sources_and_keeps_a_warm_dot() -> None:
    """With IR == VI there is nothing to choose: the untrained prior model returns that image (flat or not); a single
    warm IR pixel on black survives the fusion."""
    m = EGMT(small("rt")).eval()
    pairs = extreme_pairs(24, 40)
    with torch.no_grad():
        for name in ("zeros", "ones", "half", "ir == vi"):
            ir, vi = pairs[name]
            torch.testing.assert_close(m.fuse(ir, vi), vi, rtol=0, atol=1e-3)
        dot, zeros = pairs["dot in ir"]
        assert float(m.fuse(dot, zeros)[(..., *dot_at(24, 40))]) > 0.9


@pytest.mark.parametrize("n,multiple", [(5, 8), (1, 4), (2, 7), (3, 3), (6, 16), (13, 8)])
def test_reflect_pad_is_mirror_reflection(n: int, multiple: int) -> None:
    x = torch.arange(n, dtype=torch.float32).view(1, 1, 1, n)
    got = reflect_pad_to_multiple(x, multiple)[0, 0, 0].numpy()
    total = -(-n // multiple) * multiple
    assert len(got) == total
    if total - n < n:  # numpy can do it: same as np.pad(mode="reflect")
        assert np.array_equal(got, np.pad(np.arange(n), (0, total - n), mode="reflect"))
    period = list(range(n)) + list(range(n - 2, 0, -1)) if n > 1 else [0]
    assert np.array_equal(got, [period[i % len(period)] for i in range(total)])


def test_config_round_trip_and_validation() -> None:
    for cfg in (paper_config(), rt_config(use_ca=False, class_names=["a", "b"], num_classes=2)):
        assert EGMTConfig.from_dict(cfg.to_dict()) == cfg
    p = paper_config()
    assert (p.channels, p.window, p.scale, p.max_entities, p.mask_ratio, p.alphas, p.focal_gamma, p.tau, p.lr,
            p.batch_size, p.epochs, p.crop) == (32, 16, 1, 16, 0.6, (1.0, 15.0, 5.0), 2.0, 1.0, 1e-4, 4, 20, 448)
    with pytest.raises(ValueError):
        paper_config(heads=5)
    with pytest.raises(ValueError):
        EGMTConfig(variant="fast")
    with pytest.raises(ValueError):
        EGMTConfig.from_dict({**p.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="window must be even"):
        rt_config(window=5)  # shifted windows by half a window (it failed in window_partition at run time)
    assert rt_config(window=5, shift_windows=False).window == 5


def test_paper_reconstructor_matches_eq7() -> None:
    m = EGMT(paper_config(text_dim=D))
    convs = [mod for mod in m.recon if isinstance(mod, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (64, 32, (3, 3), (1, 1)), (32, 16, (3, 3), (1, 1)), (16, 1, (1, 1), (1, 1))]


def test_minilm_text_encoder_offline() -> None:
    from egmt_ros.model.text import MiniLMEncoder

    enc = MiniLMEncoder()
    f = enc.encode(["car", "automobile", "tree", "car"])
    assert f.shape == (4, 384) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert f[0] @ f[1] > f[0] @ f[2] + 0.2  # semantic: car ~ automobile, not tree
    assert np.array_equal(f[0], f[3]) and enc.cache_size == 3
    assert enc.encode([]).shape == (0, 384)
