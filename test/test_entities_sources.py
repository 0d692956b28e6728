"""Entity sources: detector pooling, vocabulary, caption union (with stand-in models), EntitySet age, timings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from egmt_ros.entities.extractor import RuleEntityExtractor
from egmt_ros.entities.sources import (CaptionEntitySource, DetectorEntitySource, Entity,
                                       VocabularyEntitySource, invert_polarity, tile_boxes)
from egmt_ros.entities.timing import StageTimes


@dataclass(frozen=True)
class _Det:
    class_id: int
    class_name: str
    score: float
    box_xyxy: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


class _FakeDetector:
    """Answers per image by its mean grey level; records the shapes it was given."""

    def __init__(self, answers: dict[int, list[_Det]]) -> None:
        self.answers = answers
        self.shapes: list[tuple[int, ...]] = []

    def detect_batch(self, images):  # noqa: ANN001, ANN201 - the Detector API
        self.shapes += [im.shape for im in images]
        return [list(self.answers.get(int(round(float(np.mean(im)) * 10)), [])) for im in images]


def _img(level: float, colour: bool) -> np.ndarray:
    shape = (8, 10, 3) if colour else (8, 10)
    return np.full(shape, level, dtype=np.float32)


def test_detector_source_pools_vi_and_ir_max_score_per_class() -> None:
    det = _FakeDetector({
        2: [_Det(0, "person", 0.4), _Det(2, "car", 0.9), _Det(0, "person", 0.5)],   # visible image (mean 0.2)
        7: [_Det(0, "person", 0.8), _Det(7, "truck", 0.3)],                        # IR image (mean 0.7)
    })
    src = DetectorEntitySource(det, modalities=("vi", "ir"), vocabulary="street, Person", vocabulary_score=0.6)
    es = src.extract(_img(0.7, False), _img(0.2, True), stamp=12.5)
    assert [(e.text, e.score, e.source) for e in es.entities] == [
        ("car", 0.9, "detector"), ("person", 0.8, "detector"), ("truck", 0.3, "detector"),
        ("street", 0.6, "vocabulary")]  # "person" from the vocabulary was detected: not repeated
    assert det.shapes == [(8, 10, 3), (8, 10, 3)]  # grey IR replicated to 3 channels
    assert es.stamp == 12.5 and es.age(15.0) == pytest.approx(2.5)
    assert es.captions == {"ir": None, "vi": None}
    assert set(src.last_timings) == {"detect"} and src.last_timings["detect"] >= 0
    assert set(src.last_detections) == {"vi", "ir"}


def test_detector_source_modalities_and_cap() -> None:
    det = _FakeDetector({5: [_Det(i, f"c{i}", 0.1 * i) for i in range(1, 10)]})
    src = DetectorEntitySource(det, modalities=("fused",), max_entities=3)
    es = src.extract(None, None, 1.0, fused=_img(0.5, True))
    assert es.texts == ["c9", "c8", "c7"] and es.scores == pytest.approx([0.9, 0.8, 0.7])
    with pytest.raises(ValueError):
        src.extract(_img(0.5, False), _img(0.5, True), 1.0)  # no fused image given
    with pytest.raises(ValueError):
        DetectorEntitySource(det, modalities=("depth",))


def test_invert_polarity_by_dtype() -> None:
    assert invert_polarity(np.array([[0, 10, 255]], np.uint8)).tolist() == [[255, 245, 0]]
    inv16 = invert_polarity(np.array([[0, 65535]], np.uint16))
    assert inv16.dtype == np.uint16 and inv16.tolist() == [[65535, 0]]
    assert invert_polarity(np.array([[0.0, 0.25, 1.0]], np.float32)).tolist() == [[1.0, 0.75, 0.0]]


def test_ir_inverted_modality_and_detector_ensemble() -> None:
    """The black-hot view is the IR image inverted (mean 0.7 -> 0.3); two detectors see every view and their
    detections are pooled (best score per class over both)."""
    first = _FakeDetector({3: [_Det(0, "person", 0.6)], 7: [_Det(2, "car", 0.5)]})
    second = _FakeDetector({3: [_Det(0, "person", 0.9), _Det(16, "dog", 0.3)]})
    src = DetectorEntitySource([first, second], modalities=("ir", "ir_inverted"))
    es = src.extract(_img(0.7, False), None, 0.0)
    assert [(e.text, e.score) for e in es.entities] == [("person", 0.9), ("car", 0.5), ("dog", 0.3)]
    assert first.shapes == second.shapes == [(8, 10, 3), (8, 10, 3)]
    assert [d.class_name for d in src.last_detections["ir_inverted"]] == ["person", "person", "dog"]
    assert [d.class_name for d in src.last_detections["ir"]] == ["car"]
    with pytest.raises(ValueError, match="at least one detector"):
        DetectorEntitySource([])


def test_black_hot_ir_finds_the_person_in_tno_04(data_root) -> None:
    """TNO 04: a person in a trench, warm in the thermal image. YOLO11n finds no person in the white-hot IR
    image and one (score ~0.87) in its black-hot inversion (docs/entities.md)."""
    from egmt_ros.core.images import load_pair
    from egmt_ros.detection.detector import Detector

    ir, vi = load_pair(data_root / "tno42/ir/04.png", data_root / "tno42/vi/04.png")
    det = Detector()
    white = DetectorEntitySource(det, modalities=("ir",), classes=["person"]).extract(ir, vi, 0.0)
    black = DetectorEntitySource(det, modalities=("ir_inverted",), classes=["person"]).extract(ir, vi, 0.0)
    assert white.texts == []
    assert black.texts == ["person"] and black.scores[0] > 0.5


def test_tile_boxes_cover_the_image_with_overlap() -> None:
    assert tile_boxes(640, 480, 1) == [(0, 0, 640, 480)]
    boxes = tile_boxes(641, 479, 3)
    assert boxes[0] == (0, 0, 641, 479) and len(boxes) == 1 + 9
    cover = np.zeros((479, 641), int)
    for x0, y0, x1, y1 in boxes[1:]:
        assert 0 <= x0 < x1 <= 641 and 0 <= y0 < y1 <= 479
        assert (x1 - x0, y1 - y0) == (boxes[1][2], boxes[1][3])  # equal tiles, so equal scaling in the detector
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1 and cover.max() >= 4  # every pixel, overlaps at the corners
    w = boxes[1][2]
    assert boxes[2][0] == round(w * 0.75)  # 25 % overlap


def test_tiles_find_more_and_map_boxes_back() -> None:
    class TileDetector(_FakeDetector):
        def detect_batch(self, images):  # noqa: ANN001, ANN201 - only tiles (smaller than the image) see the object
            self.shapes += [im.shape for im in images]
            return [[_Det(0, "person", 0.6, (1.0, 2.0, 3.0, 4.0))] if im.shape[1] < 100 else [] for im in images]

    det = TileDetector({})
    whole = DetectorEntitySource(det, modalities=("ir",))
    assert whole.extract(_img(0.5, False).repeat(10, 0).repeat(10, 1), None, 0.0).texts == []
    tiled = DetectorEntitySource(det, modalities=("ir",), tiles=2)
    es = tiled.extract(np.zeros((80, 100), np.float32), None, 0.0)
    assert es.texts == ["person"] and len(det.shapes) == 1 + 1 + 4
    boxes = [d.box_xyxy for d in tiled.last_detections["ir"]]
    starts = [(x0, y0) for x0, y0, _, _ in tile_boxes(100, 80, 2)[1:]]
    assert sorted(boxes) == sorted((1.0 + x, 2.0 + y, 3.0 + x, 4.0 + y) for x, y in starts)
    with pytest.raises(ValueError):
        DetectorEntitySource(det, tiles=0)


def test_tiles_find_a_distant_thermal_person_in_tno(data_root) -> None:
    """TNO 36: one person about 15 px tall in the thermal image; YOLO11n misses it in the whole 640-px frame and
    finds it in a 2 x 2 tile (docs/entities.md); only the listed classes become entities."""
    from egmt_ros.core.images import load_pair
    from egmt_ros.detection.detector import Detector

    ir, vi = load_pair(data_root / "tno42/ir/36.png", data_root / "tno42/vi/36.png")
    det = Detector()
    assert "person" not in DetectorEntitySource(det, modalities=("ir",), classes=["person", "car"]).extract(
        ir, vi, 0.0).texts
    es = DetectorEntitySource(det, modalities=("ir",), tiles=2, classes=["person", "car"]).extract(ir, vi, 0.0)
    assert "person" in es.texts and set(es.texts) <= {"person", "car"}


def test_vocabulary_source() -> None:
    es = VocabularyEntitySource("Street, trees", score=0.7).extract(stamp=3.0)
    assert es.entities == [Entity("street", 0.7, "vocabulary"), Entity("tree", 0.7, "vocabulary")]
    assert Entity("tree", 0.71234567, "vocabulary").to_dict() == {"text": "tree", "source": "vocabulary",
                                                                  "score": 0.7123}
    with pytest.raises(ValueError):
        VocabularyEntitySource("")


class _FakeCaptioner:
    def caption_pair(self, ir, vi):  # noqa: ANN001, ANN201
        return "a man and two people walking near a car", "A Car parked on the street next to trees and a dog"

    def caption(self, image):  # noqa: ANN001, ANN201
        return "a dog"


def test_caption_source_union_dedup_cap() -> None:
    src = CaptionEntitySource(_FakeCaptioner(), RuleEntityExtractor(), vocabulary="sky")
    es = src.extract(_img(0.1, False), _img(0.1, True), stamp=4.0)
    assert es.texts == ["man", "person", "car", "street", "tree", "dog", "sky"]
    assert [e.source for e in es.entities] == ["caption"] * 6 + ["vocabulary"]
    assert es.captions["ir"].startswith("a man") and es.captions["vi"].startswith("A Car")
    assert set(src.last_timings) == {"caption", "extract"}
    only_vi = src.extract(None, _img(0.1, True), stamp=5.0)
    assert only_vi.captions == {"ir": None, "vi": "a dog"} and only_vi.texts == ["dog", "sky"]
    capped = CaptionEntitySource(_FakeCaptioner(), RuleEntityExtractor(), max_entities=2)
    assert capped.extract(_img(0.1, False), _img(0.1, True), 0.0).texts == ["man", "person"]


def test_stage_times_table() -> None:
    t = StageTimes()
    for v in (0.010, 0.020, 0.030, 0.040, 0.100):
        t.add("detect", v)
    with t.time("encode"):
        pass
    s = t.summary()
    assert s["detect"]["n"] == 5 and s["detect"]["median_ms"] == pytest.approx(30.0)
    assert s["detect"]["p90_ms"] == pytest.approx(76.0)
    table = t.table().splitlines()
    assert table[0].split() == ["stage", "n", "median_ms", "p90_ms"]
    assert table[1].split()[:2] == ["detect", "5"] and table[2].split()[0] == "encode"
