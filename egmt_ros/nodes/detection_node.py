"""detection_node: a YOLO detector on /egmt/fused -> /egmt/detections (+ an annotated image for RViz).

Parameter ``backend``: ``ultralytics`` (default: the YOLO11n OpenVINO model of the data root, or any ultralytics
format through ``weights``) or ``yolov5`` (an official YOLOv5 ``.pt``; a pickle, loaded only with
``weights_trust_pickle:=true``); see :mod:`egmt_ros.detection.backends`.

Newest frame wins: when the detector is slower than the fused stream, older frames are skipped and counted.
The detector and its weight search live in ``egmt_ros.detection``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import Image

from egmt_ros.core.codec import ImageConversionError, image_to_numpy
from egmt_ros.fusion.stats import LatencyWindow, RateMeter
from egmt_ros.nodes.common import (ERROR, OK, WARN, EgmtNode, LatestSlot, numpy_to_image, param, qos_by_name,
                                   run_node)

DEFAULTS: dict[str, Any] = {
    "qos": "sensor_data",
    "qos_depth": 5,
    "backend": "ultralytics",
    "weights": "",
    "weights_trust_pickle": False,
    "device": "cpu",
    "threads": 0,
    "conf": 0.25,
    "iou": 0.45,
    "imgsz": 640,
    "classes": "",
    "publish_annotated": True,
    "input_timeout": 2.0,
    "diagnostics_period": 1.0,
}
DYNAMIC = ("conf", "iou", "classes", "publish_annotated", "input_timeout")


class DetectionNode(EgmtNode):
    """Runs the detector on the fused stream."""

    diag_label = "detection"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("detection_node", DEFAULTS, **kwargs)
        from egmt_ros.detection.backends import make_detector

        threads = param(self, "threads") or max(1, (os.cpu_count() or 2) // 2)  # 0: half the cores, as fusion
        self.detector = make_detector(param(self, "backend"), trust_pickle=param(self, "weights_trust_pickle"),
                                      threads=threads,
                                      weights=param(self, "weights") or None, device=param(self, "device"),
                                      conf=param(self, "conf"), iou=param(self, "iou"), imgsz=param(self, "imgsz"),
                                      classes=_split(param(self, "classes")))
        self.get_logger().info(f"detector weights: {self.detector.weights}")
        from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

        self._types = (Detection2D, Detection2DArray, ObjectHypothesisWithPose)
        qos = qos_by_name(param(self, "qos"), param(self, "qos_depth"))
        self.fused_topic = self.resolve_topic_name("/egmt/fused")
        self.create_subscription(Image, "/egmt/fused", self._on_image, qos)
        self.det_pub = self.create_publisher(Detection2DArray, "/egmt/detections", 10)
        self.img_pub = self.create_publisher(Image, "/egmt/detections/image", qos)
        self.add_on_set_parameters_callback(self._on_params)
        self.lat = LatencyWindow()
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.error: tuple[float, str] | None = None
        self.last_counts: dict[str, int] = {}
        self.slot = LatestSlot()
        self.start()

    def _on_params(self, params) -> SetParametersResult:
        for p in params:
            if p.name not in DYNAMIC:
                return SetParametersResult(successful=False, reason=f"{p.name} needs a node restart")
        for p in params:
            if p.name in ("conf", "iou"):
                setattr(self.detector, p.name, float(p.value))
            elif p.name == "classes":
                try:
                    self.detector.set_classes(_split(p.value))
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _on_image(self, msg: Image) -> None:
        self.rate_in.tick()
        self.slot.put(msg)  # newest frame wins; skipped ones are counted by the slot

    def wake_worker(self) -> None:
        self.slot.wake()

    def work_once(self) -> None:
        msg = self.slot.take()
        if msg is None:
            return
        try:
            self._detect(msg)
        except (ImageConversionError, ValueError) as exc:
            self.error = (time.monotonic(), f"bad image on {self.fused_topic}: {exc}")
            self.get_logger().warning(self.error[1], throttle_duration_sec=2.0)
        except Exception as exc:  # noqa: BLE001 - keep running, report on /diagnostics
            self.error = (time.monotonic(), f"detection failed: {exc}")
            self.get_logger().error(self.error[1], throttle_duration_sec=2.0)

    def _detect(self, msg: Image) -> None:
        Detection2D, Detection2DArray, ObjectHypothesisWithPose = self._types
        t0 = time.perf_counter()
        img = image_to_numpy(msg)
        if msg.encoding == "bgr8":
            rgb = img[:, :, ::-1]
        elif msg.encoding in ("rgb8", "mono8"):
            rgb = img
        else:
            raise ValueError(f"unsupported encoding {msg.encoding!r} (expected bgr8, rgb8 or mono8)")
        dets = self.detector.detect(np.ascontiguousarray(rgb))
        out = Detection2DArray()
        out.header = msg.header
        counts: dict[str, int] = {}
        for i, d in enumerate(dets):
            x1, y1, x2, y2 = d.box_xyxy
            det = Detection2D()
            det.header = msg.header
            det.id = str(i)
            det.bbox.center.position.x = (x1 + x2) / 2.0
            det.bbox.center.position.y = (y1 + y2) / 2.0
            det.bbox.size_x = float(x2 - x1)
            det.bbox.size_y = float(y2 - y1)
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id = d.class_name
            hyp.hypothesis.score = float(d.score)
            det.results.append(hyp)
            out.detections.append(det)
            counts[d.class_name] = counts.get(d.class_name, 0) + 1
        self.det_pub.publish(out)
        if param(self, "publish_annotated"):
            ann = self.detector.annotate(rgb, dets)
            enc = "rgb8" if ann.ndim == 3 else "mono8"
            ann_msg = numpy_to_image(np.ascontiguousarray(ann[:, :, ::-1]) if enc == "rgb8" else ann,
                                     "bgr8" if enc == "rgb8" else "mono8", header=msg.header)
            self.img_pub.publish(ann_msg)
        self.last_counts = counts
        self.lat.add(time.perf_counter() - t0)
        self.rate_out.tick()

    def status(self) -> tuple[bytes, str, dict[str, Any]]:
        now = time.monotonic()
        p50, p99 = self.lat.percentiles_ms(50, 99)
        values: dict[str, Any] = {"input_rate_hz": self.rate_in.rate(now), "output_rate_hz": self.rate_out.rate(now),
                                  "latency_ms_p50": p50, "latency_ms_p99": p99, "frames_skipped": self.slot.replaced,
                                  "weights": self.detector.weights,
                                  "last_counts": ",".join(f"{k}={v}" for k, v in sorted(self.last_counts.items()))}
        level, msgs = OK, []
        silence = self.rate_in.silence(now)
        if silence is None or silence > param(self, "input_timeout"):
            level = WARN
            msgs.append(f"no fused image {'yet' if silence is None else f'for {silence:.1f} s'} on "
                        f"{self.fused_topic}: is fusion_node running?")
        if self.error is not None and now - self.error[0] < 5.0:
            level = max(level, ERROR)
            msgs.append(self.error[1])
        return level, "; ".join(msgs) if msgs else "detecting", values


def _split(text: str) -> list[str] | None:
    """'person, car' -> ['person', 'car']; '' -> None (all classes)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    return items or None


def main(args: list[str] | None = None) -> None:
    """Run the node alone (``ros2 run egmt_ros detection_node``)."""
    run_node(DetectionNode, args=args)


if __name__ == "__main__":
    main()
