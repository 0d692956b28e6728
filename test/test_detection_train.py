"""Training CLI end to end on a tiny M3FD-style set (COCO8 + labelled MSRS pairs): fuse, write, train 1 epoch, score."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import yaml

from egmt_ros.cli import train_detector
from egmt_ros.core.images import load_image, load_pair
from egmt_ros.detection.dataset import load_detection_data, split_samples
from egmt_ros.detection.inputs import DetectorInput
from egmt_ros.detection.sample_data import build_sample_dataset, coco_names
from egmt_ros.detection.training import prepare_dataset


def test_train_detector_cli_end_to_end(data_root: Path, tmp_path: Path) -> None:
    root = build_sample_dataset(data_root, tmp_path / "m3fd", fmt="yolo")
    out, cache = tmp_path / "run", tmp_path / "cache"
    t0 = time.perf_counter()
    rc = train_detector.main(["--data", str(root), "--fusion", "average", "--model", "yolov8n.yaml",
                              "--epochs", "1", "--imgsz", "160", "--batch", "4", "--workers", "0",
                              "--out", str(out), "--cache", str(cache), "--no-plots"])
    elapsed = time.perf_counter() - t0
    print(f"\ntrain_detector (1 epoch, imgsz 160, yolov8n.yaml, 10 pairs): {elapsed:.1f} s")
    assert rc == 0
    assert elapsed < 240
    assert (out / "train" / "weights" / "best.pt").is_file()

    ds = out / "datasets" / "average"
    spec = yaml.safe_load((ds / "data.yaml").read_text())
    assert list(spec["names"].values()) == coco_names()
    data = load_detection_data(root)
    train, val = split_samples(data)
    assert sorted(p.stem for p in (ds / "images" / "train").iterdir()) == sorted(s.stem for s in train)
    assert sorted(p.stem for p in (ds / "images" / "val").iterdir()) == sorted(s.stem for s in val)
    assert len(train) + len(val) == 10  # 8 COCO8 + 00001D + 00633D (the MSRS pairs with labels)

    # the written image is the average fusion of the pair, the labels are the source labels
    sample = next(s for s in data.samples if s.stem == "00633D")
    split = "train" if sample in train else "val"
    ir, vi = load_pair(sample.ir, sample.vi)
    expected = DetectorInput("average").make(ir, vi)
    written = load_image(ds / "images" / split / "00633D.png")
    assert written.shape == vi.shape
    assert np.abs(written - expected).max() <= 1 / 255 + 1e-6
    assert np.abs(written - vi).mean() > 0.02  # really fused, not the visible image
    lab = (ds / "labels" / split / "00633D.txt").read_text().split()
    src = (data_root / "msrs_detection_labels" / "labels" / "633.txt").read_text().split()
    np.testing.assert_allclose([float(v) for v in lab], [float(v) for v in src], atol=1e-6)

    rows = list(csv.DictReader((out / "detection_map.csv").open()))
    assert [r["metric"] for r in rows] == ["mAP@0.5", "mAP@[0.5:0.95]"] and rows[0]["method"] == "average"
    assert 0.0 <= float(rows[0]["All"]) <= 1.0

    # fused images are cached by method + file: a second preparation reuses them untouched
    cached = sorted((cache / "average").glob("*.png"))
    assert len(cached) == 10
    stamps = [p.stat().st_mtime_ns for p in cached]
    prepare_dataset(root, "average", out, cache)
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_single_modality_and_voc_labels(data_root: Path, tmp_path: Path) -> None:
    yolo_root = build_sample_dataset(data_root, tmp_path / "yolo", fmt="yolo")
    voc_root = build_sample_dataset(data_root, tmp_path / "voc", fmt="voc")
    voc = load_detection_data(voc_root)
    assert voc.names == ["People", "Car", "Bus", "Lamp", "Motorcycle", "Truck"]
    yolo = {s.stem: s for s in load_detection_data(yolo_root).samples}
    for s in voc.samples:  # same boxes, COCO names mapped to M3FD (other COCO classes dropped)
        keep = {0: 0, 2: 1, 5: 2, 3: 4, 7: 5}
        src = sorted((keep[c], *box) for c, *box in yolo[s.stem].labels if c in keep)
        np.testing.assert_allclose(sorted(s.labels), src, atol=3e-3)
    prep = prepare_dataset(voc_root, "ir", tmp_path / "run_ir", tmp_path / "cache")
    spec = yaml.safe_load(prep.yaml_path.read_text())
    assert list(spec["names"].values()) == voc.names
    img = next((prep.yaml_path.parent / "images" / "train").iterdir())
    stem = img.stem
    ir_src = next(s.ir for s in voc.samples if s.stem == stem)
    np.testing.assert_array_equal(load_image(img), load_image(ir_src))  # ir input is the infrared image itself


def test_cache_key_follows_learned_weights_and_entities(data_root: Path, tmp_path: Path) -> None:
    from egmt_ros.detection.inputs import FusedCache

    class FakeLearned:
        name = "fake"
        checkpoint = tmp_path / "model.pt"
        entities: list[str] = []

        def fuse(self, ir: np.ndarray, vi_y: np.ndarray) -> np.ndarray:
            return np.maximum(ir, vi_y)

    FakeLearned.checkpoint.write_bytes(b"v1")
    maker = DetectorInput("average")
    maker.method = FakeLearned()
    cache = FusedCache(tmp_path / "cache")
    ir = data_root / "msrs_train5" / "ir" / "00633D.png"
    vi = data_root / "msrs_train5" / "vi" / "00633D.png"
    first = cache.get(maker, "00633D", ir, vi)
    assert cache.get(maker, "00633D", ir, vi) == first  # hit
    FakeLearned.checkpoint.write_bytes(b"retrained")
    second = cache.path_for(maker, "00633D", ir, vi)
    assert second != first
    maker.method.entities = ["person"]
    assert cache.path_for(maker, "00633D", ir, vi) not in (first, second)
