"""The default detector: weights search, numpy inputs, class map, and the acceptance test on a fused MSRS pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from egmt_ros.core.images import load_pair
from egmt_ros.detection.classmap import COCO_TO_M3FD, M3FD_CLASSES, class_mapping
from egmt_ros.detection.dataset import read_yolo
from egmt_ros.detection.detector import Detection, Detector, UntrustedWeightsError, annotate, find_weights
from egmt_ros.detection.evaluate import box_iou, labels_to_pixels
from egmt_ros.detection.inputs import DetectorInput
from egmt_ros.paths import models_dir


@pytest.fixture(scope="module")
def person_detector() -> Detector:
    """The default detector (data-root YOLO11n INT8 OpenVINO), person class only."""
    return Detector(classes=["person"])


def fusion_for_acceptance() -> str:
    """egmt_rt when its shipped weights exist, else the classical average."""
    return "egmt_rt" if (models_dir() / "egmt_rt.pt").is_file() else "average"


def test_default_detector_finds_labelled_people_on_fused_msrs(person_detector: Detector, data_root: Path) -> None:
    ir, vi = load_pair(data_root / "msrs_train5" / "ir" / "00633D.png", data_root / "msrs_train5" / "vi" / "00633D.png")
    method = fusion_for_acceptance()
    fused = DetectorInput(method).make(ir, vi)
    assert fused.shape == vi.shape
    dets = person_detector.detect(fused)
    found, labelled = labelled_persons_found(dets, data_root)
    print(f"\n00633D fused with {method}: {found} of {labelled} labelled persons found at IoU >= 0.5 "
          f"({len(dets)} person detections, weights {Path(person_detector.weights).name})")
    assert found == labelled
    assert all(d.class_name == "person" for d in dets)


def labelled_persons_found(dets: list[Detection], data_root: Path) -> tuple[int, int]:
    """(how many of the 2 labelled persons of MSRS 00633D a detection matches at IoU >= 0.5, 2)."""
    gt = labels_to_pixels(read_yolo(data_root / "msrs_detection_labels" / "labels" / "633.txt"), 640, 480)
    persons = gt[gt[:, 0] == 0, 1:]
    assert len(persons) == 2
    iou = box_iou(persons, np.array([d.box_xyxy for d in dets]).reshape(-1, 4))
    return int(sum(row.max(initial=0.0) >= 0.5 for row in iou)), len(persons)


def test_find_weights_default_is_the_data_root_model(data_root: Path) -> None:
    assert Path(find_weights(None)) == data_root / "weights" / "yolo11n_int8_openvino_model"


def test_find_weights_offline_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty_data"
    empty.mkdir()
    monkeypatch.setenv("EGMT_DATA", str(empty))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        find_weights(None)
    msg = str(err.value)
    assert str(empty / "weights" / "yolo11n_int8_openvino_model") in msg
    assert "yolo11n.pt" not in msg.split("download")[0]  # no working-directory fallback (a pickle; issue 16)
    assert "download" in msg and "YOLO_OFFLINE" in msg


def test_find_weights_online_falls_back_to_the_ultralytics_name(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGMT_DATA", str(tmp_path))
    monkeypatch.setenv("YOLO_OFFLINE", "0")
    monkeypatch.chdir(tmp_path)
    assert find_weights(None) == "yolo11n.pt"


def test_find_weights_explicit_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "best.onnx"
    with pytest.raises(FileNotFoundError, match="best.onnx"):
        find_weights(str(missing))
    assert find_weights(str(tmp_path)) == str(tmp_path)


def test_crafted_pt_is_not_unpickled_and_the_error_says_how_to_load_safely(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from crafted import write_crafted_pt

    marker = tmp_path / "pwned"
    crafted = write_crafted_pt(tmp_path / "yolo11n.pt", marker)
    monkeypatch.chdir(tmp_path)  # a yolo11n.pt in the working directory is no fallback either
    for weights in (str(crafted), "yolo11n.pt"):
        with pytest.raises(UntrustedWeightsError) as err:
            Detector(weights=weights)
        msg = str(err.value)
        assert "pickle" in msg and "format=openvino" in msg and "weights_trust_pickle: true" in msg
    assert not marker.exists()
    pickle.loads(crafted.read_bytes())
    assert marker.exists(), "the file really is hostile (the test's own check)"


def test_detect_accepts_uint8_float_grey_and_batches(person_detector: Detector, data_root: Path) -> None:
    ir, vi = load_pair(data_root / "msrs_train5" / "ir" / "00633D.png", data_root / "msrs_train5" / "vi" / "00633D.png")
    as_float = person_detector.detect(vi)
    as_uint8 = person_detector.detect(np.clip(np.rint(vi * 255), 0, 255).astype(np.uint8))
    assert [d.box_xyxy for d in as_float] == [d.box_xyxy for d in as_uint8]
    grey = person_detector.detect(ir)
    assert grey and all(isinstance(d, Detection) for d in grey)
    crop = ir[100:, 50:]  # boxes come back in the input's own pixel coordinates
    for d in person_detector.detect(crop):
        x1, y1, x2, y2 = d.box_xyxy
        assert 0 <= x1 < x2 <= crop.shape[1] and 0 <= y1 < y2 <= crop.shape[0]
    batch = person_detector.detect_batch([vi, ir])
    assert [d.box_xyxy for d in batch[0]] == [d.box_xyxy for d in as_float]
    assert [d.box_xyxy for d in batch[1]] == [d.box_xyxy for d in grey]
    with pytest.raises(ValueError):
        person_detector.detect(np.zeros((4, 4, 2), np.uint8))


def test_class_filter_and_names(person_detector: Detector) -> None:
    assert len(person_detector.class_names) == 80 and person_detector.class_names[0] == "person"
    assert person_detector.class_ids == [0]
    assert person_detector.class_id("Car") == 2
    with pytest.raises(ValueError, match="lamp"):
        person_detector.class_id("lamp")


def test_annotate_draws_boxes_without_changing_the_input() -> None:
    img = np.full((120, 160), 0.5, np.float32)
    det = Detection(0, "person", 0.9, (20.0, 30.0, 80.0, 100.0))
    out = annotate(img, [det])
    assert out.shape == (120, 160, 3) and out.dtype == np.uint8
    assert np.all(img == 0.5)
    assert (out[60, 20] != 128).any() and (out[60, 50] == 128).all()  # box edge drawn, inside untouched


def test_class_map_coco_to_m3fd_says_lamp_has_no_coco_class() -> None:
    coco = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "traffic light"]
    det_to_data, unmapped = class_mapping(coco, list(M3FD_CLASSES))
    names = {coco[d]: M3FD_CLASSES[m] for d, m in det_to_data.items()}
    assert names == COCO_TO_M3FD
    assert list(unmapped) == [M3FD_CLASSES.index("Lamp")]
    assert "no COCO class" in unmapped[M3FD_CLASSES.index("Lamp")]


def test_count_people_cli_on_a_video_slice(data_root: Path, tmp_path: Path) -> None:
    import csv

    from egmt_ros.cli import count_people

    out = tmp_path / "m2vd"
    rc = count_people.main(["--videos", str(data_root / "m2vd"), "--methods", "vi,average", "--stride", "50",
                            "--videos-only", "0111_1716", "--sample-video", "0111_1716", "--samples", "1",
                            "--out", str(out)])
    assert rc == 0
    rows = {r["method"]: r for r in csv.DictReader((out / "counts.csv").open())}
    assert set(rows) == {"vi", "average"}
    assert all(int(r["frames"]) == 4 for r in rows.values())  # 151 frames, every 50th: 0, 50, 100, 150
    per_frame = list(csv.DictReader((out / "per_frame.csv").open()))
    assert [int(r["frame"]) for r in per_frame if r["method"] == "vi"] == [0, 50, 100, 150]
    for m, r in rows.items():
        total = sum(int(p["persons"]) for p in per_frame if p["method"] == m)
        assert float(r["mean_persons_per_frame"]) == pytest.approx(total / 4, abs=1e-3)
    assert float(rows["vi"]["mean_persons_per_frame"]) >= 1  # the daylight street scene has people
    for m, r in rows.items():
        mine = [p for p in per_frame if p["method"] == m]
        confirmed = [int(p["confirmed"]) for p in mine]
        assert all(0 <= c <= int(p["persons"]) for c, p in zip(confirmed, mine))
        assert float(r["mean_confirmed_per_frame"]) == pytest.approx(sum(confirmed) / 4, abs=1e-3)
        assert int(r["frames_with_confirmed"]) == sum(c > 0 for c in confirmed)
    md = (out / "counts.md").read_text()
    assert "proxy, not mAP" in md and "| 0111_1716 | 4 |" in md and "IR-confirmed persons per frame" in md
    jpgs = list(out.glob("0111_1716_frame*.jpg"))
    assert len(jpgs) == 1 and jpgs[0].stat().st_size < 200_000


def test_ir_confirmed_by_hand() -> None:
    from egmt_ros.cli.count_people import ir_confirmed, warm_mask

    ir = np.zeros((100, 100), np.float32)
    ir[40:60, 40:50] = 1.0  # a warm 10 x 20 figure: 2 % of the frame; mean 0.02, std 0.14, threshold 0.16
    warm = warm_mask(ir)
    assert warm.sum() == 200
    assert ir_confirmed(warm, (35.0, 30.0, 55.0, 70.0))            # 200 warm of 20 x 40 = 800 pixels: 25 % >= 5 %
    assert not ir_confirmed(warm, (0.0, 0.0, 30.0, 30.0))          # a box on the cold background: 0 %
    assert not ir_confirmed(warm, (0.0, 0.0, 100.0, 100.0))        # the whole frame: 2 % < 5 %
    assert ir_confirmed(warm, (0.0, 0.0, 100.0, 100.0), fraction=0.01)
    assert not ir_confirmed(warm, (45.0, 50.0, 200.0, 300.0))      # clipped to 55 x 50: 5 x 10 warm = 1.8 %
    assert not ir_confirmed(warm, (120.0, 0.0, 150.0, 10.0))       # entirely outside the image
    assert not warm_mask(ir, sigma=10.0).any()                     # threshold 1.42: nothing is that warm


def test_count_people_takes_an_egmt_checkpoint_by_name(tmp_path: Path) -> None:
    from egmt_ros.cli import count_people
    from egmt_ros.paths import models_dir

    name, maker = count_people.make_input(f"mine={models_dir() / 'egmt_rt.pt'}")
    assert name == "mine" and maker.method is not None and maker.method.checkpoint == models_dir() / "egmt_rt.pt"
    ir, vi = np.full((64, 80), 0.8, np.float32), np.full((64, 80, 3), 0.2, np.float32)
    assert maker.make(ir, vi).shape == (64, 80, 3)
    assert count_people.make_input("lp")[0] == "lp"
    with pytest.raises(SystemExit, match="CHECKPOINT"):
        count_people.make_input(f"x={tmp_path / 'missing.pt'}")
