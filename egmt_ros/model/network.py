"""The EGMT network (paper Sec. III, Eq. 1-8) and egmt_ros's real-time variant, in one module.

Shapes: ``ir``, ``vi`` are ``[B, 1, H, W]`` float in [0, 1] (any H x W: the input is reflection-padded to a
multiple of ``config.pad_multiple`` and the output is cropped back, never resized); ``ent`` is ``[B, N, text_dim]``
entity features (N may be 0) and ``ent_mask`` ``[B, N]`` bool with True = valid entity.

Design decisions the paper leaves open (documented here, tested in test/test_model.py):

- Attention blocks are pre-norm: ``x = x + Attn(LN(x))``; ``x = x + FFN(LN(x))`` with FFN = Linear-GELU-Linear.
- Channel cross-attention (Eq. 1-2) is "transposed" attention inside each window: per head, the ``d x d`` channel
  affinity of L2-normalised Q (one modality) and K (the other) over the window's tokens, times a learned
  per-head temperature (as Restormer), softmax, applied to V (the other modality).
- CGHA (Eq. 4-6): the entity features are aligned to C channels by one fully-connected layer, and a learned
  **null entity** is always appended, so the softmax over entities always has a valid key (N = 0, ``ent=None`` or an
  all-False mask give no NaN, and the visual tokens can attend to "nothing" when every entity is irrelevant).
  Eq. 5 (each visual token attends to the entities) runs over the whole image (the entity set is tiny); Eq. 6
  (the entity-weighted features query the visual tokens) runs inside the windows. Both outputs are projected and
  added residually to the visual features: ``x = x + P1(Eq.5) + P2(Eq.6)``.
- Reconstructor (Eq. 7, paper variant): 3x3 64->32, LeakyReLU(0.2), 3x3 32->16, LeakyReLU(0.2), 1x1 16->1, stride 1,
  bounded to [0, 1] by ``tanh(x) / 2 + 0.5`` (the SeAFusion convention; smooth, non-saturating at init).
- Multi-label head (Eq. 8): Phi_f^sr (2C channels) is embedded into the joint space by a 1x1 conv (2C -> C) and
  multiplied element-wise with every aligned entity feature (60 % of the flattened entity features zeroed at random
  while training); global max pooling over tokens and entities, then FC. The max over tokens of ``v_t * e`` equals
  ``max(e * max_t v, e * min_t v)`` per channel, which is how it is computed (exact, no ``T x N x C`` tensor).
- Padding: the input is reflection-padded to a multiple of ``config.pad_multiple`` (paper 1, rt ``scale``) and
  the ECIM features again, at their own resolution, to a multiple of ``window``; everything is cropped back.
  The reflection is computed by index arithmetic (:func:`reflect_pad_to_multiple`), so it works for any size
  (even 1 x 1, where the pad exceeds the image) and stays dynamic in an ONNX graph.
- rt variant (egmt_ros's design, same components): per-modality stems are space-to-depth by ``scale`` (16 in
  rt_config: lossless, 1 -> 256 channels) + a 3x3 conv to C; the ECIM (CA, TA, CGHA) runs at 1/16 resolution on
  4 x 4 windows (64 x 64 source pixels each; the earlier defaults: 1/8 and 8 x 8); the multi-label head reads those
  features. The reconstructor (:class:`RTDecoder`) works at 1/``detail_scale`` resolution (rt_config 4, earlier 2):
  a 3x3 conv on space-to-depth([ir, vi]) plus the upsampled ECIM features, ``detail_blocks``
  residual 3x3 blocks, a sub-pixel conv to full resolution predicting per pixel a weight ``w``, a residual ``r``
  and two detail gains, and ``F = clamp(s*ir + (1-s)*vi + r + g_ir*hp(ir) + g_vi*hp(vi), 0, 1)``, ``s = sigmoid(w)``.
  The full-resolution path is the sources themselves (the strong skip that keeps edges); its last conv starts at
  zero, so an untrained rt model is the pixel average and training learns where to deviate from it.
  With ``info_prior`` (rt_config's default) the weight and the residual start from the information prior of
  :mod:`egmt_ros.model.information` (``s = sigmoid(w + logit(w_d))``, residual ``r + r_0``): an untrained model is
  the information target, and training learns the corrections (entities, what the hand-made measure misses).
  With ``shift_windows`` (rt_config's default) the token attention (Eq. 3) runs on windows shifted by half a
  window (replicate-padded at the border, not rolled), so the windows of CA and CGHA are bridged: no 64 x 64 px
  blocks in the output (the previous rt model's artifact).
  Full-resolution window attention (and even 1/4-resolution attention) was measured too slow for 2 CPU cores.
  With ``detail_scale`` 4 the decoder and its prior work at 1/4 resolution on the 4 x 4 sub-pixel phases. At either
  scale the final blend is computed per sub-pixel phase and shuffled to full resolution once.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egmt_ros.model.config import EGMTConfig, paper_config
from egmt_ros.model.information import (fixed_kernel, information_prior_half, information_prior_quarter,
                                        pad_phases, stencil_on_phases, up_phases)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _reflect_index(n: int, total: int, device: torch.device) -> Tensor:
    """Indices ``0..total-1`` folded back into ``0..n-1`` by repeated mirror reflection (edge not repeated).

    Unlike ``F.pad(mode="reflect")`` this works when the pad exceeds the size (even for n = 1).
    """
    i = torch.arange(total, device=device)
    period = (torch.zeros_like(i) + (2 * n - 2)).clamp_min(1)  # a tensor op, so ONNX tracing keeps it dynamic
    j = torch.remainder(i, period)
    return torch.where(j >= n, period - j, j)


def reflect_pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflection-pad ``[B, C, H, W]`` at the bottom/right so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2], x.shape[-1]
    hp = (h + multiple - 1) // multiple * multiple
    wp = (w + multiple - 1) // multiple * multiple
    if hp == h and wp == w and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
        return x  # eager shortcut; an exported graph must keep the padding for every size
    x = torch.index_select(x, 2, _reflect_index(h, hp, x.device))
    return torch.index_select(x, 3, _reflect_index(w, wp, x.device))


def window_partition(x: Tensor, ws: int) -> Tensor:
    """``[B, H, W, C]`` -> ``[B * nW, ws * ws, C]`` (non-overlapping windows, row-major)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(t: Tensor, ws: int, b: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, ws * ws, C]`` -> ``[B, H, W, C]``."""
    c = t.shape[-1]
    x = t.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def channels_last(x: Tensor) -> Tensor:
    """NHWC memory layout (same values and shape): oneDNN convolutions run ~3x faster on it on a CPU."""
    return x.contiguous(memory_format=torch.channels_last)


class SpaceToDepth(nn.Module):
    """PixelUnshuffle whose output is in channels-last memory layout (for the following conv)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return channels_last(F.pixel_unshuffle(x, self.factor))


