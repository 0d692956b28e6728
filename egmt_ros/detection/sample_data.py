"""A tiny M3FD-style detection set built at run time from the data root, for tests, demos and CI.

Sources (never copied into the repository, only into ``out``):

- COCO8 (``detection/coco8``: 8 images with YOLO labels): each image serves as the visible image and its grey
  version as the "infrared" one;
- the MSRS pairs of ``msrs_train5`` that have a label file in ``msrs_detection_labels/labels`` (``N.txt`` belongs
  to MSRS image number N: 1.txt -> 00001D, 633.txt -> 00633D; class 0 person, 2 car, COCO ids).

``fmt="yolo"`` writes ``labels/*.txt`` with the COCO ids and a ``classes.txt`` (the 80 COCO names);
``fmt="voc"`` writes M3FD-style VOC XML in ``Annotation/`` with M3FD class names (COCO classes without an M3FD
counterpart are dropped).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import cv2

from egmt_ros.detection.classmap import to_m3fd
from egmt_ros.detection.dataset import read_yolo


def coco_names() -> list[str]:
    """The 80 COCO class names in id order (from ultralytics' bundled coco8.yaml)."""
    import yaml

    from egmt_ros.detection.ultralytics_env import prepare_ultralytics

    prepare_ultralytics()
    import ultralytics

    spec = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "datasets" / "coco8.yaml").read_text())
    return [spec["names"][i] for i in sorted(spec["names"])]


def _voc_xml(stem: str, width: int, height: int, labels, names: list[str]) -> str:
    objs = []
    for c, cx, cy, w, h in labels:
        m3fd = to_m3fd(names[c])
        if m3fd is None:
            continue
        x1, y1 = round((cx - w / 2) * width), round((cy - h / 2) * height)
        x2, y2 = round((cx + w / 2) * width), round((cy + h / 2) * height)
        objs.append(f"  <object><name>{escape(m3fd)}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                    f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return (f"<annotation>\n  <filename>{escape(stem)}.png</filename>\n  <size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>\n" + "\n".join(objs) + "\n</annotation>\n")


def build_sample_dataset(data_root: str | Path, out: str | Path, fmt: str = "yolo") -> Path:
    """Write the tiny set to ``out`` (``ir/``, ``vi/`` and ``labels/`` or ``Annotation/``); returns ``out``."""
    if fmt not in ("yolo", "voc"):
        raise ValueError(f"fmt must be 'yolo' or 'voc', not {fmt!r}")
    root, out = Path(data_root), Path(out)
    label_dir = out / ("labels" if fmt == "yolo" else "Annotation")
    for d in (out / "ir", out / "vi", label_dir):
        d.mkdir(parents=True, exist_ok=True)
    names = coco_names()
    items: list[tuple[str, Path, Path | None, Path]] = []  # stem, visible, infrared (None: grey of visible), labels
    coco = root / "detection" / "coco8"
    for split in ("train", "val"):
        for img in sorted((coco / "images" / split).glob("*.jpg")):
            items.append((img.stem, img, None, coco / "labels" / split / f"{img.stem}.txt"))
    msrs = root / "msrs_train5"
    for vi in sorted((msrs / "vi").glob("*.png")):
        lab = root / "msrs_detection_labels" / "labels" / f"{int(vi.stem[:5])}.txt"
        if lab.is_file():
            items.append((vi.stem, vi, msrs / "ir" / vi.name, lab))
    if not items:
        raise FileNotFoundError(f"no COCO8 or labelled MSRS images under {root}")
    for stem, vi, ir, lab in items:
        shutil.copyfile(vi, out / "vi" / vi.name)
        if ir is None:
            grey = cv2.imread(str(vi), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(out / "ir" / f"{stem}.png"), grey)
        else:
            shutil.copyfile(ir, out / "ir" / ir.name)
        if fmt == "yolo":
            shutil.copyfile(lab, label_dir / f"{stem}.txt")
        else:
            h, w = cv2.imread(str(vi), cv2.IMREAD_UNCHANGED).shape[:2]
            (label_dir / f"{stem}.xml").write_text(_voc_xml(stem, w, h, read_yolo(lab), names))
    if fmt == "yolo":
        (out / "classes.txt").write_text("\n".join(names) + "\n")
    return out
