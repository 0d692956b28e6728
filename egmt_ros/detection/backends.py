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


def make_detector(backend: str = "ultralytics", trust_pickle: bool = False, threads: int = 0, **kwargs: Any):
    """The detector of ``backend`` (ValueError listing the names for another); ``kwargs`` are the detector's
    (``weights``, ``device``, ``conf``, ``iou``, ``imgsz``, ``classes``). ``threads`` > 0: its inference threads
    (torch's intra-op threads of this process, and an OpenVINO model's own: :func:`limit_openvino_threads`)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    if backend == "ultralytics":
        from egmt_ros.detection.detector import Detector

        det = Detector(trust_pickle=trust_pickle, **kwargs)
        if threads > 0:
            limit_openvino_threads(det, threads)
        return det
    if backend == "yolov5":
        from egmt_ros.detection.yolov5_backend import YOLOv5Detector

        return YOLOv5Detector(trust_pickle=trust_pickle, **kwargs)
    raise ValueError(f"unknown detector backend {backend!r}; use one of {', '.join(DETECTOR_BACKENDS)}")


def limit_openvino_threads(detector: Any, threads: int) -> bool:
    """Recompile an ultralytics OpenVINO model (the default YOLO11n) with ``threads`` inference threads and no CPU
    pinning, so that it shares a small CPU with the fusion process instead of spreading over every core; False (and
    nothing changed) for any other model format. ultralytics sets only a LATENCY hint and keeps the compile step as
    ``backend.compile_model`` (a partial of ``Core.compile_model``), which this extends."""
    from functools import partial
    from pathlib import Path

    model = getattr(getattr(getattr(detector, "model", None), "predictor", None), "model", None)
    backend = getattr(model, "backend", None)
    compile_model = getattr(backend, "compile_model", None)
    xml = sorted(Path(detector.weights).glob("*.xml")) if Path(detector.weights).is_dir() else []
    if not isinstance(compile_model, partial) or not hasattr(backend, "ov_compiled_model") or not xml:
        return False
    core = compile_model.func.__self__
    config = {**compile_model.keywords.get("config", {}), "INFERENCE_NUM_THREADS": int(threads),
              "ENABLE_CPU_PINNING": False}
    backend.compile_model = partial(compile_model.func, device_name=compile_model.keywords["device_name"],
                                    config=config)
    backend.ov_compiled_model = backend.compile_model(core.read_model(str(xml[0])))
    return True
