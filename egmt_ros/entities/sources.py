"""Where entities come from: the detector (the offline default), captions (BLIP-2 + extractor), a fixed vocabulary.

Every source has ``extract(ir, vi, stamp, fused=None) -> EntitySet``; ``stamp`` is the stamp of the keyframe the
images belong to, so an :class:`EntitySet` knows how old it is (:meth:`EntitySet.age`). ``last_timings`` holds the
seconds each stage took in the last call (``detect``, ``caption``, ``extract``), for latency reports.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from egmt_ros.entities.extractor import MAX_ENTITIES, EntityExtractor, merge_entities, normalize_entity

SOURCES = ("detector", "caption", "vocabulary")
#: Images a :class:`DetectorEntitySource` can look at; "ir_inverted" is the IR image in black-hot polarity.
MODALITIES = ("fused", "vi", "ir", "ir_inverted")


@dataclass(frozen=True)
class Entity:
    """One entity: normalised text, a score in [0, 1] and the source ("detector" | "caption" | "vocabulary")."""

    text: str
    score: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        """``{"text", "source", "score"}`` (the annotation file's entity record)."""
        return {"text": self.text, "source": self.source, "score": round(float(self.score), 4)}


@dataclass
class EntitySet:
    """The entities of one keyframe: its ``stamp`` (seconds), the entities, and the captions they came from."""

    stamp: float
    entities: list[Entity] = field(default_factory=list)
    captions: dict[str, str | None] = field(default_factory=lambda: {"ir": None, "vi": None})

    def age(self, now: float) -> float:
        """Seconds since the keyframe these entities came from (``now`` on the same clock as ``stamp``)."""
        return float(now) - float(self.stamp)

    @property
    def texts(self) -> list[str]:
        """The entity texts, in order."""
        return [e.text for e in self.entities]

    @property
    def scores(self) -> list[float]:
        """The entity scores, in order."""
        return [e.score for e in self.entities]


class EntitySource(Protocol):
    """Anything that turns a keyframe into an :class:`EntitySet`."""

    last_timings: dict[str, float]

    def extract(self, ir: np.ndarray | None, vi: np.ndarray | None, stamp: float,
                fused: np.ndarray | None = None) -> EntitySet:
        """Entities of one keyframe."""
        ...


def parse_vocabulary(text: str | Sequence[str] | None) -> list[str]:
    """``"person, street,Tree"`` or a list -> normalised, de-duplicated words (empty for None)."""
    if not text:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        norm = normalize_entity(item)
        if norm and norm not in out:
            out.append(norm)
    return out


class VocabularyEntitySource:
    """A fixed list of entities (e.g. the scene the robot works in), each with ``score``, source "vocabulary"."""

    def __init__(self, vocabulary: str | Sequence[str], score: float = 1.0) -> None:
        self.vocabulary = parse_vocabulary(vocabulary)
        if not self.vocabulary:
            raise ValueError("the vocabulary source needs at least one word")
        self.score = float(score)
        self.last_timings: dict[str, float] = {}

    def extract(self, ir: np.ndarray | None = None, vi: np.ndarray | None = None, stamp: float = 0.0,
                fused: np.ndarray | None = None) -> EntitySet:
        """The vocabulary as an EntitySet (the images are not looked at)."""
        return EntitySet(stamp, [Entity(w, self.score, "vocabulary") for w in self.vocabulary])


def tile_boxes(width: int, height: int, n: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """The whole image, then (for n > 1) an n x n grid of tiles overlapping by ``overlap`` of a tile:
    ``[(x0, y0, x1, y1), ...]`` in pixels; every pixel lies in at least one tile."""
    boxes = [(0, 0, width, height)]
    if n <= 1:
        return boxes
    tw = math.ceil(width / (n - (n - 1) * overlap))
    th = math.ceil(height / (n - (n - 1) * overlap))
    for i in range(n):
        for j in range(n):
            x0 = width - tw if j == n - 1 else round(j * tw * (1 - overlap))
            y0 = height - th if i == n - 1 else round(i * th * (1 - overlap))
            boxes.append((x0, y0, x0 + tw, y0 + th))
    return boxes


def invert_polarity(image: np.ndarray) -> np.ndarray:
    """White-hot IR -> black-hot (the display mode most thermal cameras offer): ``max - image`` for integer
    dtypes (255 for uint8), ``1 - image`` for float images in [0, 1]. Warm people then look dark on a light
    background, as people in dark clothes do in daylight photos, which a detector trained on COCO knows."""
    img = np.asarray(image)
    if np.issubdtype(img.dtype, np.integer):
        return np.iinfo(img.dtype).max - img
    return 1.0 - img


def _shifted(det: Any, dx: int, dy: int) -> Any:
    """A detection of a tile with its box moved to the coordinates of the whole image."""
    if dx == 0 and dy == 0:
        return det
    x1, y1, x2, y2 = det.box_xyxy
    return dataclasses.replace(det, box_xyxy=(x1 + dx, y1 + dy, x2 + dx, y2 + dy))


class DetectorEntitySource:
    """Entities = the detector's class names on the keyframe's images; score = the best detection per class.

    ``modalities`` picks the images given to the detector among ``"fused"``, ``"vi"``, ``"ir"`` and
    ``"ir_inverted"`` (:func:`invert_polarity`; grey IR is replicated to 3 channels); the detections of all of them
    are pooled. Images that are None in a call are skipped
    (at least one must be there). ``tiles`` = n > 1 also runs the detector on an n x n grid of overlapping tiles
    (:func:`tile_boxes`, 25 % overlap) of each image: the detector scales each tile to its input size, so objects
    n times smaller are found (TNO's distant thermal people are 10 - 20 px tall; a 640-px detector misses them in
    the whole frame). Tile boxes are mapped back to image coordinates in ``last_detections``. Detected classes
    come first, by score; then the words of ``vocabulary`` that were not detected (``vocabulary_score``, source
    "vocabulary"); at most ``max_entities``. ``classes``: keep only detections of these class names (names the
    detector does not know never match), e.g. the multi-label class list, so tiles of bushes do not become "broccoli".
    ``detector`` is an ``egmt_ros.detection.detector.Detector`` or a list of them (an ensemble: every detector
    sees every view, detections are pooled); when None, one Detector per entry of ``weights`` (a path or a list of
    paths; None: the default model) with ``conf`` (a pickled .pt only with ``trust_pickle``).
    """

    def __init__(self, detector: Any = None, modalities: Sequence[str] = ("vi",),
                 vocabulary: str | Sequence[str] | None = None, vocabulary_score: float = 1.0,
                 max_entities: int = MAX_ENTITIES, weights: str | Sequence[str] | None = None,
                 conf: float = 0.25, tiles: int = 1, classes: Sequence[str] | None = None,
                 trust_pickle: bool = False) -> None:
        bad = [m for m in modalities if m not in MODALITIES]
        if bad or not modalities:
            raise ValueError(f"modalities must be among {', '.join(MODALITIES)}; got {list(modalities)}")
        if detector is None:
            from egmt_ros.detection.detector import Detector

            paths = [weights] if weights is None or isinstance(weights, str) else list(weights)
            detector = [Detector(weights=w, conf=conf, trust_pickle=trust_pickle) for w in paths]
        detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
        if not detectors:
            raise ValueError("at least one detector is needed")
        if tiles < 1:
            raise ValueError(f"tiles must be >= 1, got {tiles}")
        #: detector class names (lower case) that may become entities; None: all. Filtered here, so that a
        #: detector shared with other users keeps its own class filter.
        self.classes = None if classes is None else {c.strip().lower() for c in classes}
        self.detectors = detectors
        self.tiles = int(tiles)
        self.modalities = tuple(modalities)
        self.vocabulary = parse_vocabulary(vocabulary)
        self.vocabulary_score = float(vocabulary_score)
        self.max_entities = int(max_entities)
        self.last_timings: dict[str, float] = {}
        self.last_detections: dict[str, list[Any]] = {}

    def extract(self, ir: np.ndarray | None, vi: np.ndarray | None, stamp: float,
                fused: np.ndarray | None = None) -> EntitySet:
        """Run the detector on the chosen images (one batch) and pool the class names."""
        given = {"fused": fused, "vi": vi, "ir": ir}
        if "ir_inverted" in self.modalities and ir is not None:  # built only when asked for
            given["ir_inverted"] = invert_polarity(ir)
        names = [m for m in self.modalities if given.get(m) is not None]
        if not names:
            raise ValueError(f"none of the images {list(self.modalities)} was given")
        images = [given[m] if given[m].ndim == 3 else np.repeat(given[m][:, :, None], 3, axis=2) for m in names]
        views: list[tuple[int, tuple[int, int, int, int]]] = []  # (image index, tile box x0, y0, x1, y1)
        for k, im in enumerate(images):
            views += [(k, box) for box in tile_boxes(im.shape[1], im.shape[0], self.tiles)]
        crops = [images[k][y0:y1, x0:x1] for k, (x0, y0, x1, y1) in views]
        t0 = time.perf_counter()
        runs = [det.detect_batch(crops) if hasattr(det, "detect_batch") else [det.detect(im) for im in crops]
                for det in self.detectors]
        self.last_timings = {"detect": time.perf_counter() - t0}
        results: list[list[Any]] = [[] for _ in images]
        for per_view in runs:
            for (k, (x0, y0, _, _)), dets in zip(views, per_view):
                results[k] += [_shifted(d, x0, y0) for d in dets
                               if self.classes is None or str(d.class_name).strip().lower() in self.classes]
        self.last_detections = dict(zip(names, results))
        best: dict[str, float] = {}
        for dets in results:
            for d in dets:
                name = str(d.class_name).strip().lower()
                best[name] = max(best.get(name, 0.0), float(d.score))
        ents = [Entity(n, s, "detector") for n, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))]
        ents += [Entity(w, self.vocabulary_score, "vocabulary") for w in self.vocabulary if w not in best]
        return EntitySet(stamp, ents[: self.max_entities])


