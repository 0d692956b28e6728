"""Training data for EGMT: IR/visible pairs from folders, videos and sequences, patch sampling, entity annotations.

Sources (every one becomes a list of :class:`PairSample`):

- a pair folder ``DIR/ir/NAME.ext`` + ``DIR/vi/NAME.ext`` (``list_pairs``);
- a sequence folder ``DIR/<seq>/{ir,vi}/NAME.ext`` (M3SVD): sample names are ``<seq>/<NAME>``;
- a video folder ``DIR/{infrared,visible}/NAME.mp4`` (M2VD): every ``every``-th frame is decoded with
  ``cv2.VideoCapture`` and cached as PNG under :func:`frames_cache_dir` (outside the repository); sample names are
  ``<video>/f<frame index, 6 digits>``.

The *scene* of a sample (its sequence or video, else its name) decides the deterministic train/validation split
(:func:`split_samples`), so frames of one video never land on both sides.

The test set ``tno42`` is excluded from training by default (it is the benchmark set) and ``llvip*`` too (its terms
forbid shipping anything made from it); :func:`collect_samples` refuses them unless asked. The videos of
:data:`HELD_OUT_VIDEOS` (M2VD ``0117_1620``, the smoke clip the person-count check runs on) are skipped from video
folders entirely (not even validation) unless the test data is allowed.

Entity annotations (the JSON written by the annotation CLI or :mod:`egmt_ros.data.autolabel`)::

    {"version": 1, "classes": [...], "text_encoder": "...",
     "records": [{"name": STEM, "dataset": DIRNAME, "ir": relpath, "vi": relpath,
                  "captions": {"ir": str|None, "vi": str|None},
                  "entities": [{"text": str, "source": "detector"|"caption"|"vocabulary", "score": float}],
                  "labels": [0/1 per class]}]}

A record matches a sample by ``(dataset, name)``. Its entity texts become text features through the text encoder at
load time (each distinct text is encoded once), its ``labels`` a multi-hot vector over the dataset's class list
(remapped by class name when the file's class list differs).

Records written by :mod:`egmt_ros.data.autolabel` also carry detector ``boxes`` (``{"class", "score", "image":
"ir"|"vi", "xyxy"}`` in pixels of a pair of ``size`` ``[H, W]``); :func:`entity_region_maps` turns them into two
masks (boxes found in IR, boxes found in visible) that the information-aware loss uses as region weights.

Items of :class:`PairFolderDataset` are dicts of tensors: ``ir`` [1, h, w], ``vi_y`` [1, h, w] (float in [0, 1]),
``regions`` [2, h, w] (the entity-box masks of the same crop, zeros without boxes),
``ent`` [N, D] float, ``ent_mask`` [N] bool (True = a real entity), ``labels`` [C] float, ``has_labels`` scalar
bool (the sample had an annotation record), plus ``name`` (str). :func:`collate_pairs` pads N across a batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from egmt_ros.core.color import split_luma
from egmt_ros.core.images import IMAGE_EXTS, list_pairs, load_pair

LOG = logging.getLogger(__name__)

#: Folder names (lower case, prefix match) never used for training unless explicitly allowed.
TEST_SETS = ("tno",)
#: Folder names (lower case, prefix match) whose terms forbid shipping models made from them.
RESTRICTED_SETS = ("llvip",)
#: Default sampling step of video frames.
VIDEO_EVERY = 15
#: Video names (stems) kept out of training and validation: the clean evaluation clips.
HELD_OUT_VIDEOS = ("0117_1620",)
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")


@dataclass(frozen=True)
class PairSample:
    """One registered IR/visible pair on disk."""

    dataset: str   #: name of the source folder (e.g. ``roadscene``, ``m2vd``)
    name: str      #: unique name within the dataset (file stem, ``seq/stem`` or ``video/fNNNNNN``)
    ir: Path       #: IR image file
    vi: Path       #: visible image file
    scene: str     #: split group: the sequence or video the sample comes from, else its name

    @property
    def key(self) -> tuple[str, str]:
        """``(dataset, name)``: how annotation records are matched."""
        return self.dataset, self.name


def frames_cache_dir() -> Path:
    """Where decoded video frames are cached: ``$EGMT_CACHE/frames`` or ``~/.cache/egmt_ros/frames``."""
    base = os.environ.get("EGMT_CACHE") or str(Path.home() / ".cache" / "egmt_ros")
    return Path(base) / "frames"


# --------------------------------------------------------------------------- sources

def _is_pair_folder(d: Path) -> bool:
    return (d / "ir").is_dir() and (d / "vi").is_dir()


def _is_video_folder(d: Path) -> bool:
    return (d / "infrared").is_dir() and (d / "visible").is_dir()


def pair_folder_samples(folder: str | Path, dataset: str | None = None, prefix: str = "") -> list[PairSample]:
    """Samples of a pair folder (``ir/`` + ``vi/``); ``prefix`` (a sequence name) groups them into one scene."""
    root = Path(folder)
    ds = dataset or root.name
    out = []
    for stem, ir, vi in list_pairs(root):
        name = f"{prefix}/{stem}" if prefix else stem
        out.append(PairSample(ds, name, ir, vi, prefix or stem))
    return out


def sequence_samples(folder: str | Path) -> list[PairSample]:
    """Samples of a folder of sequences ``<seq>/{ir,vi}/`` (M3SVD); the scene is the sequence."""
    root = Path(folder)
    out: list[PairSample] = []
    for seq in sorted(p for p in root.iterdir() if p.is_dir() and _is_pair_folder(p)):
        out.extend(pair_folder_samples(seq, dataset=root.name, prefix=seq.name))
    if not out:
        raise FileNotFoundError(f"no <seq>/ir + <seq>/vi sequences in {root}")
    return out


def extract_video_frames(ir_video: str | Path, vi_video: str | Path, every: int = VIDEO_EVERY,
                         cache_dir: str | Path | None = None, dataset: str = "videos") -> list[PairSample]:
    """Decode every ``every``-th frame of a synchronised IR/visible video pair into cached PNGs.

    Frames go to ``cache_dir/<dataset>/<video>/{ir,vi}/fNNNNNN.png`` (default :func:`frames_cache_dir`); frames
    already cached are not decoded again. IR frames are stored grey (the luma of the decoded frame). The pair stops
    at the shorter video.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    ir_video, vi_video = Path(ir_video), Path(vi_video)
    video = ir_video.stem
    out_dir = Path(cache_dir) if cache_dir is not None else frames_cache_dir()
    out_dir = out_dir / dataset / video
    ir_dir, vi_dir = out_dir / "ir", out_dir / "vi"
    stamp = out_dir / f"done_every{every}.json"
    if stamp.is_file():
        idx = json.loads(stamp.read_text())["frames"]
    else:
        ir_dir.mkdir(parents=True, exist_ok=True)
        vi_dir.mkdir(parents=True, exist_ok=True)
        cap_ir, cap_vi = cv2.VideoCapture(str(ir_video)), cv2.VideoCapture(str(vi_video))
        if not cap_ir.isOpened() or not cap_vi.isOpened():
            raise FileNotFoundError(f"cannot open video pair {ir_video} / {vi_video}")
        idx, i = [], 0
        try:
            while True:
                ok_ir, f_ir = cap_ir.read()
                ok_vi, f_vi = cap_vi.read()
                if not (ok_ir and ok_vi):
                    break
                if i % every == 0:
                    name = f"f{i:06d}.png"
                    grey = cv2.cvtColor(f_ir, cv2.COLOR_BGR2GRAY) if f_ir.ndim == 3 else f_ir
                    cv2.imwrite(str(ir_dir / name), grey)
                    cv2.imwrite(str(vi_dir / name), f_vi)
                    idx.append(i)
                i += 1
        finally:
            cap_ir.release()
            cap_vi.release()
        stamp.write_text(json.dumps({"frames": idx, "ir": str(ir_video), "vi": str(vi_video)}))
    return [PairSample(dataset, f"{video}/f{i:06d}", ir_dir / f"f{i:06d}.png", vi_dir / f"f{i:06d}.png", video)
            for i in idx]


