"""The default object detector: a thin wrapper over ultralytics YOLO, offline, for numpy images.

Weights come from :func:`find_weights`: the explicit weights (detection_node's ``weights`` parameter), else the
official YOLO11n COCO model (INT8 OpenVINO export) under the data root, else ultralytics' standard ``yolo11n.pt``
when online. There is no working-directory fallback. Formats that load without unpickling are the default: an
OpenVINO model folder, ``.onnx``, ``.engine``, a model ``.yaml`` (random init). A ``.pt`` (or any other file
ultralytics would unpickle: a crafted one runs its code on load) is refused unless the caller consents with
``trust_pickle`` (the ``weights_trust_pickle`` parameter of detection_node, ``--weights-trust-pickle`` of the CLIs);
:func:`check_weights_safe` raises :class:`UntrustedWeightsError` saying how to load the weights safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from egmt_ros.detection.ultralytics_env import import_yolo, is_offline, prepare_ultralytics
from egmt_ros.paths import data_root

#: Default model under the data root (official Ultralytics YOLO11n COCO, INT8 OpenVINO export; AGPL-3.0).
DEFAULT_WEIGHTS_SUBPATH = Path("weights") / "yolo11n_int8_openvino_model"
#: ultralytics' standard model name, downloaded by ultralytics itself when online.
ULTRALYTICS_STANDARD = "yolo11n.pt"


#: Weight formats ultralytics loads without unpickling (besides a model folder such as an OpenVINO export).
SAFE_SUFFIXES = (".onnx", ".engine", ".yaml", ".yml")
#: How a user consents to loading a pickle.
TRUST_HINT = "weights_trust_pickle: true (detection_node) or --weights-trust-pickle (CLIs)"


class UntrustedWeightsError(ValueError):
    """Weights that would be unpickled (a .pt runs arbitrary code when loaded) without the caller's consent."""


def check_weights_safe(weights: str, trust_pickle: bool = False) -> None:
    """Refuse ``weights`` that ultralytics would unpickle unless ``trust_pickle``; the error says how to load them
    safely. A model folder and the :data:`SAFE_SUFFIXES` formats always pass."""
    p = Path(weights)
    if trust_pickle or p.is_dir() or p.suffix.lower() in SAFE_SUFFIXES:
        return
    raise UntrustedWeightsError(
        f"refusing to load detector weights {weights!r}: {p.suffix or 'such'} files are Python pickles, and loading "
        f"one runs any code it contains. Load weights safely: export them once on a machine where you trust the file "
        f"(yolo export model={p.name} format=openvino, or format=onnx) and give the exported folder or .onnx; or, "
        f"only for a file you trust, set {TRUST_HINT}")


def add_trust_argument(parser: Any, flag: str = "--weights-trust-pickle") -> None:
    """The CLIs' consent flag for loading pickled detector weights (see :func:`check_weights_safe`)."""
    parser.add_argument(flag, action="store_true",
                        help="load .pt detector weights although a .pt is a pickle that can run code when loaded "
                             "(only for files you trust; safe: an OpenVINO folder or .onnx export)")


@dataclass(frozen=True)
class Detection:
    """One detected object; ``box_xyxy`` is (x1, y1, x2, y2) in pixels of the image given to ``detect``."""

    class_id: int
    class_name: str
    score: float
    box_xyxy: tuple[float, float, float, float]


def find_weights(explicit: str | None = None) -> str:
    """The detector weights to load (a path, or the ultralytics model name ``yolo11n.pt`` when online).

    Search order: ``explicit`` (detection_node's ``weights`` parameter, the CLIs' ``--weights``; a missing path is
    an error, except a bare ultralytics model name when online); ``<data root>/weights/yolo11n_int8_openvino_model``;
    ``yolo11n.pt`` downloaded by ultralytics when not offline (a pickle: :class:`Detector` loads it only with
    ``trust_pickle``).
    Raises FileNotFoundError naming every place looked at.
    """
    prepare_ultralytics()
    offline = is_offline()
    if explicit:
        p = Path(explicit).expanduser()
        if p.exists():
            return str(p)
        bare_name = p.name == explicit and p.suffix in (".pt", ".yaml")
        if bare_name and not offline:
            return explicit  # ultralytics resolves/downloads its own model names
        raise FileNotFoundError(
            f"detector weights {explicit!r} not found (resolved to {p.resolve()}); give an existing .pt, .onnx, "
            f".engine file or OpenVINO model folder" + (" (YOLO_OFFLINE is set: nothing is downloaded)"
                                                         if bare_name else ""))
    looked: list[str] = []
    default = data_root() / DEFAULT_WEIGHTS_SUBPATH
    looked.append(f"{default} (data root: $EGMT_DATA or ../shared/data)")
    if default.is_dir():
        return str(default)
    if not offline:
        return ULTRALYTICS_STANDARD
    looked.append(f"ultralytics download of {ULTRALYTICS_STANDARD} (skipped: YOLO_OFFLINE is set)")
    raise FileNotFoundError("no detector weights found; looked at: " + "; ".join(looked)
                            + ". Set detection_node's weights parameter (or --weights) or EGMT_DATA.")


