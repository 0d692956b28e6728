"""Local information of infrared and visible images: the intensity target of the ``info`` objective and the prior of
the rt decoder (egmt_ros's design; why in docs/model.md "Objective").

The information of a region is measured at 1/4 resolution (a region is what competes, not a pixel; and so it costs
a few milliseconds, not hundreds): each source is first averaged over 2 x 2 pixels (sensor noise is not information),
its Sobel gradient magnitude taken at that half resolution and averaged down to 1/4, together with the 4 x 4 block
means of the half-resolution image and of its square. Over a ``(2 INFO_RADIUS + 1)^2`` box of those blocks (20 x 20
source pixels) a source's information is ``(mean gradient + local standard deviation + INFO_FLOOR) / (local mean +
WEBER)``, a Weber contrast: bright flat smoke, fog and glare carry little, a flat dark IR background only the floor
(:func:`information_map`). The visible information is further scaled down in darkness and under a bright
low-contrast veil (:func:`visible_visibility`). Entity boxes found in a source multiply its information by
``1 + box_boost`` there. The IR share is ``w = box(I_ir^p / (I_ir^p + I_vi^p))``, ``p = INFO_POWER`` (smoothed over
the same box), brought to full resolution bilinearly; salient IR regions (warmer than the image mean by more than half
a standard deviation, :func:`ir_saliency`, at half resolution) take the IR itself: ``w' = w + sal (1 - w)`` (kept
whole, with their silhouette).

All functions take ``[B, 1, H, W]`` tensors in [0, 1] of any size (replicate-padded to a multiple of 4 inside),
return full-size maps, use no learned parameters and only ops that export to ONNX / OpenVINO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])

#: Radius, in 1/4-resolution blocks, of the box over which information is compared (5 x 5 blocks = 20 x 20 px).
INFO_RADIUS = 2
#: Radius, in 1/4-resolution blocks, of the smoothing of the base weight (17 x 17 blocks = 68 x 68 px).
BASE_RADIUS = 8
#: Resolution divisor of the information maps (the Sobel gradient is taken at half this, after 2 x 2 averaging).
INFO_STRIDE = 4
#: Weber constant: the information of a region is its contrast divided by (local mean + WEBER).
WEBER = 1.0
#: Information floor (a flat region's contrast), so that flat regions compare by brightness (Weber) alone.
INFO_FLOOR = 0.01
#: Visible luma below which the visible information is scaled down linearly (darkness).
DARK_LEVEL = 0.1
#: Visible luma above which a low-contrast region counts as veiled (smoke, fog, glare), fully at VEIL_LEVEL + 0.2.
VEIL_LEVEL = 0.5
#: Local standard deviation below which a bright visible region counts as veiled.
VEIL_CONTRAST = 0.05
#: Exponent of the information ratio: the IR share is ``I_ir^p / (I_ir^p + I_vi^p)``. 4 rather than 2: the source
#: with more information takes the region more decisively (measured on 16 RoadScene *training* pairs, target alone:
#: p = 2 -> 4 raised MI 3.91 -> 4.50, Qabf 0.591 -> 0.612, PC 0.477 -> 0.491; p = 8 more still, but closer to a
#: per-region switch). Table in docs/model.md.
INFO_POWER = 4
#: The detail weight is clamped to [PRIOR_EPS, 1 - PRIOR_EPS] before its logit (1 - 1e-2 is still below 1 in
#: bfloat16, OpenVINO's CPU default).
PRIOR_EPS = 1e-2


def sobel_magnitude(x: Tensor) -> Tensor:
    """``|d/dx| + |d/dy|`` of the 3 x 3 Sobel filters of every channel of ``[B, C, H, W]`` (replicate padding; same
    size out; one grouped convolution)."""
    c = int(x.shape[1])  # a constant of the exported graph: the kernel's shape must be known
    kx = _SOBEL_X.to(x.device, x.dtype)
    k = torch.stack([kx, kx.t()]).view(2, 1, 3, 3).repeat(c, 1, 1, 1)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
    return g.abs().view(x.shape[0], c, 2, g.shape[-2], g.shape[-1]).sum(dim=2)


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over the ``(2 radius + 1)^2`` box around every pixel (replicate padding; same size out; separable)."""
    if radius <= 0:
        return x
    k = 2 * radius + 1
    x = F.pad(x, (radius,) * 4, mode="replicate")
    return F.avg_pool2d(F.avg_pool2d(x, (1, k), stride=1), (k, 1), stride=1)