def video_folder_samples(folder: str | Path, every: int = VIDEO_EVERY, cache_dir: str | Path | None = None,
                         exclude: Sequence[str] = HELD_OUT_VIDEOS) -> list[PairSample]:
    """Frame samples of every video pair ``infrared/NAME.mp4`` + ``visible/NAME.mp4`` of a folder (M2VD), except
    the videos named in ``exclude``."""
    root = Path(folder)
    vis = {p.stem: p for p in (root / "visible").iterdir() if p.suffix.lower() in VIDEO_EXTS}
    out: list[PairSample] = []
    for ir in sorted(p for p in (root / "infrared").iterdir() if p.suffix.lower() in VIDEO_EXTS):
        if ir.stem in vis and ir.stem not in exclude:
            out.extend(extract_video_frames(ir, vis[ir.stem], every, cache_dir, dataset=root.name))
    if not out:
        raise FileNotFoundError(f"no infrared/NAME + visible/NAME video pairs in {root}")
    return out


def folder_samples(folder: str | Path, every: int = VIDEO_EVERY, cache_dir: str | Path | None = None,
                   exclude: Sequence[str] = HELD_OUT_VIDEOS) -> list[PairSample]:
    """Samples of any supported source folder (pair folder, sequence folder or video folder without the videos
    of ``exclude``)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no such data folder: {root}")
    if _is_pair_folder(root):
        return pair_folder_samples(root)
    if _is_video_folder(root):
        return video_folder_samples(root, every, cache_dir, exclude)
    return sequence_samples(root)


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name.lower().startswith(p) for p in prefixes)


def collect_samples(folders: Iterable[str | Path], every: int = VIDEO_EVERY, cache_dir: str | Path | None = None,
                    allow_test: bool = False, allow_restricted: bool = False) -> list[PairSample]:
    """Samples of all ``folders``, refusing the test set (tno*) and restricted sets (llvip*) unless allowed, and
    without the held-out videos (:data:`HELD_OUT_VIDEOS`) unless ``allow_test``.

    Raises ValueError naming a refused folder (better than silently training on the benchmark set).
    """
    out: list[PairSample] = []
    for f in folders:
        here = Path(f).resolve()
        name = next((n for n in (here.name, here.parent.name)  # the folder or its parent (llvip_subset/train)
                     if _matches(n, TEST_SETS + RESTRICTED_SETS)), here.name)
        if not allow_test and _matches(name, TEST_SETS):
            raise ValueError(f"{f} is the test set ({name}); training on it would invalidate the benchmark "
                             "(pass allow_test / --allow-test-data to force it)")
        if not allow_restricted and _matches(name, RESTRICTED_SETS):
            raise ValueError(f"{f} ({name}) may not be shipped inside the product (LLVIP terms); "
                             "pass allow_restricted / --allow-restricted-data to use it anyway")
        out.extend(folder_samples(f, every, cache_dir, () if allow_test else HELD_OUT_VIDEOS))
    return out


# --------------------------------------------------------------------------- split

def _unit_hash(text: str) -> float:
    """Deterministic hash of a string into [0, 1) (md5, independent of Python's hash salt)."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:12], 16) / float(16 ** 12)


def split_samples(samples: Sequence[PairSample], val_fraction: float,
                  salt: str = "egmt") -> tuple[list[PairSample], list[PairSample]]:
    """Deterministic (train, val) split by a hash of each sample's ``dataset/scene``.

    A scene goes to validation when its hash is below ``val_fraction``. If that leaves validation empty while
    ``val_fraction > 0`` and there are at least two scenes, the scene with the smallest hash goes to validation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return list(samples), []
    h = {s.key: _unit_hash(f"{salt}:{s.dataset}/{s.scene}") for s in samples}
    val = [s for s in samples if h[s.key] < val_fraction]
    scenes = {(s.dataset, s.scene) for s in samples}
    if not val and len(scenes) > 1:
        best = min(scenes, key=lambda sc: _unit_hash(f"{salt}:{sc[0]}/{sc[1]}"))
        val = [s for s in samples if (s.dataset, s.scene) == best]
    vkeys = {s.key for s in val}
    return [s for s in samples if s.key not in vkeys], val


# --------------------------------------------------------------------------- annotations

def load_annotations(paths: Iterable[str | Path]) -> tuple[list[str], dict[tuple[str, str], dict[str, Any]], str]:
    """Read annotation files: ``(classes, {(dataset, name): record}, text_encoder id)``.

    The class list is the first file's; records of later files with another class list are remapped by name
    (classes unknown to the first list are dropped). Later files override earlier records of the same key.
    """
    classes: list[str] = []
    encoder = ""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for p in paths:
        doc = json.loads(Path(p).read_text())
        if doc.get("version") != 1:
            raise ValueError(f"{p}: unsupported annotation version {doc.get('version')!r}")
        file_classes = list(doc["classes"])
        if not classes:
            classes, encoder = file_classes, str(doc.get("text_encoder", ""))
        for rec in doc["records"]:
            rec = dict(rec)
            labels = rec.get("labels") or [0] * len(file_classes)
            if len(labels) != len(file_classes):
                raise ValueError(f"{p}: record {rec.get('name')} has {len(labels)} labels for "
                                 f"{len(file_classes)} classes")
            by_name = dict(zip(file_classes, labels))
            rec["labels"] = [int(bool(by_name.get(c, 0))) for c in classes]
            records[(str(rec["dataset"]), str(rec["name"]))] = rec
    return classes, records, encoder


def entity_texts(record: dict[str, Any] | None, max_entities: int | None = None) -> list[str]:
    """The distinct entity texts of a record (case-insensitive de-duplication, order kept, best score first)."""
    if not record:
        return []
    ents = sorted(record.get("entities", []), key=lambda e: -float(e.get("score", 0.0)))
    seen, out = set(), []
    for e in ents:
        t = str(e["text"]).strip()
        if t and t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out[:max_entities] if max_entities else out


class TextFeatureCache:
    """Text features of entity labels, each label encoded once (``encoder.encode(list[str]) -> [N, D]``)."""

    def __init__(self, encoder: Any, dim: int | None = None) -> None:
        self.encoder = encoder
        self.dim = int(dim if dim is not None else getattr(encoder, "dim"))
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32 features (``[0, dim]`` for no texts)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            feats = np.asarray(self.encoder.encode(missing), dtype=np.float32).reshape(len(missing), -1)
            if feats.shape[1] != self.dim:
                raise ValueError(f"text encoder gave {feats.shape[1]}-d features, expected {self.dim}")
            self._cache.update(zip(missing, feats))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[t] for t in texts]).astype(np.float32)


def entity_region_maps(record: dict[str, Any] | None, h: int, w: int) -> np.ndarray:
    """``[2, h, w]`` float32 masks of a record's detector boxes on an ``h x w`` image: channel 0 the boxes found in
    IR, channel 1 those found in visible (1 inside a box, 0 outside; scaled from the record's ``size`` when the
    image size differs). All zeros for a record without boxes."""
    out = np.zeros((2, h, w), np.float32)
    if not record or not record.get("boxes"):
        return out
    rh, rw = record.get("size") or (h, w)
    sy, sx = h / float(rh), w / float(rw)
    for b in record["boxes"]:
        x1, y1, x2, y2 = b["xyxy"]
        c = 0 if b.get("image") == "ir" else 1
        r0, r1 = max(0, int(np.floor(y1 * sy))), min(h, int(np.ceil(y2 * sy)))
        c0, c1 = max(0, int(np.floor(x1 * sx))), min(w, int(np.ceil(x2 * sx)))
        out[c, r0:r1, c0:c1] = 1.0
    return out


def degrade_visible(vi: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A visible luma crop (float [0, 1]) degraded as smoke / fog, darkness or glare would, and the per-pixel trust
    left in its detections (1 - the veil's opacity; 0.2 in darkness) for the visible entity-box mask.

    - smoke / fog (60 %): ``vi (1 - a) + A a`` with an airlight ``A`` in [0.55, 0.95] and an opacity map ``a``
      smooth over the crop (a random 3 x 3 to 6 x 6 grid of values up to ``a_max`` in [0.6, 0.97], bicubic);
    - darkness (25 %): ``vi * g`` with ``g`` in [0.03, 0.25] plus sensor noise (std 0.01);
    - glare (15 %): a saturated Gaussian blob (sigma 1/6 to 1/3 of the crop) blended towards white.
    The training target is computed from the degraded image, so the network learns to take what the veil hides
    from the IR image (the information-aware objective sees the visible information drop)."""
    h, w = vi.shape
    kind = rng.random()
    if kind < 0.6:
        g = int(rng.integers(3, 7))
        grid = rng.uniform(0.0, rng.uniform(0.6, 0.97), (g, g)).astype(np.float32)
        a = np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
        air = float(rng.uniform(0.55, 0.95))
        return (vi * (1.0 - a) + air * a).astype(np.float32), (1.0 - a).astype(np.float32)
    if kind < 0.85:
        dark = vi * float(rng.uniform(0.03, 0.25)) + rng.normal(0.0, 0.01, vi.shape)
        return np.clip(dark, 0.0, 1.0).astype(np.float32), np.full_like(vi, 0.2, dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx, sig = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1 / 6, 1 / 3) * max(h, w)
    a = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig ** 2)).astype(np.float32)
    return np.clip(vi * (1.0 - a) + a, 0.0, 1.0).astype(np.float32), (1.0 - a).astype(np.float32)


