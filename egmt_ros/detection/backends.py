"""Detector backends by name, for the detection node and the benchmarks.

============== =====================================================================================================
``ultralytics`` :class:`egmt_ros.detection.detector.Detector`: ultralytics YOLO; default weights the YOLO11n INT8
                OpenVINO export of the data root (any ultralytics format through ``weights``).
``yolov5``      :class:`egmt_ros.detection.yolov5_backend.YOLOv5Detector`: an official YOLOv5 checkpoint (default
                ``<data root>/weights/yolov5n.pt``) with the ``yolov5`` package, CPU or CUDA; a pickle, loaded only
                with ``trust_pickle=True``.
============== =====================================================================================================
"""

from __future__ import annotations

from typing import Any

DETECTOR_BACKENDS = ("ultralytics", "yolov5")


def make_detector(backend: str = "ultralytics", trust_pickle: bool = False, **kwargs: Any):
    """The detector of ``backend`` (ValueError listing the names for another); ``kwargs`` are the detector's
    (``weights``, ``device``, ``conf``, ``iou``, ``imgsz``, ``classes``)."""
    if backend == "ultralytics":
        from egmt_ros.detection.detector import Detector

        return Detector(**kwargs)
    if backend == "yolov5":
        from egmt_ros.detection.yolov5_backend import YOLOv5Detector

        return YOLOv5Detector(trust_pickle=trust_pickle, **kwargs)
    raise ValueError(f"unknown detector backend {backend!r}; use one of {', '.join(DETECTOR_BACKENDS)}")
