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


_PLACED: dict[tuple[int, torch.device, torch.dtype, int], Tensor] = {}


def fixed_kernel(base: Tensor, like: Tensor, groups: int) -> Tensor:
    """The constant conv kernel ``base`` (a module-level tensor, kept alive) on ``like``'s device and dtype, repeated
    for ``groups`` groups along dim 0. Made once per (kernel, device, dtype, groups) and kept: made per call it was
    a conversion every frame, and on a GPU a host-to-device copy that waits for the stream. While torch.compile
    traces, it is made inline (a constant of the compiled graph)."""
    if torch.compiler.is_compiling():
        return base.to(like.device, like.dtype).repeat(groups, 1, 1, 1)
    key = (id(base), like.device, like.dtype, groups)
    k = _PLACED.get(key)
    if k is None:
        with torch.inference_mode(False):  # a normal tensor: autograd may save it, whatever mode made it first
            k = _PLACED[key] = base.to(like.device, like.dtype).repeat(groups, 1, 1, 1)
    return k


_SOBEL_PAIR = torch.stack([_SOBEL_X, _SOBEL_X.t()]).view(2, 1, 3, 3)


def sobel_magnitude(x: Tensor) -> Tensor:
    """``|d/dx| + |d/dy|`` of the 3 x 3 Sobel filters of every channel of ``[B, C, H, W]`` (replicate padding; same
    size out; one grouped convolution)."""
    c = int(x.shape[1])  # a constant of the exported graph: the kernel's shape must be known
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), fixed_kernel(_SOBEL_PAIR, x, c), groups=c)
    return g.abs().view(x.shape[0], c, 2, g.shape[-2], g.shape[-1]).sum(dim=2)