class _Blocks:
    """The 1/4-resolution statistics of the channels of ``[B, C, H, W]`` (one source per channel; module docstring):
    half-resolution image ``half``, block mean ``m1``, within-block variance ``v``, block mean of the half-resolution
    Sobel magnitude ``g``, and over the ``INFO_RADIUS`` box of blocks the local mean ``mu`` and standard deviation
    ``sd`` (the mean within-block variance plus the variance of the block means around their local mean).
    Both sources go through one set of operations as two channels (half the operations of an exported graph).

    Variances are means of squared deviations, never ``E[x^2] - E[x]^2``: the difference of two close numbers is
    noise in bfloat16 (OpenVINO's default CPU precision here), a squared deviation is not."""

    def __init__(self, half: Tensor) -> None:
        """``half``: the 2 x 2-averaged sources (:func:`_half` or :func:`half_from_phases`)."""
        s = INFO_STRIDE // 2  # 2: _nearest2 below
        self.half = half
        self.m1 = F.avg_pool2d(self.half, s)
        d = self.half - _nearest2(self.m1)
        self.v = F.avg_pool2d(d * d, s)
        self.g = F.avg_pool2d(sobel_magnitude(self.half), s)
        self.mu = box_mean(self.m1, INFO_RADIUS)
        e = self.m1 - self.mu
        self.sd = torch.sqrt(box_mean(self.v, INFO_RADIUS) + box_mean(e * e, INFO_RADIUS) + 1e-8)

    def information(self) -> Tensor:
        """Weber information of each channel per block (:func:`information_map`)."""
        return (box_mean(self.g, INFO_RADIUS) + self.sd + INFO_FLOOR) / (self.mu + WEBER)

    def visibility(self) -> Tensor:
        """Visibility factor of each channel per block (:func:`visible_visibility`)."""
        dark = torch.clamp(self.mu / DARK_LEVEL, 0.1, 1.0)
        veil = (torch.clamp((self.mu - VEIL_LEVEL) / 0.2, 0.0, 1.0)
                * torch.clamp(1.0 - self.sd / VEIL_CONTRAST, 0.0, 1.0))
        return dark * (1.0 - 0.7 * veil)


def _pad4(x: Tensor) -> Tensor:
    """Replicate-pad ``[B, C, H, W]`` at the bottom/right to multiples of ``INFO_STRIDE``."""
    h, w = x.shape[-2], x.shape[-1]
    return F.pad(x, (0, (-w) % INFO_STRIDE, 0, (-h) % INFO_STRIDE), mode="replicate")


def _half(x: Tensor) -> Tensor:
    """The 2 x 2 averages of ``[B, C, H, W]`` padded to multiples of ``INFO_STRIDE``: the half-resolution image
    every statistic of this module starts from (sensor noise is not information)."""
    return F.avg_pool2d(_pad4(x), 2)


_BILINEAR_TAPS = ((0.25, 0.75, 0.0), (0.0, 0.75, 0.25))  # the two output phases of a x2 bilinear upsampling