class FFN(nn.Module):
    """Linear - GELU - Linear."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _heads(x: Tensor, heads: int) -> Tensor:
    """``[B, T, C]`` -> ``[B, heads, T, C / heads]``."""
    b, t, c = x.shape
    return x.view(b, t, heads, c // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """``[B, heads, T, d]`` -> ``[B, T, heads * d]``."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


# ----------------------------------------------------------------------------------------------------------------
# ECIM parts
# ----------------------------------------------------------------------------------------------------------------
class ChannelCrossAttention(nn.Module):
    """Eq. 1-2: channel-axis multi-head cross-attention between IR and VI inside each window, + FFN (pre-norm).

    IR queries attend to VI keys/values and vice versa; the attention is over channels (``d x d`` per head).
    """

    def __init__(self, dim: int, heads: int, ffn_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm_ir, self.norm_vi = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv_ir, self.qkv_vi = nn.Linear(dim, 3 * dim), nn.Linear(dim, 3 * dim)
        self.proj_ir, self.proj_vi = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.temperature = nn.Parameter(torch.ones(2, heads, 1, 1))
        self.norm2_ir, self.norm2_vi = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn_ir, self.ffn_vi = FFN(dim, ffn_ratio), FFN(dim, ffn_ratio)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, temp: Tensor) -> Tensor:
        # q, k, v: [Bw, L, C] -> per head [Bw, h, d, L]: "tokens" of the attention are the channels
        q = F.normalize(_heads(q, self.heads).transpose(-2, -1), dim=-1)
        k = F.normalize(_heads(k, self.heads).transpose(-2, -1), dim=-1)
        v = _heads(v, self.heads).transpose(-2, -1)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * temp, dim=-1)  # [Bw, h, d, d]
        return _merge((attn @ v).transpose(-2, -1))  # [Bw, L, C]

    def forward(self, x_ir: Tensor, x_vi: Tensor) -> tuple[Tensor, Tensor]:
        q_ir, k_ir, v_ir = self.qkv_ir(self.norm_ir(x_ir)).chunk(3, dim=-1)
        q_vi, k_vi, v_vi = self.qkv_vi(self.norm_vi(x_vi)).chunk(3, dim=-1)
        y_ir = x_ir + self.proj_ir(self._attend(q_ir, k_vi, v_vi, self.temperature[0]))
        y_vi = x_vi + self.proj_vi(self._attend(q_vi, k_ir, v_ir, self.temperature[1]))
        y_ir = y_ir + self.ffn_ir(self.norm2_ir(y_ir))
        y_vi = y_vi + self.ffn_vi(self.norm2_vi(y_vi))
        return y_ir, y_vi


