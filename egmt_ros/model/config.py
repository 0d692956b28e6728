"""Hyper-parameters of the EGMT network, its losses and its training (one dataclass, JSON-friendly).

Two variants share every component (shallow convs, ECIM = channel cross-attention + token self-attention +
entity-guided CGHA, reconstructor, multi-label head):

- ``"paper"``: the network of the EGMT paper (Sec. III, Sec. IV-A): 32 shallow channels, ECIM on 16 x 16 windows at
  full resolution, reconstructor 64->32->16->1 (Eq. 7). Seconds per 640 x 480 frame on a CPU.
- ``"rt"``: the real-time design of egmt_ros: the ECIM at 1/``scale`` (8) resolution with ``window`` x ``window``
  (8 x 8) windows, a conv decoder at 1/``detail_scale`` (2, or 4 for the fastest; ``detail_channels``,
  ``detail_blocks``) and a full-resolution
  output that is a per-pixel IR/VI weighting of the sources plus a residual and detail gains (a strong skip, so
  edges survive). See :mod:`egmt_ros.model.network`.

Ablation switches (Table VIII of the paper). The paper's check marks are not independent (its "w/o TI" row keeps
CGHA, its "w/o ENT" row keeps CGHA without text), so egmt_ros defines them as follows:

- ``use_ca``: channel-axis multi-head cross-attention between IR and VI (Eq. 1-2).
- ``use_ta``: token-wise multi-head self-attention within windows (Eq. 3).
- ``use_ent``: entity features are an input at all. Off: no text alignment layer, no CGHA, and the multi-label
  head classifies from visual features alone; ``ent`` is ignored. (The paper's "w/o ENT" feeds raw captions instead
  of entities: reproduce it with ``use_ent=True`` and one caption embedding as a single entity.)
- ``use_ti``: text interaction inside the ECIM (the visual features attend to the entities, Eq. 4-5).
  Off: the entities reach only the multi-label head (Eq. 8).
- ``use_cgha``: the second, alternating half of CGHA (Eq. 6: the entity-weighted features query the visual
  features). Off (with ``use_ti`` on): only the one-directional visual -> entity attention of Eq. 4-5 remains.
- ``use_mt``: the multi-label classification head (Eq. 8) and the classification loss (Eq. 15).

egmt_ros switches (not in the paper; ``rt_config`` turns both on, checkpoints without them load with both off):

- ``info_prior``: the rt decoder's per-pixel IR weight is ``sigmoid(logit(w') + learned)``, ``w'`` the information
  weight of :mod:`egmt_ros.model.information` computed from the inputs, so an untrained rt model outputs the
  information target and training learns where to deviate (entities, what the hand-made measure gets wrong).
- ``shift_windows``: the token attention (Eq. 3) runs on windows shifted by half a window (Swin's remedy), so
  neighbouring windows of the CA and CGHA stages are bridged and the output has no window-sized blocks.

Text features: the paper encodes entities with CLIP ViT-L/14 (``text_dim`` 768). No CLIP weights exist on this
machine; the shipped encoder is all-MiniLM-L6-v2 (384-d), so both factories default to 384 and
``text_encoder`` names it. ``paper_config(text_dim=768, text_encoder="openai/clip-vit-large-patch14")`` gives the
paper's setting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
VARIANTS = ("paper", "rt")


@dataclass
class EGMTConfig:
    """Every hyper-parameter of an EGMT model and its training. Build with :func:`paper_config` / :func:`rt_config`."""

    variant: str = "paper"
    # --- network ---
    channels: int = 32            #: shallow visual feature channels per modality (paper: 32)
    window: int = 16              #: non-overlapping window size of the ECIM (paper: 16 x 16)
    heads: int = 4                #: attention heads (channel attention and token attention); must divide channels
    ffn_ratio: float = 2.0        #: hidden width of every FFN = ffn_ratio * channels
    depth: int = 1                #: number of stacked ECIM blocks
    scale: int = 1                #: the ECIM runs at 1/scale resolution (paper 1; rt_config 16); a power of 2
    detail_channels: int = 16     #: rt only: channels of the decoder (at 1/detail_scale resolution)
    detail_blocks: int = 1        #: rt only: residual 3x3 conv blocks in the decoder
    detail_scale: int = 2         #: rt only: the decoder (and its info prior) runs at 1/detail_scale resolution: 2 or 4
    info_prior: bool = False      #: rt only: the decoder's IR weight starts from the information weight (see network)
    shift_windows: bool = False   #: token attention (Eq. 3) on windows shifted by window/2 (no block seams)
    # --- text / entities ---
    text_dim: int = 384           #: entity feature dimension (768 for CLIP ViT-L/14 as the paper; 384 for MiniLM)
    text_encoder: str = MINILM_ID  #: id of the text encoder the entity features come from
    num_classes: int = 9          #: multi-label classes (paper: 9 MSRS pseudo-label categories)
    class_names: list[str] = field(default_factory=list)  #: optional names of the classes (len == num_classes)
    max_entities: int = 16        #: maximum entities per image (ONNX export uses this fixed N with a mask)
    mask_ratio: float = 0.6       #: fraction of the flattened entity features zeroed in the head while training
    # --- ablation switches (Table VIII) ---
    use_ca: bool = True
    use_ta: bool = True
    use_cgha: bool = True
    use_mt: bool = True
    use_ti: bool = True
    use_ent: bool = True
    # --- loss (Eq. 9-15) ---
    alphas: tuple[float, float, float] = (1.0, 15.0, 5.0)  #: (int, edge, ssim) weights of L_fus (Eq. 11)
    objective: str = "paper"      #: L_fus: "paper" (Eq. 12-14) or "info" (information-aware; model/losses.py)
    region_weight: float = 2.0    #: info: extra loss weight inside entity boxes (R = 1 + region_weight)
    box_boost: float = 1.0        #: info: a source's information is multiplied by 1 + box_boost in its own boxes
    det_weight: float = 0.0       #: weight of the detection-aware term L_det (0: off; model/detection_loss.py)
    focal_gamma: float = 2.0      #: focal loss focusing parameter (Eq. 15)
    tau: float = 1.0              #: temperature of the task-weight softmax (Eq. 10)
    # --- training (Sec. IV-A) ---
    lr: float = 1e-4
    batch_size: int = 4
    epochs: int = 20
    crop: int = 448               #: training patch size
    crop_stride: int = 32         #: sliding step of the training crops (paper: "a fixed sliding step", not given)

    def __post_init__(self) -> None:
        self.alphas = tuple(float(a) for a in self.alphas)  # type: ignore[assignment]
        self.class_names = list(self.class_names)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on an inconsistent configuration."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.channels % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide channels ({self.channels})")
        if self.scale < 1 or self.scale & (self.scale - 1):
            raise ValueError(f"scale must be a power of 2, got {self.scale}")
        if self.detail_scale not in (2, 4):
            raise ValueError(f"detail_scale must be 2 or 4, got {self.detail_scale}")
        if self.info_prior and self.variant != "rt":
            raise ValueError("info_prior is a part of the rt decoder (variant 'rt')")
        if self.shift_windows and self.window % 2:
            raise ValueError(f"shift_windows shifts by half a window: window must be even, got {self.window}")
        if self.variant == "paper" and self.scale != 1:
            raise ValueError("the paper variant runs the ECIM at full resolution (scale 1)")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for num_classes={self.num_classes}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if len(self.alphas) != 3:
            raise ValueError("alphas must be (int, edge, ssim)")
        if self.objective not in ("paper", "info"):
            raise ValueError(f"objective must be 'paper' or 'info', got {self.objective!r}")

    # --- derived switches: which modules exist ---
    @property
    def text_in_ecim(self) -> bool:
        """Whether the ECIM has the visual -> entity attention (Eq. 4-5)."""
        return self.use_ent and self.use_ti

    @property
    def hybrid(self) -> bool:
        """Whether the ECIM has the alternating entity -> visual attention (Eq. 6)."""
        return self.text_in_ecim and self.use_cgha

    @property
    def uses_text(self) -> bool:
        """Whether the network has a text alignment layer (any use of entity features)."""
        return self.use_ent and (self.use_ti or self.use_mt)

    @property
    def pad_multiple(self) -> int:
        """Input H and W are reflection-padded to a multiple of this (the ECIM features are then padded again to a
        multiple of ``window`` at their own resolution). rt: at least ``detail_scale`` (the decoder's phases), 4 with
        ``info_prior`` (its information blocks are 4 x 4 pixels, ``model.information.INFO_STRIDE``; a smaller
        ``scale`` would give the prior and the decoder different sizes)."""
        if self.variant != "rt":
            return self.scale
        return max(self.scale, self.detail_scale, 4 if self.info_prior else 2)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["alphas"] = list(self.alphas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EGMTConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError (a newer checkpoint format)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown EGMTConfig keys: {sorted(unknown)}")
        return cls(**d)


def paper_config(**overrides: Any) -> EGMTConfig:
    """The paper's network (Sec. III, IV-A): C=32, 16 x 16 windows at full resolution, reconstructor 64-32-16-1."""
    base: dict[str, Any] = dict(variant="paper", channels=32, window=16, heads=4, scale=1)
    base.update(overrides)
    return EGMTConfig(**base)


def rt_config(**overrides: Any) -> EGMTConfig:
    """egmt_ros's real-time variant: ECIM at 1/16 resolution with 4 x 4 windows (64 x 64 px, as 8 x 8 at 1/8) and 16
    channels, a quarter-resolution conv decoder with the information prior (``detail_scale`` 4), trained with the
    information-aware objective (alphas 30, 10, 1 for int, grad, ssim; docs/model.md). The previous default (run D:
    ``scale=8, window=8, detail_scale=2``) took 1.7 x its time for the same checks (docs/model.md, "run E")."""
    base: dict[str, Any] = dict(variant="rt", channels=16, window=4, heads=2, scale=16, detail_scale=4,
                                detail_channels=16, detail_blocks=1, info_prior=True, shift_windows=True,
                                objective="info", alphas=(30.0, 10.0, 1.0))
    base.update(overrides)
    return EGMTConfig(**base)