def up2_phases(x: Tensor) -> Tensor:
    """``[B, C, h, w]`` -> ``[B, 4C, h, w]``: per channel the four 2 x 2 sub-pixel phases (``pixel_shuffle`` order,
    channel ``4c + phase``) of the x2 bilinear upsampling of ``x`` (``align_corners=False``, border values repeated:
    ``F.interpolate``'s result).

    A replicate pad and one fixed grouped 3 x 3 convolution: several times faster in OpenVINO than its Interpolate,
    and the rt decoder adds these phases to its own sub-pixel maps before its ``pixel_shuffle`` (no full-size
    resize)."""
    c = int(x.shape[1])  # a constant of the exported graph: the kernel's shape must be known
    taps = torch.tensor(_BILINEAR_TAPS, dtype=x.dtype, device=x.device)
    k = (taps[:, None, :, None] * taps[None, :, None, :]).reshape(4, 1, 3, 3).repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def up2(x: Tensor) -> Tensor:
    """x2 bilinear upsampling of ``[B, C, h, w]`` (:func:`up2_phases` + ``pixel_shuffle``)."""
    return F.pixel_shuffle(up2_phases(x), 2)


def _nearest2(x: Tensor) -> Tensor:
    """x2 nearest-neighbour upsampling of ``[B, C, h, w]`` (a ``pixel_shuffle`` of four copies of each channel)."""
    b, c, h, w = x.shape[0], int(x.shape[1]), x.shape[2], x.shape[3]
    return F.pixel_shuffle(x.unsqueeze(2).expand(b, c, 4, h, w).reshape(b, 4 * c, h, w), 2)


def _full(x: Tensor, factor: int, like: Tensor) -> Tensor:
    """``x`` upsampled bilinearly by ``factor`` (2 or 4, in x2 steps), cropped to ``like``'s size."""
    while factor > 1:
        x, factor = up2(x), factor // 2
    return x[..., :like.shape[-2], :like.shape[-1]]


def information_map(x: Tensor) -> Tensor:
    """Local information of a source ``[B, 1, H, W]`` (module docstring), full size."""
    return _full(_Blocks(_half(x)).information(), INFO_STRIDE, x)


def visible_visibility(vi: Tensor) -> Tensor:
    """Visibility factor of the visible image in [0.1, 1], full size: darkness (local mean below ``DARK_LEVEL``)
    scales it down linearly, and a veil (smoke, fog, glare: local mean above ``VEIL_LEVEL`` with a local standard
    deviation below ``VEIL_CONTRAST``) scales it down to 0.3."""
    return _full(_Blocks(_half(vi)).visibility(), INFO_STRIDE, vi)


def _saliency(half: Tensor) -> Tensor:
    mean = half.mean(dim=(2, 3), keepdim=True)
    d = half - mean
    std = torch.sqrt((d * d).mean(dim=(2, 3), keepdim=True) + 1e-12)
    return torch.clamp((half - mean - 0.5 * std) / (std + 1e-3), 0.0, 1.0)


def ir_saliency(ir: Tensor) -> Tensor:
    """How much a region stands out warm in IR, in [0, 1], full size: 0 up to half a standard deviation above the
    image mean, 1 from one and a half (per image; on the 2 x 2-averaged image, so a silhouette is a region, not
    edges)."""
    return _full(_saliency(_half(ir)), 2, ir)


def _ir_share(i_ir: Tensor, i_vi: Tensor) -> Tensor:
    """``I_ir^p / (I_ir^p + I_vi^p)``, ``p = INFO_POWER``. float32 computes it as written (bit for bit what the models
    were trained with); lower precisions as ``1 / (1 + (I_vi / I_ir)^p)``: in float16 both fourth powers of a flat
    region's information (~1e-9) underflow to 0, and 0 / 0 made the fused image NaN (a black or saturated frame);
    the quotient's power overflows at worst, to inf, whose share is 0."""
    if i_ir.dtype in (torch.float32, torch.float64):
        a, b = i_ir ** INFO_POWER, i_vi ** INFO_POWER
        return a / (a + b)
    return 1.0 / (1.0 + (i_vi / i_ir) ** INFO_POWER)