def to_detector_input(image: np.ndarray) -> np.ndarray:
    """uint8 or float [0, 1] RGB ``H x W x 3`` / grey ``H x W`` (or ``H x W x 1``) -> uint8 RGB ``H x W x 3``."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected an RGB H x W x 3 or grey H x W image, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img)


def _colour(class_id: int) -> tuple[int, int, int]:
    """A fixed, distinct RGB colour per class id."""
    hue = (class_id * 47) % 180
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def annotate(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A uint8 RGB copy of ``image`` with each detection's box and "name score" label (cv2 Hershey font)."""
    out = to_detector_input(image).copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 320))
    scale = 0.4 * thick
    for d in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in d.box_xyxy)
        col = _colour(d.class_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), col, thick)
        label = f"{d.class_name} {d.score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y1 + th + base + 2)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + 1), col, -1)
        cv2.putText(out, label, (x1 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                    cv2.LINE_AA)
    return out


class Detector:
    """ultralytics YOLO on numpy images (RGB uint8 / float [0, 1], or grey replicated to 3 channels)."""

    def __init__(self, weights: str | None = None, device: str = "cpu", conf: float = 0.25, iou: float = 0.45,
                 imgsz: int = 640, classes: list[str] | None = None, max_det: int = 300,
                 trust_pickle: bool = False) -> None:
        """Load ``weights`` (see :func:`find_weights`; a pickle such as a .pt only with ``trust_pickle``, see
        :func:`check_weights_safe`). ``classes`` keeps only these class names (None: all)."""
        self.weights: str = find_weights(weights)
        check_weights_safe(self.weights, trust_pickle)
        YOLO = import_yolo()
        self.model = YOLO(self.weights, task="detect")
        # One warm-up prediction sets up ultralytics' predictor (and compiles exported models) before ``names``
        # is read: reading it first would load an exported model a second time.
        self.model.predict(np.zeros((64, 64, 3), np.uint8), imgsz=imgsz, device=device, verbose=False)
        names = self.model.names
        self.class_names: list[str] = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
        self.device, self.conf, self.iou, self.imgsz, self.max_det = device, conf, iou, imgsz, max_det
        self.class_ids: list[int] | None = None
        self.set_classes(classes)

    def class_id(self, name: str) -> int:
        """Id of a class name (case-insensitive); ValueError listing the known names otherwise."""
        lowered = [n.lower() for n in self.class_names]
        if name.lower() not in lowered:
            raise ValueError(f"class {name!r} is not one of the detector's classes: {', '.join(self.class_names)}")
        return lowered.index(name.lower())

    def set_classes(self, classes: list[str] | None) -> None:
        """Keep only these class names from now on (None: all); ValueError for an unknown name."""
        self.class_ids = None if classes is None else [self.class_id(c) for c in classes]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in one image, boxes in its pixel coordinates."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections for each image of a list (images may differ in size)."""
        if not images:
            return []
        bgr = [np.ascontiguousarray(to_detector_input(im)[:, :, ::-1]) for im in images]  # ultralytics wants BGR
        results = self.model.predict(bgr, conf=self.conf, iou=self.iou, imgsz=self.imgsz, device=self.device,
                                     classes=self.class_ids, max_det=self.max_det, verbose=False)
        out: list[list[Detection]] = []
        for res in results:
            boxes = res.boxes
            xyxy = boxes.xyxy.cpu().numpy().astype(float)
            scores = boxes.conf.cpu().numpy().astype(float)
            cls = boxes.cls.cpu().numpy().astype(int)
            out.append([Detection(int(c), self.class_names[int(c)], float(s), tuple(float(v) for v in b))
                        for b, s, c in zip(xyxy, scores, cls)])
        return out

    def annotate(self, image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
        """See :func:`annotate`."""
        return annotate(image, detections)