def _half_of_quarter_kernel() -> Tensor:
    """``[4, 16, 1, 1]``: the 2 x 2 phases (channel ``2a + b``) of the 2 x 2-averaged image from its 4 x 4 phases
    (channel ``4 dy + dx``; phase (a, b) averages dy in {2a, 2a + 1}, dx in {2b, 2b + 1}). A 1 x 1 convolution:
    OpenVINO runs a reshape to 8 dimensions and a mean over two of them in its slow reference code (8 ms)."""
    k = torch.zeros(4, 16, 1, 1)
    for dy in range(4):
        for dx in range(4):
            k[2 * (dy // 2) + dx // 2, 4 * dy + dx] = 0.25
    return k


_HALF_OF_QUARTER = _half_of_quarter_kernel()


def stencil_on_phases(stencils: list[Tensor], factor: int) -> Tensor:
    """``[f^2 K, f^2, 3, 3]``: the 3 x 3 ``stencils`` (K of them, rows y) applied to an image held as its
    ``f x f`` sub-pixel phases (pixel_unshuffle order, channel ``f dy + dx``), as one convolution over the phase grid
    (output channel ``K (f dy + dx) + k``). Pad its input with :func:`pad_phases`."""
    f, n = factor, len(stencils)
    k = torch.zeros(f * f * n, f * f, 3, 3, dtype=torch.float64)
    for dy in range(f):
        for dx in range(f):
            for j, st in enumerate(stencils):
                for da in (-1, 0, 1):
                    for db in (-1, 0, 1):
                        y, x = dy + da, dx + db  # in pixels, relative to the block
                        tap = float(st[da + 1, db + 1])
                        k[n * (f * dy + dx) + j, f * (y % f) + x % f, y // f + 1, x // f + 1] += tap
    return k


def pad_phases(x: Tensor, factor: int) -> Tensor:
    """``[B, f^2 C, h, w]`` (each channel's image as ``f x f`` phases) padded by one block on every side so that a
    3 x 3 stencil sees the image replicate-padded by one pixel: a padding block repeats the image's outermost pixel
    row (column) in all its phases."""
    f = factor
    b, cf, h, w = x.shape[0], int(x.shape[1]), x.shape[2], x.shape[3]
    x = x.reshape(b, cf // (f * f), f, f, h, w)  # (phase row, phase column, block row, block column)
    top, bottom = x[:, :, 0:1, :, 0:1], x[:, :, f - 1:f, :, -1:]
    x = torch.cat([torch.cat([top] * f, dim=2), x, torch.cat([bottom] * f, dim=2)], dim=4)
    left, right = x[:, :, :, 0:1, :, 0:1], x[:, :, :, f - 1:f, :, -1:]
    x = torch.cat([torch.cat([left] * f, dim=3), x, torch.cat([right] * f, dim=3)], dim=5)
    return x.reshape(b, cf, h + 2, w + 2)


_SOBEL_ON_HALF_PHASES = stencil_on_phases([_SOBEL_X, _SOBEL_X.t()], 2)


def _sobel_on_phases(hq: Tensor) -> Tensor:
    """``[B, 4C, h, w]`` (each channel's image as 2 x 2 phases) -> ``[B, 4C, h, w]``: ``|d/dx| + |d/dy|`` of the
    Sobel filters at every phase, with the image's replicate padding: :func:`sobel_magnitude` of the image, as
    phases (one grouped convolution)."""
    b, c4, h, w = hq.shape[0], int(hq.shape[1]), hq.shape[2], hq.shape[3]
    g = F.conv2d(pad_phases(hq, 2), fixed_kernel(_SOBEL_ON_HALF_PHASES, hq, c4 // 4), groups=c4 // 4).abs()
    return g.reshape(b, c4, 2, h, w).sum(dim=2)


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

    def __init__(self, half: Tensor | None, m1: Tensor | None = None, v: Tensor | None = None,
                 g: Tensor | None = None) -> None:
        """``half``: the 2 x 2-averaged sources (:func:`_half` or :func:`half_from_phases`); or ``half=None`` and the
        block statistics ``m1, v, g`` given (:meth:`of_quarter_phases`)."""
        if half is not None:
            s = INFO_STRIDE // 2  # 2: _nearest2 below
            m1 = F.avg_pool2d(half, s)
            d = half - _nearest2(m1)
            v = F.avg_pool2d(d * d, s)
            g = F.avg_pool2d(sobel_magnitude(half), s)
        assert m1 is not None and v is not None and g is not None
        self.half, self.m1, self.v, self.g = half, m1, v, g
        c = int(m1.shape[1])  # the box means of m1, v and g in one pass (one pad and two pools, not three of each)
        self.mu, box_v, self.box_g = torch.split(box_mean(torch.cat([m1, v, g], dim=1), INFO_RADIUS), c, dim=1)
        e = self.m1 - self.mu
        self.sd = torch.sqrt(box_v + box_mean(e * e, INFO_RADIUS) + 1e-8)

    @classmethod
    def of_quarter_phases(cls, phases: Tensor) -> "_Blocks":
        """The same statistics from the 4 x 4 sub-pixel phases ``F.pixel_unshuffle(x, 4)`` = ``[B, 16C, H/4, W/4]``,
        without a half-resolution image: the four 2 x 2 averages of each block (the half-resolution image in its
        own 2 x 2 phases), their mean ``m1`` and variance ``v``, and the Sobel magnitude of the half-resolution
        image taken on those phases by one fixed convolution (:func:`_sobel_on_phases`): equal to the statistics of
        ``_Blocks(half)`` to float rounding."""
        b, c16, h, w = phases.shape[0], int(phases.shape[1]), phases.shape[2], phases.shape[3]
        c = c16 // 16
        hq = F.conv2d(phases, fixed_kernel(_HALF_OF_QUARTER, phases, c), groups=c)
        hq = hq.reshape(b, c, 4, h, w)
        m1 = hq.mean(dim=2)
        d = hq - m1.unsqueeze(2)
        g = _sobel_on_phases(hq.reshape(b, 4 * c, h, w)).reshape(b, c, 4, h, w).mean(dim=2)
        return cls(None, m1, (d * d).mean(dim=2), g)

    def information(self) -> Tensor:
        """Weber information of each channel per block (:func:`information_map`)."""
        return (self.box_g + self.sd + INFO_FLOOR) / (self.mu + WEBER)

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


def _bilinear_phase_kernel(factor: int) -> Tensor:
    """``[factor^2, 1, 3, 3]``: the x``factor`` bilinear upsampling's ``factor x factor`` output phases as 3 x 3
    stencils (``align_corners=False``: phase ``k`` of a row sits at ``(k + 0.5) / factor - 0.5`` input pixels)."""
    taps = torch.zeros(factor, 3, dtype=torch.float64)  # per phase, the weights of input pixels -1, 0, +1
    for k in range(factor):
        t = (k + 0.5) / factor - 0.5
        if t < 0:
            taps[k, 0], taps[k, 1] = -t, 1.0 + t
        else:
            taps[k, 1], taps[k, 2] = 1.0 - t, t
    return (taps[:, None, :, None] * taps[None, :, None, :]).reshape(factor * factor, 1, 3, 3)


_BILINEAR_PHASES = {f: _bilinear_phase_kernel(f) for f in (2, 4)}


def up_phases(x: Tensor, factor: int = 2) -> Tensor:
    """``[B, C, h, w]`` -> ``[B, factor^2 C, h, w]``: per channel the ``factor x factor`` sub-pixel phases
    (``pixel_shuffle`` order, channel ``factor^2 c + phase``) of the x``factor`` bilinear upsampling of ``x``
    (``align_corners=False``, border values repeated: ``F.interpolate``'s result).

    A replicate pad and one fixed grouped 3 x 3 convolution: several times faster in OpenVINO than its Interpolate,
    and the rt decoder adds these phases to its own sub-pixel maps before its ``pixel_shuffle`` (no full-size
    resize)."""
    c = int(x.shape[1])  # a constant of the exported graph: the kernel's shape must be known
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), fixed_kernel(_BILINEAR_PHASES[factor], x, c), groups=c)


def up2(x: Tensor) -> Tensor:
    """x2 bilinear upsampling of ``[B, C, h, w]`` (:func:`up_phases` + ``pixel_shuffle``)."""
    return F.pixel_shuffle(up_phases(x), 2)


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
    assert both.half is not None
    w_d, q = _detail_share(both, regions, box_boost)
    sal = _saliency(both.half[:, 0:1])  # combined with the saliency at half resolution
    up = up2(torch.cat([w_d, q], dim=1))
    return _logit_and_residual(up[:, 0:1], up[:, 1:2], sal)


def information_prior_quarter(phases: Tensor) -> tuple[Tensor, Tensor]:
    """``(logit of w_d, r)`` at 1/4 resolution ``[B, 1, H/4, W/4]`` from the 4 x 4 sub-pixel phases of the stacked
    sources, ``F.pixel_unshuffle(src, 4)`` (``src = [B, 2, H, W]``, IR then visible; H, W multiples of 4): the prior
    of the quarter-resolution rt decoder (``detail_scale`` 4). The same information measure as
    :func:`information_prior_half` (statistics from :meth:`_Blocks.of_quarter_phases`), with the IR saliency taken on
    the 4 x 4 block means and the logit formed before the upsampling (the decoder brings it to full size with its
    own sub-pixel maps), so it is a close, not an exact, copy of the information target."""
    both = _Blocks.of_quarter_phases(phases)
    w_d, q = _detail_share(both, None, 1.0)
    return _logit_and_residual(w_d, q, _saliency(both.m1[:, 0:1]))


def _detail_share(both: _Blocks, regions: Tensor | None, box_boost: float) -> tuple[Tensor, Tensor]:
    """1/4 resolution ``(w_d, (w_b - w_d)(B_ir - B_vi))`` of the two sources' statistics (:func:`information_prior`)."""
    info = both.information()
    i_ir, i_vi = info[:, 0:1], info[:, 1:2] * both.visibility()[:, 1:2]
    if regions is not None:
        r = F.avg_pool2d(_pad4(regions), INFO_STRIDE)
        i_ir = i_ir * (1.0 + box_boost * r[:, 0:1])
        i_vi = i_vi * (1.0 + box_boost * r[:, 1:2])
    ratio = _ir_share(i_ir, i_vi)
    w_d = box_mean(ratio, INFO_RADIUS)
    return w_d, (box_mean(ratio, BASE_RADIUS) - w_d) * (both.m1[:, 0:1] - both.m1[:, 1:2])


def _logit_and_residual(w_d: Tensor, q: Tensor, sal: Tensor) -> tuple[Tensor, Tensor]:
    """Salient IR takes the IR: ``(logit(clamp(w_d + sal (1 - w_d))), q (1 - sal))`` (clamped to PRIOR_EPS)."""
    w = torch.clamp(w_d + sal * (1.0 - w_d), PRIOR_EPS, 1.0 - PRIOR_EPS)
    return torch.log(w) - torch.log1p(-w), q * (1.0 - sal)


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