def half_from_phases(phases: Tensor) -> Tensor:
    """The 2 x 2 averages ``[B, C, H/2, W/2]`` of ``F.pixel_unshuffle(x, 2)`` = ``[B, 4C, H/2, W/2]`` (each channel's
    four phases averaged: ``F.avg_pool2d(x, 2)`` without reading the full-size image again)."""
    b, c4, h, w = phases.shape[0], int(phases.shape[1]), phases.shape[2], phases.shape[3]
    return phases.reshape(b, c4 // 4, 4, h, w).mean(dim=2)


def information_prior_half(src: Tensor, regions: Tensor | None = None, box_boost: float = 1.0,
                           phases: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(logit of w_d, r)`` at half resolution ``[B, 1, H'/2, W'/2]`` (``H', W'``: H, W padded to multiples of 4) of
    the sources stacked as ``src = [B, 2, H, W]`` (channel 0 IR, 1 visible, as the rt decoder holds them);
    :func:`information_prior` brings them to full size. ``w_d`` is clamped to [PRIOR_EPS, 1 - PRIOR_EPS].
    ``phases``: ``F.pixel_unshuffle(src, 2)`` where the caller has it already (H, W multiples of 4): the half-resolution
    image is then its 2 x 2 averages (:func:`half_from_phases`)."""
    both = _Blocks(_half(src) if phases is None else half_from_phases(phases))
    info = both.information()
    i_ir, i_vi = info[:, 0:1], info[:, 1:2] * both.visibility()[:, 1:2]
    if regions is not None:
        r = F.avg_pool2d(_pad4(regions), INFO_STRIDE)
        i_ir = i_ir * (1.0 + box_boost * r[:, 0:1])
        i_vi = i_vi * (1.0 + box_boost * r[:, 1:2])
    ratio = _ir_share(i_ir, i_vi)
    w_d = box_mean(ratio, INFO_RADIUS)
    q = (box_mean(ratio, BASE_RADIUS) - w_d) * (both.m1[:, 0:1] - both.m1[:, 1:2])  # (w_b - w_d)(B_ir - B_vi)
    sal = _saliency(both.half[:, 0:1])  # combined with the saliency at half resolution
    up = up2(torch.cat([w_d, q], dim=1))
    w_d = torch.clamp(up[:, 0:1] + sal * (1.0 - up[:, 0:1]), PRIOR_EPS, 1.0 - PRIOR_EPS)
    return torch.log(w_d) - torch.log1p(-w_d), up[:, 1:2] * (1.0 - sal)


def information_prior(ir: Tensor, vi: Tensor, regions: Tensor | None = None,
                      box_boost: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(w_d, r)`` ``[B, 1, H, W]``: the information target is ``T = VI + w_d (IR - VI) + r`` (module docstring).

    Two scales, so that the choice between sources of very different brightness never paints blotches: the base
    of each source (``B``, its 8 x 8-pixel block means) is weighted by ``w_b``, the information ratio smoothed over
    ``BASE_RADIUS`` blocks (68 px), and the detail (``IR - B_ir``, ``VI - B_vi``) by ``w_d``, the ratio smoothed over
    ``INFO_RADIUS`` blocks (20 px); salient IR regions take the IR at both scales.
    ``T = w_b B_ir + (1 - w_b) B_vi + w_d (IR - B_ir) + (1 - w_d) (VI - B_vi)``, i.e. ``r = (w_b - w_d)(B_ir - B_vi)``
    (computed at 1/4 resolution and brought up bilinearly; ``w_d`` comes to full size as a logit, so the rt decoder,
    which adds the logit to its own, reproduces it exactly).
    ``regions``: ``[B, 2, H, W]`` entity-box masks in [0, 1] (channel 0 boxes found in IR, 1 in visible) or None.
    """
    logit, r = information_prior_half(torch.cat([ir, vi], dim=1), regions, box_boost)
    return torch.sigmoid(_full(logit, 2, ir)), _full(r, 2, ir)


def information_target(ir: Tensor, vi: Tensor, regions: Tensor | None = None,
                       box_boost: float = 1.0) -> tuple[Tensor, Tensor]:
    """(intensity target ``T``, IR share of its detail ``w_d``), both ``[B, 1, H, W]`` (:func:`information_prior`;
    ``T`` is clamped to [0, 1])."""
    w, r = information_prior(ir, vi, regions, box_boost)
    return torch.clamp(vi + w * (ir - vi) + r, 0.0, 1.0), w
