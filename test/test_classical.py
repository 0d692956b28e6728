"""Classical fusion baselines: exact pixel rules, pyramid/GFF identities, size handling, detail preservation."""

from __future__ import annotations

import numpy as np
import pytest

from egmt_ros.fusion import classical
from egmt_ros.fusion.methods import available, get_method

CLASSICAL = ("average", "max", "lp", "gff")


def _rand(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _edge_pair(h: int = 96, w: int = 96) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """IR with a sharp stripe pattern in a central square, a flat visible image; returns (ir, vi, region)."""
    ir = np.full((h, w), 0.4, np.float32)
    region = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    stripes = np.where((np.arange(w) // 3) % 2 == 0, 0.9, 0.1).astype(np.float32)
    ir[region] = stripes[region[1]][None, :]
    vi = np.full((h, w), 0.5, np.float32)
    return ir, vi, region


def _grad_energy(img: np.ndarray, region: tuple[slice, slice]) -> float:
    gy, gx = np.gradient(img.astype(np.float64))
    return float((gx[region] ** 2 + gy[region] ** 2).sum())


def test_all_classical_methods_registered() -> None:
    assert set(CLASSICAL) <= set(available())
    for name in CLASSICAL:
        m = get_method(name)
        assert m.name == name
        assert m.num_params() == 0


def test_average_and_max_exact() -> None:
    ir = np.array([[0.0, 1.0], [0.25, 0.8]], np.float32)
    vi = np.array([[1.0, 0.0], [0.75, 0.2]], np.float32)
    np.testing.assert_array_equal(get_method("average").fuse(ir, vi), [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(get_method("max").fuse(ir, vi), np.array([[1.0, 1.0], [0.75, 0.8]], np.float32))


def test_size_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        get_method("average").fuse(np.zeros((4, 5), np.float32), np.zeros((5, 4), np.float32))


@pytest.mark.parametrize("shape", [(37, 53), (64, 48), (5, 7)])
def test_lp_of_identical_inputs_is_identity(shape: tuple[int, int]) -> None:
    img = _rand(shape, 1)
    np.testing.assert_allclose(get_method("lp").fuse(img, img), img, atol=1e-5)


def test_lp_pyramid_has_documented_levels_and_inverts() -> None:
    img = _rand((64, 80), 2)
    pyr = classical.laplacian_pyramid(img, classical.LP_LEVELS)
    assert len(pyr) == classical.LP_LEVELS + 1
    assert pyr[-1].shape == (4, 5)  # 64x80 halved 4 times
    np.testing.assert_allclose(classical.reconstruct_pyramid(pyr), img, atol=1e-5)


@pytest.mark.parametrize("name", ["lp", "gff"])
def test_odd_sizes_keep_size_and_range(name: str) -> None:
    ir, vi = _rand((37, 53), 3), _rand((37, 53), 4)
    out = get_method(name).fuse(ir, vi)
    assert out.shape == (37, 53)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_gff_weights_sum_to_one_and_in_range() -> None:
    ir, vi = _rand((37, 53), 5), _rand((37, 53), 6)
    for w in classical.gff_weights(ir, vi):
        assert w.shape == (37, 53, 2)
        np.testing.assert_allclose(w.sum(axis=2), 1.0, atol=1e-5)
        assert w.min() >= 0.0 and w.max() <= 1.0 + 1e-6


def test_gff_weights_follow_saliency() -> None:
    """Where only the IR has detail, the IR detail weight dominates."""
    ir, vi, region = _edge_pair()
    _, wd = classical.gff_weights(ir, vi)
    assert wd[region][..., 0].mean() > 0.9


def test_gff_of_image_with_itself_is_identity() -> None:
    img = _rand((48, 61), 7)
    np.testing.assert_allclose(get_method("gff").fuse(img, img), img, atol=1e-5)


def test_guided_filter_matches_direct_window_computation() -> None:
    """The box-filter guided filter equals the per-pixel definition with windows clipped at the border."""
    guide, src = _rand((12, 15), 8).astype(np.float64), _rand((12, 15), 9).astype(np.float64)
    r, eps = 2, 0.01
    h, w = guide.shape
    a = np.zeros_like(guide)
    b = np.zeros_like(guide)
    win = [[(slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)) for x in range(w)] for y in range(h)]
    for y in range(h):
        for x in range(w):
            gi, pi = guide[win[y][x]], src[win[y][x]]
            a[y, x] = ((gi * pi).mean() - gi.mean() * pi.mean()) / (gi.var() + eps)
            b[y, x] = pi.mean() - a[y, x] * gi.mean()
    ref = np.array([[a[win[y][x]].mean() * guide[y, x] + b[win[y][x]].mean() for x in range(w)] for y in range(h)])
    np.testing.assert_allclose(classical.guided_filter(guide, src, r, eps), ref, atol=1e-5)


def test_guided_filter_window_larger_than_image() -> None:
    """r1 = 45 on a tiny image: a constant source stays constant (weights of a constant map are that constant)."""
    guide = _rand((20, 30), 10)
    out = classical.guided_filter(guide, np.full((20, 30), 0.3, np.float32), 45, 0.3)
    np.testing.assert_allclose(out, 0.3, atol=1e-5)


@pytest.mark.parametrize("name", ["lp", "gff"])
def test_detail_methods_keep_more_edge_energy_than_average(name: str) -> None:
    ir, vi, region = _edge_pair()
    e_avg = _grad_energy(get_method("average").fuse(ir, vi), region)
    e_m = _grad_energy(get_method(name).fuse(ir, vi), region)
    e_ir = _grad_energy(ir, region)
    assert e_avg == pytest.approx(e_ir / 4, rel=1e-4)  # halving the contrast quarters the energy
    assert e_m > 2.0 * e_avg


def test_method_parameters_are_overridable_and_checked() -> None:
    assert get_method("lp", levels=2).params == {"levels": 2}
    assert get_method("gff").params == {"r1": 45, "eps1": 0.3, "r2": 7, "eps2": 1e-6}
    with pytest.raises(TypeError):
        get_method("lp", sigma=3)