class TokenSelfAttention(nn.Module):
    """Eq. 3: token-wise multi-head self-attention inside each window, + FFN (pre-norm)."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn_ratio)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(_heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads))
        x = x + self.proj(_merge(a))
        return x + self.ffn(self.norm2(x))


class CGHA(nn.Module):
    """Eq. 4-6: cross-modal guided hybrid attention between one visual stream and the entities, + FFN.

    ``hybrid=False`` (``use_cgha`` off) keeps only Eq. 4-5 (visual queries, entity keys/values).
    """

    def __init__(self, dim: int, heads: int, ffn_ratio: float, hybrid: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)           # W_m^Q of Eq. 4
        self.kv_ent = nn.Linear(dim, 2 * dim)  # W_en^K, W_en^V of Eq. 4
        self.proj = nn.Linear(dim, dim)
        if hybrid:
            self.norm_te = nn.LayerNorm(dim)
            self.q_te = nn.Linear(dim, dim)         # Q_{m,en}^text of Eq. 6
            self.kv_vis = nn.Linear(dim, 2 * dim)   # K_{c,t}^m, V_{c,t}^m of Eq. 6
            self.proj_te = nn.Linear(dim, dim)
        else:
            self.norm_te = self.q_te = self.kv_vis = self.proj_te = None
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn_ratio)

    def forward(self, x: Tensor, ent: Tensor, ent_bias: Tensor, b: int) -> Tensor:
        """x: windowed tokens ``[B * nW, L, C]``; ent: aligned entities ``[B, M, C]``; ent_bias ``[B, 1, 1, M]``."""
        bw, L, c = x.shape
        v = self.norm(x)
        # Eq. 5 over all tokens of an image (tokens' window order does not matter here)
        q = _heads(self.q(v).reshape(b, -1, c), self.heads)
        k_e, v_e = self.kv_ent(ent).chunk(2, dim=-1)
        te = F.scaled_dot_product_attention(q, _heads(k_e, self.heads), _heads(v_e, self.heads), attn_mask=ent_bias)
        te = _merge(te).reshape(bw, L, c)  # Phi_{m,en}^text: one weighted entity vector per visual token
        out = x + self.proj(te)
        if self.q_te is not None:
            # Eq. 6 inside each window: the entity-weighted features query the visual tokens
            q2 = _heads(self.q_te(self.norm_te(te)), self.heads)
            k2, v2 = self.kv_vis(v).chunk(2, dim=-1)
            a = F.scaled_dot_product_attention(q2, _heads(k2, self.heads), _heads(v2, self.heads))
            out = out + self.proj_te(_merge(a))
        return out + self.ffn(self.norm2(out))


class ECIMBlock(nn.Module):
    """One entity-guided cross-modal interaction block: CA (Eq. 1-2) -> TA (Eq. 3) -> CGHA (Eq. 4-6) per modality."""

    def __init__(self, cfg: EGMTConfig) -> None:
        super().__init__()
        c, h, r = cfg.channels, cfg.heads, cfg.ffn_ratio
        self.window = cfg.window
        self.shift = cfg.shift_windows
        self.ca = ChannelCrossAttention(c, h, r) if cfg.use_ca else None
        self.ta_ir = TokenSelfAttention(c, h, r) if cfg.use_ta else None
        self.ta_vi = TokenSelfAttention(c, h, r) if cfg.use_ta else None
        self.cgha_ir = CGHA(c, h, r, cfg.hybrid) if cfg.text_in_ecim else None
        self.cgha_vi = CGHA(c, h, r, cfg.hybrid) if cfg.text_in_ecim else None

    def _shifted(self, fn: nn.Module, t: Tensor, b: int, h: int, w: int) -> Tensor:
        """``fn`` on windows shifted by half a window: the ``[B*nW, L, C]`` tokens of an ``h x w`` grid are put back
        in place, replicate-padded by ``window/2`` on every side, windowed, attended, and cropped back."""
        ws, s = self.window, self.window // 2
        x = window_reverse(t, ws, b, h, w).permute(0, 3, 1, 2)
        x = F.pad(x, (s, s, s, s), mode="replicate").permute(0, 2, 3, 1)
        y = window_reverse(fn(window_partition(x, ws)), ws, b, h + 2 * s, w + 2 * s)
        return window_partition(y[:, s:s + h, s:s + w].contiguous(), ws)

    def forward(self, t_ir: Tensor, t_vi: Tensor, ent: Tensor | None, ent_bias: Tensor | None,
                b: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        """Tokens ``[B*nW, L, C]`` of an ``h x w`` grid (multiples of the window) per modality."""
        if self.ca is not None:
            t_ir, t_vi = self.ca(t_ir, t_vi)
        if self.ta_ir is not None and self.ta_vi is not None:
            if self.shift:
                t_ir, t_vi = self._shifted(self.ta_ir, t_ir, b, h, w), self._shifted(self.ta_vi, t_vi, b, h, w)
            else:
                t_ir, t_vi = self.ta_ir(t_ir), self.ta_vi(t_vi)
        if self.cgha_ir is not None and self.cgha_vi is not None and ent is not None and ent_bias is not None:
            t_ir, t_vi = self.cgha_ir(t_ir, ent, ent_bias, b), self.cgha_vi(t_vi, ent, ent_bias, b)
        return t_ir, t_vi


class ResBlock(nn.Module):
    """3x3 conv - LeakyReLU - 3x3 conv + identity."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(c, c), _conv(c, c)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


