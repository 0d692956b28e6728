"""Train an ultralytics YOLO detector on fused (or single-modality) images and score it (the EGMT Table VI protocol).

The paper trains YOLOv5 on M3FD images fused by each method and reports per-class mAP; here
:func:`prepare_dataset` fuses every pair (cached), writes an ultralytics dataset, :func:`train` runs ultralytics'
trainer, and :func:`egmt_ros.detection.evaluate.evaluate_input` scores the trained weights on the val split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from egmt_ros.detection.dataset import DetectionData, Sample, load_detection_data, split_samples, write_yolo_dataset
from egmt_ros.detection.detector import check_weights_safe
from egmt_ros.detection.inputs import DetectorInput, FusedCache
from egmt_ros.detection.ultralytics_env import import_yolo


@dataclass
class PreparedData:
    """A dataset written for one input name: the source data, its split and the ultralytics data.yaml."""

    data: DetectionData
    train: list[Sample]
    val: list[Sample]
    maker: DetectorInput
    cache: FusedCache
    yaml_path: Path


def prepare_dataset(root: str | Path, fusion: str, out_dir: str | Path, cache_dir: str | Path | None = None,
                    val_fraction: float = 0.2, names: list[str] | None = None) -> PreparedData:
    """Load ``root`` (M3FD layout), fuse every pair with ``fusion`` (cached) and write the ultralytics dataset.

    ``out_dir/datasets/<fusion>/`` receives the dataset; fused images are cached in ``cache_dir``
    (default ``out_dir/cache``).
    """
    out = Path(out_dir).resolve()
    data = load_detection_data(root, names)
    train, val = split_samples(data, val_fraction)
    maker = DetectorInput(fusion)
    cache = FusedCache(Path(cache_dir) if cache_dir else out / "cache")
    yaml_path = write_yolo_dataset(data, train, val, maker, cache, out / "datasets" / fusion)
    return PreparedData(data, train, val, maker, cache, yaml_path)


def train(data_yaml: str | Path, model: str, out_dir: str | Path, epochs: int = 100, imgsz: int = 640,
          batch: int = 16, device: str = "cpu", workers: int = 2, seed: int = 0, name: str = "train",
          plots: bool = True, trust_pickle: bool = False) -> Path:
    """Train ``model`` (a model .yaml for random init, or a .pt to fine-tune) with ultralytics; returns best.pt.

    The run goes to ``out_dir/<name>/`` (ultralytics' ``weights/``, ``results.csv``, plots unless ``plots`` is off).
    A .pt ``model`` is a pickle: refused unless ``trust_pickle`` (:func:`check_weights_safe`).
    """
    check_weights_safe(str(model), trust_pickle)
    YOLO = import_yolo()
    yolo = YOLO(model, task="detect")
    yolo.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, device=device, workers=workers,
               seed=seed, deterministic=True, project=str(Path(out_dir).resolve()), name=name, exist_ok=True,
               plots=plots, verbose=False)
    weights = Path(out_dir).resolve() / name / "weights"
    best = weights / "best.pt"
    return best if best.is_file() else weights / "last.pt"