# --------------------------------------------------------------------------- patches

def pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad an ``H x W`` image at the bottom/right to at least ``h x w`` (repeats reflection if needed)."""
    while img.shape[0] < h or img.shape[1] < w:
        ph = min(max(h - img.shape[0], 0), img.shape[0] - 1)
        pw = min(max(w - img.shape[1], 0), img.shape[1] - 1)
        if ph == 0 and pw == 0:  # 1-pixel image: nothing to reflect
            img = np.pad(img, ((0, max(h - img.shape[0], 0)), (0, max(w - img.shape[1], 0))), mode="edge")
            break
        img = np.pad(img, ((0, ph), (0, pw)), mode="reflect")
    return img


def sliding_windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of ``crop x crop`` windows with a fixed step that cover an ``h x w`` image.

    The last window in each direction is aligned with the border, so every pixel is covered; an image smaller than
    the crop gives the single window (0, 0) (the image is reflect-padded).
    """
    def starts(n: int) -> list[int]:
        if n <= crop:
            return [0]
        s = list(range(0, n - crop + 1, stride))
        if s[-1] != n - crop:
            s.append(n - crop)
        return s
    return [(y, x) for y in starts(h) for x in starts(w)]


class PairFolderDataset(Dataset):
    """IR/visible training patches with entity features and multi-label targets.

    ``mode``:
      - ``"random"``: one random ``crop x crop`` patch (plus a random horizontal flip) per image and access;
        ``repeats`` accesses per image and epoch (cheap CPU training); with probability ``degrade`` the visible
        crop is veiled, darkened or glared (:func:`degrade_visible`);
      - ``"sliding"``: every window of a fixed sliding step ``stride`` (the paper's 448 crops), no flip;
      - ``"full"``: the whole image (batch size 1 or equal sizes; for validation).
    Images are decoded once and kept in memory as uint8 (``cache_images``).
    """

    def __init__(self, samples: Sequence[PairSample], crop: int = 448, mode: str = "random", stride: int = 32,
                 repeats: int = 1, classes: Sequence[str] = (),
                 records: dict[tuple[str, str], dict[str, Any]] | None = None,
                 text_features: Callable[[Sequence[str]], np.ndarray] | None = None, text_dim: int = 384,
                 max_entities: int = 16, seed: int = 0, cache_images: bool = True, degrade: float = 0.0) -> None:
        if mode not in ("random", "sliding", "full"):
            raise ValueError(f"mode must be random, sliding or full, got {mode!r}")
        if not samples:
            raise ValueError("no samples")
        self.samples = list(samples)
        self.crop, self.mode, self.stride, self.repeats = int(crop), mode, int(stride), int(repeats)
        self.degrade = float(degrade)
        self.classes = list(classes)
        self.records = records or {}
        self.text_dim = int(text_dim)
        self.max_entities = max_entities
        self.rng = np.random.default_rng(seed)
        self.cache_images = cache_images
        self._images: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # entity features and labels per sample, computed once
        self._ent: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._has: list[bool] = []
        if text_features is not None:  # encode every distinct entity text once, in one batch
            unique = list(dict.fromkeys(t for s in self.samples
                                        for t in entity_texts(self.records.get(s.key), max_entities)))
            if unique:
                text_features(unique)
        for s in self.samples:
            rec = self.records.get(s.key)
            texts = entity_texts(rec, max_entities) if text_features is not None else []
            # without a text encoder (a model without entity input, use_ent off) the entities are dropped; the
            # labels and the entity boxes (region weights) still come from the annotation
            self._ent.append(text_features(texts) if texts else np.zeros((0, self.text_dim), np.float32))
            lab = np.zeros(len(self.classes), np.float32)
            if rec is not None:
                lab[:] = np.asarray(rec["labels"], np.float32)[: len(self.classes)]
            self._labels.append(lab)
            self._has.append(rec is not None)
        self._index: list[tuple[int, int, int]] = []  # (sample, y, x) for sliding mode
        if mode == "sliding":
            for i, s in enumerate(self.samples):
                h, w = self._image(i)[0].shape
                self._index.extend((i, y, x) for y, x in sliding_windows(h, w, self.crop, self.stride))

    # -- helpers
    def _image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(IR uint8, visible luma uint8) of sample ``i``."""
        if i in self._images:
            return self._images[i]
        ir, vi = load_pair(self.samples[i].ir, self.samples[i].vi)
        y, _ = split_luma(vi)
        pair = (np.clip(np.rint(ir * 255), 0, 255).astype(np.uint8), np.clip(np.rint(y * 255), 0, 255).astype(np.uint8))
        if self.cache_images:
            self._images[i] = pair
        return pair

    @property
    def num_labelled(self) -> int:
        """How many samples have an annotation record."""
        return int(sum(self._has))

    def label_matrix(self) -> np.ndarray:
        """``[num samples, C]`` multi-hot labels of the annotated samples (for class weights)."""
        rows = [lab for lab, h in zip(self._labels, self._has) if h]
        return np.stack(rows) if rows else np.zeros((0, len(self.classes)), np.float32)

    def __len__(self) -> int:
        if self.mode == "sliding":
            return len(self._index)
        return len(self.samples) * (self.repeats if self.mode == "random" else 1)

    def __getitem__(self, k: int) -> dict[str, Any]:
        if self.mode == "sliding":
            i, y, x = self._index[k]
        else:
            i = k % len(self.samples)
        ir, vi = self._image(i)
        reg = entity_region_maps(self.records.get(self.samples[i].key), *ir.shape)
        if self.mode != "full":
            ir, vi = pad_to(ir, self.crop, self.crop), pad_to(vi, self.crop, self.crop)
            reg = np.stack([pad_to(m, self.crop, self.crop) for m in reg])
            if self.mode == "random":
                h, w = ir.shape
                y = int(self.rng.integers(0, h - self.crop + 1))
                x = int(self.rng.integers(0, w - self.crop + 1))
            ir = ir[y:y + self.crop, x:x + self.crop]
            vi = vi[y:y + self.crop, x:x + self.crop]
            reg = reg[:, y:y + self.crop, x:x + self.crop]
            if self.mode == "random" and self.rng.random() < 0.5:
                ir, vi, reg = ir[:, ::-1], vi[:, ::-1], reg[:, :, ::-1]
        ir = np.ascontiguousarray(ir, dtype=np.float32) / 255.0
        vi = np.ascontiguousarray(vi, dtype=np.float32) / 255.0
        reg = np.array(reg, dtype=np.float32)
        if self.mode == "random" and self.degrade > 0 and self.rng.random() < self.degrade:
            vi, trust = degrade_visible(vi, self.rng)
            reg[1] *= trust
        ent = torch.from_numpy(self._ent[i])
        return {"ir": torch.from_numpy(ir)[None], "vi_y": torch.from_numpy(vi)[None],
                "regions": torch.from_numpy(reg), "ent": ent,
                "ent_mask": torch.ones(ent.shape[0], dtype=torch.bool),
                "labels": torch.from_numpy(self._labels[i]), "has_labels": torch.tensor(self._has[i]),
                "name": f"{self.samples[i].dataset}/{self.samples[i].name}"}


def collate_pairs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of items; entity features are zero-padded to the batch's largest N (at least 1) and
    ``ent_mask`` marks the real ones (True)."""
    n = max(1, max(int(it["ent"].shape[0]) for it in items))
    d = int(items[0]["ent"].shape[1])
    ent = torch.zeros(len(items), n, d)
    mask = torch.zeros(len(items), n, dtype=torch.bool)
    for b, it in enumerate(items):
        k = int(it["ent"].shape[0])
        ent[b, :k] = it["ent"]
        mask[b, :k] = True
    return {"ir": torch.stack([it["ir"] for it in items]), "vi_y": torch.stack([it["vi_y"] for it in items]),
            "regions": torch.stack([it["regions"] for it in items]) if all("regions" in it for it in items) else None,
            "ent": ent, "ent_mask": mask, "labels": torch.stack([it["labels"] for it in items]),
            "has_labels": torch.stack([it["has_labels"] for it in items]),
            "name": [it["name"] for it in items]}
