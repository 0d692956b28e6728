"""TeRF-style text-driven, region-aware fusion effects, in real time (ROS-free).

TeRF (Text-driven and Region-aware Flexible VIF, ACM MM 2024; ../shared/seeds/002_*.txt) fine-tunes networks
per command (6-33 s per image). egmt_ros reaches the same *directions* with closed-form per-frame effects:

- ``ir`` (infrared inclination, TeRF Sec. 2.4.1, Eq. 12-13): TeRF keeps the gradient loss and pulls intensity
  and structure toward the IR image. Here: the fused image's low-pass base is moved toward the IR base,
  its finest details are kept: ``E = F + s (B(IR) - B(F))`` with ``B`` a two-pass 3x3 box low-pass
  (small, so that small hot targets move toward IR too; texture finer than that stays F's).
- ``vi`` (visible inclination, Eq. 10-11): the same toward the visible luma.
- ``brighten`` / ``darken`` (illumination, Sec. 2.4.2, Retinex ``I = R * L``): illumination ``L`` = edge-aware
  smoothing of ``F`` (self-guided filter, radius 12, eps 0.01), reflectance ``R = F / L`` kept, ``L`` gamma-corrected:
  to brighten ``L' = L ** g`` with ``g = 1 / (1 + s)`` (TeRF also gamma-corrects L); to darken the highlights of
  the illumination are compressed, ``L' = L (1 - s L / 2)``, which lowers glare and over-exposure most where
  the illumination is highest (a plain gamma > 1 darkened shadows too and lowered SSIM against the visible image
  on RoadScene: 0.577 vs 0.596 on 45 pairs). ``E = R * L'``.
- ``denoise`` (Sec. 2.4.3): a self-guided filter (He et al. 2013) with ``eps = (0.04 s)^2``, radius 2 + s, an
  edge-preserving smoother that removes Gaussian noise of about that standard deviation.

Strength ``s`` grows with repetition (Sec. 2.4.4: repeating a command strengthens it step by step up to a bound):
``s = level * step`` with ``level <= max_level``.

Merging (TeRF Eq. 5): every active effect i has a soft mask M_i in [0, 1]; effects are applied in the order they
were commanded, each as ``out = M_i * E_i(out) + (1 - M_i) * out``. Eq. 5 written as a sum over masks adds
``(1 - M_i) F`` once per mask; the sequential form is its reading for non-overlapping masks and stays in range
where masks overlap. Pixels where every mask is 0 are exactly the plain fusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


TASKS = ("ir", "vi", "brighten", "darken", "denoise")
#: Effect strength per repetition level and the highest level (TeRF Sec. 2.4.4's bound).
STEP = {"ir": 0.35, "vi": 0.35, "brighten": 0.5, "darken": 0.5, "denoise": 1.0}
MAX_LEVEL = 3
#: Active effects at most (each costs per frame; 1000 effects cost 123 ms a frame): a new one beyond is refused.
MAX_EFFECTS = 8


class EffectLimitError(ValueError):
    """A new effect while ``MAX_EFFECTS`` are active."""


def low_pass(img: np.ndarray, radius: int) -> np.ndarray:
    """Two passes of a (2r+1)^2 box filter (a cheap near-Gaussian low-pass), reflect borders."""
    k = (2 * radius + 1, 2 * radius + 1)
    return cv2.blur(cv2.blur(img, k, borderType=cv2.BORDER_REFLECT), k, borderType=cv2.BORDER_REFLECT)


def effect(task: str, strength: float, fused: np.ndarray, ir: np.ndarray, vi: np.ndarray,
           base_radius: int = 1, illumination_radius: int = 12) -> np.ndarray:
    """The whole-frame effect image ``E`` of ``task`` at ``strength`` (float32 [0, 1] in and out)."""
    f = fused.astype(np.float32, copy=False)
    if task in ("ir", "vi"):
        src = ir if task == "ir" else vi
        out = f + min(strength, 1.0) * (low_pass(src, base_radius) - low_pass(f, base_radius))
    elif task in ("brighten", "darken"):
        illum = illumination(f, illumination_radius)
        if task == "brighten":
            out = f * cv2.pow(illum, 1.0 / (1.0 + strength) - 1.0)  # R * L^g, g = 1 / (1 + s)
        else:
            out = f * (1.0 - 0.5 * strength * illum)  # R * L', L' = L (1 - s L / 2): highlights compressed most
    elif task == "denoise":
        level = max(strength, 0.25)
        out = self_guided(f, int(round(2 + level)), (0.04 * level) ** 2)
    else:
        raise ValueError(f"unknown effect task {task!r}; known: {', '.join(TASKS)}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def self_guided(img: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Guided filter with the image as its own guide (He, Sun, Tang, TPAMI 2013), 4 normalised box filters
    with reflected borders: ``a = var / (var + eps)``, ``b = (1 - a) mean``, ``q = mean(a) I + mean(b)``."""
    k = (2 * radius + 1, 2 * radius + 1)
    mean = cv2.blur(img, k, borderType=cv2.BORDER_REFLECT)
    var = cv2.blur(img * img, k, borderType=cv2.BORDER_REFLECT) - mean * mean
    a = var / (var + np.float32(eps))
    b = mean - a * mean
    return cv2.blur(a, k, borderType=cv2.BORDER_REFLECT) * img + cv2.blur(b, k, borderType=cv2.BORDER_REFLECT)


