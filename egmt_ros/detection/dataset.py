"""M3FD-style detection data -> ultralytics datasets of fused (or single-modality) images.

Input layout (the root given with ``--data``):

- infrared images in ``ir/`` (also accepted: ``Ir/``, ``IR/``, ``infrared/``), visible in ``vi/`` (``Vis/``, ``VI/``,
  ``visible/``), paired by file stem;
- labels either as Pascal VOC XML in ``Annotation/`` (M3FD's release; also ``Annotations/``) with class names, or
  YOLO txt in ``labels/`` (``class cx cy w h``, normalised). YOLO class ids are named by ``classes.txt`` (one name a
  line, in the root or in ``labels/``), else by ``names`` given by the caller, else by the M3FD names
  (People, Car, Bus, Lamp, Motorcycle, Truck) when every id is below 6;
- optional ``train.txt`` + ``val.txt`` (one stem or file name a line) fix the split; otherwise it is deterministic
  by a hash of each stem (``val_fraction`` of the pairs go to val, at least one).

A pair with no label file is used as a background image (no objects), as ultralytics does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from egmt_ros.core.images import IMAGE_EXTS
from egmt_ros.detection.classmap import M3FD_CLASSES
from egmt_ros.detection.inputs import DetectorInput, FusedCache

IR_DIRS = ("ir", "Ir", "IR", "infrared", "Infrared")
VI_DIRS = ("vi", "Vis", "VI", "vis", "visible", "Visible")
VOC_DIRS = ("Annotation", "Annotations", "annotation", "annotations")
YOLO_DIRS = ("labels",)

#: One label: (class id, cx, cy, w, h) normalised to [0, 1].
Label = tuple[int, float, float, float, float]


@dataclass
class Sample:
    """One IR/visible pair and its labels."""

    stem: str
    ir: Path
    vi: Path
    labels: list[Label] = field(default_factory=list)
    has_label_file: bool = False


@dataclass
class DetectionData:
    """A loaded dataset: samples, class names and where the labels came from."""

    root: Path
    samples: list[Sample]
    names: list[str]
    label_format: str  # "voc" or "yolo"


def _find_dir(root: Path, options: tuple[str, ...]) -> Path | None:
    return next((root / o for o in options if (root / o).is_dir()), None)


def _images_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS}


def read_voc(xml_path: Path, names: list[str], image_size: tuple[int, int] | None = None) -> list[Label]:
    """Pascal VOC XML -> labels. Unknown class names are appended to ``names`` (in place).

    ``image_size`` (w, h) is used when the XML has no usable ``<size>``.
    """
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    w = float(size.findtext("width", "0")) if size is not None else 0.0
    h = float(size.findtext("height", "0")) if size is not None else 0.0
    if (w <= 0 or h <= 0) and image_size is not None:
        w, h = float(image_size[0]), float(image_size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"{xml_path}: no image size")
    lowered = [n.lower() for n in names]
    labels: list[Label] = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            continue
        if name.lower() not in lowered:
            names.append(name)
            lowered.append(name.lower())
        cid = lowered.index(name.lower())
        x1, y1, x2, y2 = (float(box.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
        x1, x2 = max(0.0, min(x1, x2)), min(w, max(x1, x2))
        y1, y2 = max(0.0, min(y1, y2)), min(h, max(y1, y2))
        if x2 > x1 and y2 > y1:
            labels.append((cid, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h))
    return labels


def read_yolo(txt_path: Path) -> list[Label]:
    """YOLO txt (``class cx cy w h`` normalised, one object a line) -> labels."""
    labels: list[Label] = []
    for line in txt_path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5:
            labels.append((int(float(parts[0])), *(float(v) for v in parts[1:5])))
    return labels


def _read_names_file(root: Path, label_dir: Path) -> list[str] | None:
    for cand in (root / "classes.txt", label_dir / "classes.txt"):
        if cand.is_file():
            return [n.strip() for n in cand.read_text().splitlines() if n.strip()]
    return None


def load_detection_data(root: str | Path, names: list[str] | None = None) -> DetectionData:
    """Read an M3FD-style folder (see the module docstring). Raises FileNotFoundError / ValueError clearly."""
    root = Path(root)
    ir_dir, vi_dir = _find_dir(root, IR_DIRS), _find_dir(root, VI_DIRS)
    if ir_dir is None or vi_dir is None:
        raise FileNotFoundError(f"{root}: expected infrared images in one of {IR_DIRS} and visible images in one "
                                f"of {VI_DIRS}")
    ir_imgs, vi_imgs = _images_by_stem(ir_dir), _images_by_stem(vi_dir)
    stems = sorted(set(ir_imgs) & set(vi_imgs))
    if not stems:
        raise FileNotFoundError(f"{root}: no IR/visible pairs with matching names in {ir_dir} and {vi_dir}")
    voc_dir, yolo_dir = _find_dir(root, VOC_DIRS), _find_dir(root, YOLO_DIRS)
    samples: list[Sample] = []
    if voc_dir is not None:
        class_names = list(names) if names else list(M3FD_CLASSES)
        for s in stems:
            xml = voc_dir / f"{s}.xml"
            labels: list[Label] = []
            if xml.is_file():
                img = cv2.imread(str(vi_imgs[s]), cv2.IMREAD_UNCHANGED) if _voc_needs_size(xml) else None
                size = (img.shape[1], img.shape[0]) if img is not None else None
                labels = read_voc(xml, class_names, size)
            samples.append(Sample(s, ir_imgs[s], vi_imgs[s], labels, xml.is_file()))
        return DetectionData(root, samples, class_names, "voc")
    if yolo_dir is not None:
        for s in stems:
            txt = yolo_dir / f"{s}.txt"
            samples.append(Sample(s, ir_imgs[s], vi_imgs[s], read_yolo(txt) if txt.is_file() else [], txt.is_file()))
        max_id = max((lab[0] for smp in samples for lab in smp.labels), default=-1)
        class_names = _read_names_file(root, yolo_dir) or (list(names) if names else None)
        if class_names is None:
            if max_id >= len(M3FD_CLASSES):
                raise ValueError(f"{root}: YOLO labels use class ids up to {max_id} but there is no classes.txt; "
                                 "give the class names (classes.txt or --names)")
            class_names = list(M3FD_CLASSES)
        if max_id >= len(class_names):
            raise ValueError(f"{root}: class id {max_id} has no name ({len(class_names)} names given)")
        return DetectionData(root, samples, class_names, "yolo")
    raise FileNotFoundError(f"{root}: no labels: expected VOC XML in one of {VOC_DIRS} or YOLO txt in {YOLO_DIRS}")


def _voc_needs_size(xml: Path) -> bool:
    size = ET.parse(xml).getroot().find("size")
    return size is None or float(size.findtext("width", "0") or 0) <= 0


def _read_stem_list(path: Path) -> list[str]:
    return [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]


def split_samples(data: DetectionData, val_fraction: float = 0.2) -> tuple[list[Sample], list[Sample]]:
    """(train, val): from ``train.txt``/``val.txt`` in the root if both exist, else a stable hash split."""
    by_stem = {s.stem: s for s in data.samples}
    tr_file, va_file = data.root / "train.txt", data.root / "val.txt"
    if tr_file.is_file() and va_file.is_file():
        train = [by_stem[s] for s in _read_stem_list(tr_file) if s in by_stem]
        val = [by_stem[s] for s in _read_stem_list(va_file) if s in by_stem]
        if not train or not val:
            raise ValueError(f"{data.root}: train.txt/val.txt name no pair of this folder")
        return train, val
    if len(data.samples) == 1:
        return list(data.samples), list(data.samples)

    def bucket(stem: str) -> float:
        return int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    val = [s for s in data.samples if bucket(s.stem) < val_fraction]
    if not val:
        val = [min(data.samples, key=lambda s: bucket(s.stem))]
    val_stems = {s.stem for s in val}
    train = [s for s in data.samples if s.stem not in val_stems]
    return train, val


def _place(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy when linking is not possible)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_yolo_dataset(data: DetectionData, train: list[Sample], val: list[Sample], maker: DetectorInput,
                       cache: FusedCache, out_dir: str | Path) -> Path:
    """Write ``images/{train,val}``, ``labels/{train,val}`` and ``data.yaml`` for one input; returns data.yaml."""
    import yaml

    out = Path(out_dir).resolve()
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            d = out / sub / split
            if d.is_dir():
                shutil.rmtree(d)
            d.mkdir(parents=True)
    for split, samples in (("train", train), ("val", val)):
        for s in samples:
            img = cache.get(maker, s.stem, s.ir, s.vi)
            _place(img, out / "images" / split / f"{s.stem}{img.suffix}")
            lines = [f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" for c, cx, cy, w, h in s.labels]
            (out / "labels" / split / f"{s.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    yaml_path = out / "data.yaml"
    spec = {"path": str(out), "train": "images/train", "val": "images/val",
            "names": {i: n for i, n in enumerate(data.names)}}
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return yaml_path
