"""The YOLOv5 detector backend: the official yolov5n.pt finds the labelled persons of MSRS 00633D on the fused
image (as the YOLO11n test does), loads only with explicit trust, and its tensor path equals its numpy path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from egmt_ros.core.images import load_pair
from egmt_ros.detection.inputs import DetectorInput
from egmt_ros.detection.yolov5_backend import DEFAULT_YOLOV5_SUBPATH, YOLOv5Detector, letterbox


@pytest.fixture(scope="module")
def weights(data_root: Path) -> Path:
    return data_root / DEFAULT_YOLOV5_SUBPATH


@pytest.fixture(scope="module")
def person_v5(weights: Path) -> YOLOv5Detector:
    # the shared data file is the official Ultralytics checkpoint: trusted explicitly
    return YOLOv5Detector(str(weights), classes=["person"], trust_pickle=True)


@pytest.fixture(scope="module")
def fused(data_root: Path) -> np.ndarray:
    from test_detection import fusion_for_acceptance

    ir, vi = load_pair(data_root / "msrs_train5" / "ir" / "00633D.png", data_root / "msrs_train5" / "vi" / "00633D.png")
    return DetectorInput(fusion_for_acceptance()).make(ir, vi)


def test_yolov5n_finds_labelled_people_on_fused_msrs(person_v5: YOLOv5Detector, fused: np.ndarray,
                                                     data_root: Path) -> None:
    from test_detection import labelled_persons_found

    dets = person_v5.detect(fused)
    found, labelled = labelled_persons_found(dets, data_root)
    print(f"\n00633D fused: YOLOv5n found {found} of {labelled} labelled persons at IoU >= 0.5 "
          f"({len(dets)} person detections)")
    assert found == labelled == 2
    assert all(d.class_name == "person" and 0.25 <= d.score <= 1.0 for d in dets)
    assert person_v5.class_names[0] == "person" and len(person_v5.class_names) == 80


def test_pickle_needs_explicit_trust_and_missing_weights_are_named(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trust_pickle"):
        YOLOv5Detector(str(weights))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        YOLOv5Detector(str(tmp_path / "nope.pt"), trust_pickle=True)


def test_tensor_path_equals_numpy_path_and_batches(person_v5: YOLOv5Detector, fused: np.ndarray) -> None:
    crop = np.ascontiguousarray(fused[40:440, 60:600])  # another size and aspect in the same batch call
    single = [person_v5.detect(fused), person_v5.detect(crop)]
    assert person_v5.detect_batch([fused, crop]) == single
    t = torch.from_numpy((fused * 255).round().clip(0, 255).astype(np.uint8)).permute(2, 0, 1).float() / 255
    from_tensor = person_v5.detect_tensor(t)[0]
    assert len(from_tensor) == len(single[0])
    for a, b in zip(from_tensor, single[0]):
        assert np.allclose(a.box_xyxy, b.box_xyxy, atol=1e-3) and abs(a.score - b.score) < 1e-5


def test_letterbox_keeps_aspect_and_maps_back() -> None:
    img = torch.rand(2, 3, 48, 64)
    out, gain, (px, py) = letterbox(img, 32)
    assert out.shape == (2, 3, 32, 32) and gain == 0.5 and (px, py) == (0.0, 4.0)
    assert torch.all(out[:, :, :4] == 114 / 255) and torch.all(out[:, :, 28:] == 114 / 255)
    assert torch.allclose(out[:, :, 4:28], torch.nn.functional.interpolate(img, size=(24, 32), mode="bilinear"))


def test_detection_node_runs_the_yolov5_backend(spawn, ros_node, fused: np.ndarray) -> None:
    """detection_node with backend:=yolov5 (trust given) in its own process: people on /egmt/detections; the
    backend and weights are on /diagnostics."""
    import time

    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray

    from egmt_ros.nodes.common import qos_by_name
    from egmt_ros.nodes.common import numpy_to_image
    from graph_client import GraphClient

    spawn([sys.executable, "-m", "egmt_ros.nodes.detection_node", "--ros-args", "-p", "qos:=reliable",
           "-p", "backend:=yolov5", "-p", "weights_trust_pickle:=true", "-p", "threads:=1",
           "-p", "classes:=person", "-p", "diagnostics_period:=0.5"])
    c = GraphClient(ros_node, qos="reliable")
    pub = ros_node.create_publisher(Image, "/egmt/fused", qos_by_name("reliable", depth=5))
    bgr = np.ascontiguousarray((fused * 255).round().clip(0, 255).astype(np.uint8)[:, :, ::-1])
    try:
        c.collect("/egmt/detections", Detection2DArray, qos=10)
        c.wait_until(lambda: pub.get_subscription_count() > 0, 120, "detection_node to subscribe to /egmt/fused")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not c.messages("/egmt/detections"):
            pub.publish(numpy_to_image(bgr, "bgr8", Header(frame_id="rgb_camera")))
            time.sleep(0.5)
        dets = c.messages("/egmt/detections")
        assert dets, "detections arrived"
        assert sum(h.hypothesis.class_id == "person" for d in dets[-1].detections for h in d.results) == 2
        c.wait_until(lambda: any(v.get("weights", "").endswith("yolov5n.pt") for _, _, v in c.diagnostics("detection")),
                     20, "detection diagnostics naming yolov5n.pt")
    finally:
        c.close()


def test_openvino_detector_threads_are_limited_and_it_still_detects(person_v5: YOLOv5Detector, fused: np.ndarray,
                                                                    data_root: Path) -> None:
    """make_detector(threads=1) (the detection node's default on 2 cores) recompiles the default OpenVINO YOLO11n
    with one inference thread and no CPU pinning; it still finds both persons. Other formats: nothing to change."""
    from egmt_ros.detection.backends import limit_openvino_threads, make_detector
    from test_detection import labelled_persons_found

    det = make_detector("ultralytics", threads=1, classes=["person"])
    compiled = det.model.predictor.model.backend.ov_compiled_model
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1 and not compiled.get_property("ENABLE_CPU_PINNING")
    assert labelled_persons_found(det.detect(fused), data_root) == (2, 2)
    with pytest.raises(ValueError, match="unknown detector backend 'tflite'"):
        make_detector("tflite")
    assert limit_openvino_threads(person_v5, 1) is False