def illumination(f: np.ndarray, radius: int, scale: int = 4) -> np.ndarray:
    """Retinex illumination map: a self-guided filter (eps 0.01) computed at 1/``scale`` resolution
    (illumination is smooth, so this loses nothing visible and costs ~1/16), upsampled, floored at 1e-3."""
    h, w = f.shape
    if min(h, w) >= 8 * scale:
        small = cv2.resize(f, (w // scale, h // scale), interpolation=cv2.INTER_AREA)
        illum = cv2.resize(self_guided(small, max(1, radius // scale), 0.01), (w, h),
                           interpolation=cv2.INTER_LINEAR)
    else:
        illum = self_guided(f, radius, 0.01)
    return np.maximum(illum, 1e-3)


def box_mask(shape: tuple[int, int], boxes: list[tuple[float, float, float, float]], feather: float) -> np.ndarray:
    """Soft mask of the union of xyxy boxes: 1 inside, a linear ramp over ``feather`` px outside, exactly 0 beyond."""
    h, w = shape
    mask = np.zeros((h, w), np.float32)
    xs = np.arange(w, dtype=np.float32) + 0.5
    ys = np.arange(h, dtype=np.float32) + 0.5
    f = max(float(feather), 1e-6)
    for x1, y1, x2, y2 in boxes:
        mx = np.clip(1.0 - np.maximum(np.maximum(x1 - xs, xs - x2), 0.0) / f, 0.0, 1.0)
        my = np.clip(1.0 - np.maximum(np.maximum(y1 - ys, ys - y2), 0.0) / f, 0.0, 1.0)
        c0, c1 = np.flatnonzero(mx).min(initial=w), np.flatnonzero(mx).max(initial=-1) + 1
        r0, r1 = np.flatnonzero(my).min(initial=h), np.flatnonzero(my).max(initial=-1) + 1
        if c0 < c1 and r0 < r1:
            np.maximum(mask[r0:r1, c0:c1], np.outer(my[r0:r1], mx[c0:c1]), out=mask[r0:r1, c0:c1])
    return mask


@dataclass
class Region:
    """What an effect applies to: ``everything``, ``background`` or a set of detector class names."""

    kind: str                       # "everything" | "background" | "classes"
    classes: tuple[str, ...] = ()

    def key(self) -> str:
        return self.kind if self.kind != "classes" else ",".join(sorted(self.classes))


@dataclass
class Detections:
    """The latest detections (class name, xyxy box) and the stamp of the frame they came from."""

    stamp: float = 0.0
    boxes: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)


@dataclass
class ActiveEffect:
    task: str
    region: Region
    level: int = 1

    @property
    def strength(self) -> float:
        return self.level * STEP[self.task]

    def describe(self) -> str:
        return f"{self.task} x{self.level} on {self.region.key()}"


class EffectStack:
    """The operator's active effects; a post-fusion step ``(fused, ir, vi, stamp) -> fused``.

    ``apply_command`` adds or strengthens an effect (same task + same region -> level + 1 up to MAX_LEVEL),
    ``reset`` clears all. Effects on regions of classes need detections: with none in view they do nothing.
    At most ``max_effects`` are active: a new one beyond raises :class:`EffectLimitError` (strengthening still works).
    """

    def __init__(self, feather: float = 12.0, max_detection_age: float = 1.0, max_effects: int = MAX_EFFECTS) -> None:
        self.max_effects = max_effects
        self.feather = feather
        self.max_detection_age = max_detection_age
        self.effects: list[ActiveEffect] = []
        self.detections = Detections()

    def apply_command(self, task: str, region: Region, steps: int = 1) -> ActiveEffect:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        for e in self.effects:
            if e.task == task and e.region.key() == region.key():
                e.level = min(MAX_LEVEL, e.level + steps)
                return e
        if len(self.effects) >= self.max_effects:
            raise EffectLimitError(f"{len(self.effects)} effects are active (at most {self.max_effects}): "
                                   "send 'reset' first")
        e = ActiveEffect(task, region, min(MAX_LEVEL, max(1, steps)))
        self.effects.append(e)
        return e

    def reset(self) -> None:
        self.effects.clear()

    def set_detections(self, dets: Detections) -> None:
        self.detections = dets

    def describe(self) -> list[str]:
        return [e.describe() for e in self.effects]

    def mask(self, region: Region, shape: tuple[int, int], stamp: float) -> np.ndarray | None:
        """The soft mask of ``region`` for a frame at ``stamp`` (None = whole frame)."""
        if region.kind == "everything":
            return None
        fresh = abs(stamp - self.detections.stamp) <= self.max_detection_age
        boxes = [b for c, b in self.detections.boxes if fresh and (region.kind == "background" or c in region.classes)]
        objects = box_mask(shape, boxes, self.feather)
        return 1.0 - objects if region.kind == "background" else objects

    def __call__(self, fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, stamp: float = 0.0) -> np.ndarray:
        out = fused
        for e in list(self.effects):
            m = self.mask(e.region, fused.shape, stamp)
            if m is None:
                out = effect(e.task, e.strength, out, ir, vi)
                continue
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            if rows.size == 0:
                continue
            # compute the effect only around the mask (plus a margin for the filters' support)
            pad = 16
            r0, r1 = max(0, rows[0] - pad), min(m.shape[0], rows[-1] + 1 + pad)
            c0, c1 = max(0, cols[0] - pad), min(m.shape[1], cols[-1] + 1 + pad)
            win = (slice(r0, r1), slice(c0, c1))
            eff = effect(e.task, e.strength, out[win], ir[win], vi[win])
            out = out.copy()
            out[win] = (m[win] * eff + (1.0 - m[win]) * out[win]).astype(np.float32)
        return out