class CaptionEntitySource:
    """Entities from captions, as the paper: caption IR and VI separately, extract entities from each, take the
    union (IR first), de-duplicate case-insensitively, keep ``max_entities`` (8). Score 1.0, source "caption".

    ``captioner`` has ``caption_pair(ir, vi)`` (:class:`~egmt_ros.entities.captioner.Blip2Captioner`);
    ``extractor`` has ``extract(caption)`` (:func:`~egmt_ros.entities.extractor.get_extractor`).
    """

    def __init__(self, captioner: Any, extractor: EntityExtractor, max_entities: int = MAX_ENTITIES,
                 vocabulary: str | Sequence[str] | None = None, vocabulary_score: float = 1.0) -> None:
        self.captioner = captioner
        self.extractor = extractor
        self.max_entities = int(max_entities)
        self.vocabulary = parse_vocabulary(vocabulary)
        self.vocabulary_score = float(vocabulary_score)
        self.last_timings: dict[str, float] = {}

    def extract(self, ir: np.ndarray | None, vi: np.ndarray | None, stamp: float,
                fused: np.ndarray | None = None) -> EntitySet:
        """Caption the given images (IR and/or VI), extract and merge their entities."""
        t0 = time.perf_counter()
        if ir is not None and vi is not None:
            cap_ir, cap_vi = self.captioner.caption_pair(ir, vi)
        else:
            cap_ir = self.captioner.caption(ir) if ir is not None else None
            cap_vi = self.captioner.caption(vi) if vi is not None else None
        t1 = time.perf_counter()
        lists = [self.extractor.extract(c) for c in (cap_ir, cap_vi) if c]
        t2 = time.perf_counter()
        self.last_timings = {"caption": t1 - t0, "extract": t2 - t1}
        texts = merge_entities(lists, self.max_entities)
        ents = [Entity(t, 1.0, "caption") for t in texts]
        ents += [Entity(w, self.vocabulary_score, "vocabulary") for w in self.vocabulary if w not in texts]
        return EntitySet(stamp, ents[: self.max_entities], {"ir": cap_ir, "vi": cap_vi})
