"""Detector pseudo-labels for training data without an annotation file (entities + multi-label targets).

The COCO YOLO11n INT8 OpenVINO model of the data root (``weights/yolo11n_int8_openvino_model``) runs on the visible
image and on the IR image (grey replicated to 3 channels) of every pair at confidence :data:`CONF`. The result is a
record in the annotation format of :mod:`egmt_ros.data.datasets`:

- ``entities``: every detected COCO class name (either modality), ``source`` ``"detector"``, ``score`` the highest
  confidence of that class over both images;
- ``labels``: multi-hot over :data:`CLASSES`, 1 where that class was detected in either image;
- ``captions``: ``{"ir": None, "vi": None}`` (no caption model involved);
- ``boxes``: every detection of a :data:`CLASSES` class, ``{"class", "score", "image": "vi"|"ir", "xyxy"}`` in
  pixels of the pair as :func:`egmt_ros.core.images.load_pair` returns it, and ``size`` ``[H, W]`` of that pair.
  Training turns the boxes into entity-region weights (:func:`egmt_ros.data.datasets.entity_region_maps`).

:data:`CLASSES` is the class list of the multi-label head: the COCO classes that occur in road / surveillance IR-VI
scenes (TNO, RoadScene, MSRS, M3FD, M2VD): people, vehicles, two-wheelers, street furniture, animals, boats.

CLI::

    python -m egmt_ros.data.autolabel DIR [DIR ...] --out labels.json [--every 15] [--conf 0.25]

(keep the output outside the repository, e.g. under ``~/.cache/egmt_ros/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from egmt_ros.core.classes import DEFAULT_CLASSES
from egmt_ros.core.images import load_pair, to_uint8
from egmt_ros.data.datasets import VIDEO_EVERY, PairSample, folder_samples
from egmt_ros.paths import data_root

#: Multi-label head classes (COCO names) for road / surveillance IR-visible scenes: the project's default list
#: (``egmt_ros.core.classes.DEFAULT_CLASSES``: person, car, bus, truck, bicycle, motorcycle, traffic light,
#: stop sign, bench, dog, boat, umbrella).
CLASSES: list[str] = list(DEFAULT_CLASSES)
#: Detector confidence threshold.
CONF = 0.25
#: Text encoder whose features the training turns entities into (recorded in the file).
TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
#: Label source string for model cards.
LABEL_SOURCE = "detector pseudo-labels: COCO YOLO11n INT8 OpenVINO (conf 0.25) on visible + IR"


def detector_path() -> Path:
    """The YOLO11n INT8 OpenVINO model folder of the data root."""
    return data_root() / "weights" / "yolo11n_int8_openvino_model"


def load_detector(path: str | Path | None = None) -> Any:
    """The ultralytics YOLO detector (offline; never a pickled .pt: :func:`check_weights_safe`)."""
    from egmt_ros.detection.detector import check_weights_safe

    check_weights_safe(str(path or detector_path()))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # heavy import, only here

    return YOLO(str(path or detector_path()), task="detect")


def _rel(p: Path) -> str:
    """A path relative to the data root when it lies under it, else absolute."""
    try:
        return str(Path(p).resolve().relative_to(data_root().resolve()))
    except ValueError:
        return str(Path(p).resolve())


def detect_boxes(model: Any, images_bgr: dict[str, np.ndarray], conf: float = CONF) -> list[dict[str, Any]]:
    """Every detection on each named image (uint8 ``H x W x 3`` BGR): ``{"class", "score", "image", "xyxy"}``."""
    out: list[dict[str, Any]] = []
    for image, img in images_bgr.items():
        res = model.predict(img, conf=conf, verbose=False)[0]
        for c, s, xyxy in zip(res.boxes.cls.tolist(), res.boxes.conf.tolist(), res.boxes.xyxy.tolist()):
            out.append({"class": str(res.names[int(c)]), "score": round(float(s), 4), "image": image,
                        "xyxy": [round(float(v), 1) for v in xyxy]})
    return out


def detect_classes(model: Any, images_bgr: Sequence[np.ndarray], conf: float = CONF) -> dict[str, float]:
    """``{class name: best confidence}`` over all images (uint8 ``H x W x 3`` BGR)."""
    return best_per_class(detect_boxes(model, {str(i): img for i, img in enumerate(images_bgr)}, conf))


def best_per_class(boxes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``{class name: best score}`` of a list of boxes."""
    best: dict[str, float] = {}
    for b in boxes:
        best[b["class"]] = max(best.get(b["class"], 0.0), float(b["score"]))
    return best


def label_sample(model: Any, sample: PairSample, conf: float = CONF,
                 classes: Sequence[str] = CLASSES) -> dict[str, Any]:
    """The annotation record of one pair from detections on its visible and IR images."""
    ir, vi = load_pair(sample.ir, sample.vi)
    vi_u8 = to_uint8(vi)
    vi_bgr = vi_u8[:, :, ::-1] if vi_u8.ndim == 3 else np.repeat(vi_u8[:, :, None], 3, axis=2)
    ir_bgr = np.repeat(to_uint8(ir)[:, :, None], 3, axis=2)
    boxes = detect_boxes(model, {"vi": np.ascontiguousarray(vi_bgr), "ir": ir_bgr}, conf)
    found = best_per_class(boxes)
    ents = [{"text": k, "source": "detector", "score": round(v, 4)}
            for k, v in sorted(found.items(), key=lambda kv: -kv[1])]
    return {"name": sample.name, "dataset": sample.dataset, "ir": _rel(sample.ir), "vi": _rel(sample.vi),
            "captions": {"ir": None, "vi": None}, "entities": ents,
            "labels": [int(c in found) for c in classes],
            "boxes": [b for b in boxes if b["class"] in classes], "size": list(ir.shape[:2])}


def autolabel(samples: Sequence[PairSample], model: Any | None = None, conf: float = CONF,
              classes: Sequence[str] = CLASSES, progress: bool = True) -> dict[str, Any]:
    """An annotation document (version 1) for ``samples``."""
    model = model or load_detector()
    it: Any = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="autolabel", unit="pair")
    records = [label_sample(model, s, conf, classes) for s in it]
    return {"version": 1, "classes": list(classes), "text_encoder": TEXT_ENCODER,
            "label_source": LABEL_SOURCE, "records": records}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write detector pseudo-label annotations of one or more data folders to a JSON file."""
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.data.autolabel", description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="+", help="pair, sequence or video folders")
    ap.add_argument("--out", required=True, help="output JSON (keep it outside the repository)")
    ap.add_argument("--every", type=int, default=VIDEO_EVERY, help="video frame step")
    ap.add_argument("--conf", type=float, default=CONF)
    args = ap.parse_args(argv)
    samples: list[PairSample] = []
    for d in args.data:
        samples.extend(folder_samples(d, every=args.every))
    doc = autolabel(samples, conf=args.conf)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    pos = np.asarray([r["labels"] for r in doc["records"]]).sum(0) if doc["records"] else []
    print(f"{len(samples)} pairs -> {out}; positives per class: "
          + ", ".join(f"{c}={int(n)}" for c, n in zip(CLASSES, pos)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
