"""Detection mAP: matching and AP against ultralytics, and the eval CLI's Table VI on a tiny M3FD-style set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from egmt_ros.cli import eval_detector
from egmt_ros.core.images import load_image
from egmt_ros.detection.classmap import M3FD_CLASSES
from egmt_ros.detection.dataset import load_detection_data, read_yolo
from egmt_ros.detection.detector import Detection, Detector
from egmt_ros.detection.evaluate import ap_per_class, labels_to_pixels, match, score
from egmt_ros.detection.sample_data import build_sample_dataset


def _det(cid: int, score_: float, box: tuple[float, float, float, float]) -> Detection:
    return Detection(cid, f"c{cid}", score_, box)


def test_perfect_and_imperfect_detections() -> None:
    gt = [np.array([[0, 10, 10, 50, 50], [1, 60, 60, 90, 90]], float)]
    perfect = [[_det(0, 0.9, (10, 10, 50, 50)), _det(1, 0.8, (60, 60, 90, 90))]]
    r = score("x", ["a", "b"], ["a", "b"], perfect, gt)
    assert r.ap50 == pytest.approx({0: 0.995, 1: 0.995}, abs=1e-9)  # 101-point interpolation of a perfect curve
    # a confident false positive ranked above the true positive halves precision at full recall
    worse = [[_det(0, 0.95, (200, 200, 240, 240)), _det(0, 0.9, (10, 10, 50, 50)), _det(1, 0.8, (60, 60, 90, 90))]]
    r2 = score("x", ["a", "b"], ["a", "b"], worse, gt)
    assert r2.ap50[0] < 0.6 and r2.ap50[1] == pytest.approx(0.995)
    # a box shifted to IoU ~0.68 counts at 0.5 but not at 0.75 and above
    shifted = [[_det(0, 0.9, (18, 10, 58, 50))]]
    r3 = score("x", ["a", "b"], ["a", "b"], shifted, [gt[0][:1]])
    assert r3.ap50[0] == pytest.approx(0.995) and r3.ap50_95[0] == pytest.approx(0.995 * 4 / 10)


def test_matching_follows_confidence_order() -> None:
    """The confident prediction claims the target even when a weaker one overlaps it more (COCO / ultralytics)."""
    gt = np.array([[370.0, 249.0, 453.0, 296.0]])
    preds = np.array([[372.0, 218.0, 438.0, 295.0], [373.0, 252.0, 415.0, 295.0]])
    tp = match(preds, np.array([0, 0]), np.array([0.40, 0.05]), gt, np.array([0]))
    assert tp[0, 0] and not tp[1, 0]


def test_ap_per_class_equals_ultralytics() -> None:
    from ultralytics.utils.metrics import ap_per_class as ultra_ap

    rng = np.random.default_rng(0)
    n = 300
    tp = rng.random((n, 10)) < np.linspace(0.8, 0.2, 10)
    conf = rng.permutation(n) / n + 0.001  # distinct scores: no tie-order ambiguity
    pred_cls = rng.integers(0, 4, n)
    gt_cls = rng.integers(0, 4, 250)
    ours = ap_per_class(tp, conf, pred_cls, gt_cls)
    ref = ultra_ap(tp, conf, pred_cls, gt_cls)
    ref_ap, ref_classes = ref[5], ref[6]
    for row, c in zip(ref_ap, ref_classes):
        np.testing.assert_allclose(ours[int(c)], row, atol=1e-9)


@pytest.fixture(scope="module")
def default_detector() -> Detector:
    """The default detector with ultralytics' val thresholds."""
    return Detector(conf=0.001, iou=0.7)


def test_default_detector_map_on_coco8_matches_ultralytics_val(default_detector: Detector, data_root: Path) -> None:
    coco = data_root / "detection" / "coco8"
    dets, gts = [], []
    for img_path in sorted((coco / "images" / "val").glob("*.jpg")):
        img = load_image(img_path)
        dets.append(default_detector.detect(img))
        gts.append(labels_to_pixels(read_yolo(coco / "labels" / "val" / f"{img_path.stem}.txt"),
                                    img.shape[1], img.shape[0]))
    r = score("vi", default_detector.class_names, default_detector.class_names, dets, gts)
    print(f"\ncoco8 val: mAP@0.5 {r.all50:.4f}, mAP@[0.5:0.95] {r.all50_95:.4f}")
    assert r.all50 == pytest.approx(0.934, abs=0.01)  # data README: ultralytics val gives 0.934


def test_eval_cli_table_vi_on_tiny_m3fd_set(default_detector: Detector, data_root: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    root = build_sample_dataset(data_root, tmp_path / "m3fd", fmt="voc")
    data = load_detection_data(root)
    assert data.label_format == "voc" and data.names == list(M3FD_CLASSES)
    out = tmp_path / "eval"
    rc = eval_detector.main(["--data", str(root), "--fusion", "vi,ir,average", "--split", "all",
                             "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert rc == 0
    rows = list(csv.DictReader((out / "detection_map.csv").open()))
    assert [(r["method"], r["metric"]) for r in rows] == [
        (m, k) for m in ("vi", "ir", "average") for k in ("mAP@0.5", "mAP@[0.5:0.95]")]
    assert {"People", "Car", "Lamp", "All"} <= set(rows[0])
    assert all(r["Lamp"] == "n/a" for r in rows)  # no COCO class: reported, not invented
    vi50 = next(r for r in rows if r["method"] == "vi" and r["metric"] == "mAP@0.5")
    assert float(vi50["People"]) > 0.5  # a COCO detector finds the labelled people
    md = (out / "detection_map.md").read_text()
    assert "| vi |" in md and "| average |" in md and "Lamp: n/a, no COCO class" in md
    assert len(list((tmp_path / "cache" / "average").glob("*.png"))) == len(data.samples)
    print(capsys.readouterr().out)