_LAPLACIAN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
_HIGHPASS_ON_PHASES = {f: stencil_on_phases([_LAPLACIAN], f) for f in (2, 4)}


def highpass_phases(phases: Tensor, factor: int) -> Tensor:
    """The negative 4-neighbour Laplacian ``4x - up - down - left - right`` (replicate borders) of images held as
    their ``f x f`` sub-pixel phases ``[B, f^2 C, h, w]`` (pixel_unshuffle order), as phases: the full-resolution
    Laplacian unshuffled, without a full-resolution tensor (one grouped conv)."""
    c = int(phases.shape[1]) // (factor * factor)
    return F.conv2d(pad_phases(phases, factor), fixed_kernel(_HIGHPASS_ON_PHASES[factor], phases, c), groups=c)


class InformationPrior(nn.Module):
    """The rt decoder's prior (no parameters): the sub-pixel phases ``[B, 2 f^2, H/f, W/f]`` (``f^2`` of the weight
    logit, ``f^2`` of the residual) of :func:`egmt_ros.model.information.information_prior_half` (``f`` = 2) or
    :func:`~egmt_ros.model.information.information_prior_quarter` (``f`` = 4). A module of its own so that its
    operations have their own names in an exported graph (``/recon/prior/...``: OpenVINO keeps them in float32)."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, src: Tensor, phases: Tensor) -> Tensor:
        """``src``: the sources stacked ``[B, 2, H, W]`` (IR, visible), ``phases`` = ``F.pixel_unshuffle(src, f)``."""
        if self.factor == 4:
            logit0, r0 = information_prior_quarter(phases)
            return up_phases(torch.cat([logit0, r0], dim=1), 4)
        logit0, r0 = information_prior_half(src, phases=phases)
        return up_phases(torch.cat([logit0, r0], dim=1), 2)


class SourcePhases(nn.Module):
    """The sources stacked ``[B, 2, H, W]`` (IR, visible) and their ``f x f`` sub-pixel phases
    ``[B, 2 f^2, H/f, W/f]`` (``pixel_unshuffle``), which the decoder's first conv and the information prior share.
    A module of its own so that its exported operations are named ``/recon/phases/...``: OpenVINO keeps them, like
    the prior, in float32 (bfloat16 would round the prior's input images)."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, ir: Tensor, vi: Tensor) -> tuple[Tensor, Tensor]:
        src = torch.cat([ir, vi], dim=1)  # H and W multiples of f
        return src, F.pixel_unshuffle(src, self.factor)


class RTDecoder(nn.Module):
    """The rt variant's reconstructor: a conv path at 1/f resolution (``detail_scale`` f = 2, or 4 for the fastest
    variant) guided by the ECIM features, full-resolution output.

    ``F = clamp(s * ir + (1 - s) * vi + r + g_ir * hp(ir) + g_vi * hp(vi), 0, 1)`` with ``s = sigmoid(w)``, where
    ``w, r, g_ir, g_vi`` are predicted at 1/f resolution and brought to full resolution by a sub-pixel conv
    (PixelShuffle), and ``hp`` is the negative 4-neighbour Laplacian of each source (:func:`highpass_phases`).
    The last conv starts at zero: an untrained decoder outputs the pixel average of IR and VI, or with
    ``info_prior`` the information target (``s = sigmoid(w + logit(w_d))`` and ``r + r_0``, ``(w_d, r_0)`` of
    :func:`egmt_ros.model.information.information_prior`, computed from the inputs: no parameters; with f = 4 a
    close copy of it, :func:`~egmt_ros.model.information.information_prior_quarter`).
    """

    def __init__(self, feat_channels: int, cd: int, blocks: int, scale: int, info_prior: bool = False,
                 detail_scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        f = self.factor = detail_scale
        self.phases = SourcePhases(f)
        self.prior = InformationPrior(f) if info_prior else None  # no parameters: checkpoints are unchanged
        self.enc = _conv(2 * f * f, cd)              # on PixelUnshuffle(f)([ir, vi]): 2 f^2 channels at H/f
        self.up = nn.Conv2d(feat_channels, cd, 1)    # ECIM features (H/scale) -> cd, then bilinear to H/f
        self.blocks = nn.Sequential(*[ResBlock(cd) for _ in range(blocks)])
        self.out = _conv(cd, 4 * f * f)              # 4 maps x f x f sub-pixels
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, ir: Tensor, vi: Tensor, feats: Tensor) -> Tensor:
        f, f2 = self.factor, self.factor * self.factor
        src, phases = self.phases(ir, vi)  # [B, 2, H, W], [B, 2 f^2, H/f, W/f] (IR's f^2 phases, then VI's)
        e = self.enc(channels_last(phases))
        u = F.interpolate(self.up(feats), size=e.shape[-2:], mode="bilinear", align_corners=False)
        x = self.blocks(F.leaky_relu(e + u, 0.2))
        out = self.out(x)  # [B, 4 f^2, H/f, W/f]: 4 maps x f x f sub-pixels
        w, r = out[:, :f2], out[:, f2:2 * f2]
        if self.prior is not None:  # the information target's weight logit and residual + the learned corrections
            p = self.prior(src, phases)
            w, r = w + p[:, :f2], r + p[:, f2:]
        # the blend per sub-pixel phase, then one pixel shuffle (elementwise operations commute with it: the same
        # values as shuffling the maps first, without their full-resolution copies)
        ir_p, vi_p, hp = phases[:, :f2], phases[:, f2:], highpass_phases(phases, f)
        s = torch.sigmoid(w)
        fused = vi_p + s * (ir_p - vi_p) + r + out[:, 2 * f2:3 * f2] * hp[:, :f2] + out[:, 3 * f2:] * hp[:, f2:]
        return F.pixel_shuffle(torch.clamp(fused, 0.0, 1.0), f)


# ----------------------------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------------------------
class EGMT(nn.Module):
    """EGMT fusion network with the multi-label head; ``config.variant`` picks "paper" or "rt"."""

    def __init__(self, config: EGMTConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else paper_config()
        cfg.validate()
        self.config = cfg
        c = cfg.channels
        self.rt = cfg.variant == "rt"
        if self.rt:
            # stems: space-to-depth by `scale` (lossless, 1 -> scale^2 channels), then a 3x3 conv to C channels
            self.stem_ir = nn.Sequential(SpaceToDepth(cfg.scale), _conv(cfg.scale ** 2, c), _act())
            self.stem_vi = nn.Sequential(SpaceToDepth(cfg.scale), _conv(cfg.scale ** 2, c), _act())
            self.recon: nn.Module = RTDecoder(2 * c, cfg.detail_channels, cfg.detail_blocks, cfg.scale,
                                              cfg.info_prior, cfg.detail_scale)
        else:
            # shallow visual features ("vanilla convolution blocks"): two 3x3 convs per modality
            self.stem_ir = nn.Sequential(_conv(1, c), _act(), _conv(c, c), _act())
            self.stem_vi = nn.Sequential(_conv(1, c), _act(), _conv(c, c), _act())
            # Eq. 7: Conv3 (2C -> C), Conv3 (C -> C/2), Conv1 (C/2 -> 1); paper: 64:32, 32:16, 16:1
            self.recon = nn.Sequential(_conv(2 * c, c), _act(), _conv(c, c // 2), _act(), nn.Conv2d(c // 2, 1, 1))
        self.blocks = nn.ModuleList([ECIMBlock(cfg) for _ in range(cfg.depth)])
        if cfg.uses_text:
            self.text_align = nn.Linear(cfg.text_dim, c)
            self.null_entity = nn.Parameter(torch.zeros(1, 1, c))
            nn.init.normal_(self.null_entity, std=0.02)
        else:
            self.text_align = None
            self.null_entity = None
        if cfg.use_mt:
            self.head_joint = nn.Conv2d(2 * c, c, 1)
            self.head_fc = nn.Linear(c, cfg.num_classes)
        else:
            self.head_joint = self.head_fc = None

    # --------------------------------------------------------------------------------------------------------
    def _entities(self, ent: Tensor | None, ent_mask: Tensor | None, b: int,
                  ref: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """(aligned entities + null ``[B, N+1, C]``, validity ``[B, N+1]`` bool, attention bias ``[B,1,1,N+1]``)."""
        if self.text_align is None or self.null_entity is None:
            return None, None, None
        cfg = self.config
        if ent is None:
            ent = ref.new_zeros(b, 0, cfg.text_dim)
        if ent.dim() != 3 or ent.shape[-1] != cfg.text_dim:
            raise ValueError(f"ent must be [B, N, {cfg.text_dim}], got {tuple(ent.shape)}")
        ent = ent.to(ref.dtype)
        if ent_mask is None:
            ent_mask = torch.ones(ent.shape[0], ent.shape[1], dtype=torch.bool, device=ent.device)
        aligned = self.text_align(ent)
        null = self.null_entity.to(aligned.dtype).expand(aligned.shape[0], 1, aligned.shape[2])
        aligned = torch.cat([null, aligned], dim=1)
        ones = torch.ones(ent_mask.shape[0], 1, dtype=torch.bool, device=ent_mask.device)
        valid = torch.cat([ones, ent_mask.to(torch.bool)], dim=1)
        bias = torch.zeros(valid.shape, dtype=ref.dtype, device=ref.device)
        bias = bias.masked_fill(~valid, float("-inf"))[:, None, None, :]
        return aligned, valid, bias

    def _features(self, ir: Tensor, vi: Tensor, aligned: Tensor | None, bias: Tensor | None) -> Tensor:
        """Phi_f^sr ``[B, 2C, H/scale, W/scale]``: stems, then the ECIM on reflection-padded windows."""
        ws = self.config.window
        f_ir, f_vi = self.stem_ir(ir), self.stem_vi(vi)
        b, c, h, w = f_ir.shape
        f_ir, f_vi = reflect_pad_to_multiple(f_ir, ws), reflect_pad_to_multiple(f_vi, ws)
        hp, wp = f_ir.shape[-2], f_ir.shape[-1]
        t_ir = window_partition(f_ir.permute(0, 2, 3, 1), ws)
        t_vi = window_partition(f_vi.permute(0, 2, 3, 1), ws)
        for blk in self.blocks:
            t_ir, t_vi = blk(t_ir, t_vi, aligned, bias, b, hp, wp)
        f_ir = window_reverse(t_ir, ws, b, hp, wp).permute(0, 3, 1, 2)
        f_vi = window_reverse(t_vi, ws, b, hp, wp).permute(0, 3, 1, 2)
        return torch.cat([f_ir, f_vi], dim=1)[:, :, :h, :w]

    def _reconstruct(self, ir: Tensor, vi: Tensor, feats: Tensor) -> Tensor:
        if self.rt:
            return self.recon(ir, vi, feats)
        return torch.tanh(self.recon(feats)) * 0.5 + 0.5

    def _head(self, feats: Tensor, aligned: Tensor | None, valid: Tensor | None) -> Tensor:
        """Eq. 8: FC(GMP(joint(Phi_f^sr) * Mask(entities)))."""
        assert self.head_joint is not None and self.head_fc is not None
        v = self.head_joint(feats)  # [B, C, h, w]
        vmax = torch.amax(v, dim=(2, 3))  # [B, C]
        if aligned is None or valid is None:
            return self.head_fc(vmax)
        vmin = torch.amin(v, dim=(2, 3))
        e = aligned
        if self.training and self.config.mask_ratio > 0:
            keep = (torch.rand(e.shape, device=e.device) >= self.config.mask_ratio).to(e.dtype)
            e = e * keep  # uniform random masking of the flattened entity features
        joint = torch.maximum(e * vmax[:, None, :], e * vmin[:, None, :])  # = max over tokens of v_t * e
        joint = joint.masked_fill(~valid[:, :, None], float("-inf"))
        return self.head_fc(torch.amax(joint, dim=1))

    def _run(self, ir: Tensor, vi: Tensor, ent: Tensor | None, ent_mask: Tensor | None,
             with_head: bool) -> tuple[Tensor, Tensor | None]:
        if ir.dim() != 4 or ir.shape[1] != 1 or ir.shape != vi.shape:
            raise ValueError(f"ir and vi must both be [B, 1, H, W]; got {tuple(ir.shape)} and {tuple(vi.shape)}")
        h, w = ir.shape[-2], ir.shape[-1]
        m = self.config.pad_multiple
        ir_p, vi_p = reflect_pad_to_multiple(ir, m), reflect_pad_to_multiple(vi, m)
        aligned, valid, bias = self._entities(ent, ent_mask, ir.shape[0], ir)
        feats = self._features(ir_p, vi_p, aligned, bias)
        fused = self._reconstruct(ir_p, vi_p, feats)[:, :, :h, :w]
        logits = self._head(feats, aligned, valid) if with_head and self.head_fc is not None else None
        return fused, logits

    def forward(self, ir: Tensor, vi: Tensor, ent: Tensor | None = None,
                ent_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(fused ``[B, 1, H, W]`` in [0, 1], multi-label logits ``[B, num_classes]`` or None without use_mt)."""
        return self._run(ir, vi, ent, ent_mask, with_head=True)

    def fuse(self, ir: Tensor, vi: Tensor, ent: Tensor | None = None, ent_mask: Tensor | None = None) -> Tensor:
        """The fusion path only (no multi-label head): what inference and the ONNX export run."""
        return self._run(ir, vi, ent, ent_mask, with_head=False)[0]

    def num_params(self) -> int:
        """Number of learnable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
