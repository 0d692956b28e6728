"""Detection mAP per class (the EGMT paper's Table VI layout) and its Markdown/CSV tables.

Definitions (the same as ultralytics' ``val``, so numbers compare with its output):

- a prediction is a true positive at IoU threshold t when it is matched one-to-one to a ground-truth box of the same
  class with IoU >= t (greedy by IoU, highest first); thresholds 0.50, 0.55, ..., 0.95;
- AP of a class: area under its precision envelope over recall, sampled at 101 recall points (trapezoid rule),
  predictions ranked by score; mAP@0.5 uses t = 0.5, mAP@[0.5:0.95] averages the ten thresholds;
- classes are scored only when the evaluated images hold at least one ground-truth box of that class, and only when
  the detector can output them (else "n/a", e.g. M3FD's Lamp for a COCO detector); "All" is the mean over the
  scored classes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from egmt_ros.detection.classmap import class_mapping
from egmt_ros.detection.dataset import Sample
from egmt_ros.detection.detector import Detection, Detector
from egmt_ros.detection.inputs import DetectorInput, FusedCache

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (N x 4) and ``b`` (M x 4), xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def match(pred_boxes: np.ndarray, pred_cls: np.ndarray, pred_conf: np.ndarray, gt_boxes: np.ndarray,
          gt_cls: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """True-positive matrix (num_pred x num_thresholds) of one image.

    COCO-style: predictions in descending score order each claim the unclaimed ground-truth box of their class with
    the highest IoU, if that IoU reaches the threshold (ultralytics 8.4's ``match_predictions``).
    """
    tp = np.zeros((len(pred_boxes), len(thresholds)), dtype=bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(gt_boxes, pred_boxes) * (gt_cls[:, None] == pred_cls[None, :])
    claimed = np.zeros((len(gt_boxes), len(thresholds)), dtype=bool)
    cols = np.arange(len(thresholds))
    for j in np.argsort(-np.asarray(pred_conf), kind="stable"):
        if not (iou[:, j] >= thresholds.min()).any():
            continue
        available = np.where(claimed, 0.0, iou[:, j, None])
        best = available.argmax(0)
        tp[j] = available[best, cols] >= thresholds
        claimed[best, cols] |= tp[j]
    return tp


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """AP from a recall/precision curve (ranked predictions): 101-point interpolated precision envelope, trapezoid.

    Precision drops to 0 right after the last reached recall (as in ultralytics 8.4's ``compute_ap``).
    """
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x))


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, gt_cls: np.ndarray
                 ) -> dict[int, np.ndarray]:
    """class id -> AP at each IoU threshold, for every class that has ground truth."""
    order = np.argsort(-conf, kind="stable")
    tp, pred_cls = tp[order], pred_cls[order]
    out: dict[int, np.ndarray] = {}
    for c in np.unique(gt_cls):
        sel = pred_cls == c
        n_gt = int((gt_cls == c).sum())
        aps = np.zeros(tp.shape[1])
        if sel.any():
            tpc = np.cumsum(tp[sel], axis=0)
            fpc = np.cumsum(~tp[sel], axis=0)
            recall = tpc / (n_gt + 1e-16)
            precision = tpc / (tpc + fpc)
            aps = np.array([average_precision(recall[:, k], precision[:, k]) for k in range(tp.shape[1])])
        out[int(c)] = aps
    return out


@dataclass
class EvalResult:
    """Per-class AP of one input (fusion method or modality) on one set of images."""

    name: str
    class_names: list[str]
    ap50: dict[int, float]
    ap50_95: dict[int, float]
    n_gt: dict[int, int]
    unmapped: dict[int, str] = field(default_factory=dict)
    n_images: int = 0

    @property
    def all50(self) -> float:
        """Mean mAP@0.5 over the scored classes (nan if none)."""
        return float(np.mean(list(self.ap50.values()))) if self.ap50 else float("nan")

    @property
    def all50_95(self) -> float:
        """Mean mAP@[0.5:0.95] over the scored classes (nan if none)."""
        return float(np.mean(list(self.ap50_95.values()))) if self.ap50_95 else float("nan")


def score(name: str, class_names: list[str], detector_names: list[str],
          detections: Sequence[Sequence[Detection]], ground_truth: Sequence[np.ndarray]) -> EvalResult:
    """mAP of per-image detections against per-image ground truth (rows: class id, x1, y1, x2, y2 in pixels).

    Detector classes are mapped to dataset classes with :func:`egmt_ros.detection.classmap.class_mapping`.
    """
    det_to_data, unmapped = class_mapping(detector_names, class_names)
    tps, confs, pcls, gcls = [], [], [], []
    for dets, gt in zip(detections, ground_truth):
        kept = [d for d in dets if d.class_id in det_to_data]
        pb = np.array([d.box_xyxy for d in kept], dtype=float).reshape(-1, 4)
        pc = np.array([det_to_data[d.class_id] for d in kept], dtype=int)
        gt = np.asarray(gt, dtype=float).reshape(-1, 5)
        gt = gt[~np.isin(gt[:, 0].astype(int), list(unmapped))]
        conf = np.array([d.score for d in kept], dtype=float)
        tps.append(match(pb, pc, conf, gt[:, 1:], gt[:, 0].astype(int)))
        confs.append(conf)
        pcls.append(pc)
        gcls.append(gt[:, 0].astype(int))
    all_gt = np.concatenate(gcls) if gcls else np.zeros(0, dtype=int)
    aps = ap_per_class(np.concatenate(tps) if tps else np.zeros((0, 10), bool),
                       np.concatenate(confs) if confs else np.zeros(0),
                       np.concatenate(pcls) if pcls else np.zeros(0, dtype=int), all_gt)
    n_gt = {int(c): int((all_gt == c).sum()) for c in np.unique(all_gt)}
    return EvalResult(name, list(class_names), {c: float(a[0]) for c, a in aps.items()},
                      {c: float(a.mean()) for c, a in aps.items()}, n_gt, unmapped, len(detections))


def labels_to_pixels(labels: Sequence[tuple[int, float, float, float, float]], width: int, height: int) -> np.ndarray:
    """YOLO-normalised labels -> rows (class id, x1, y1, x2, y2) in pixels."""
    rows = [(c, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            for c, cx, cy, w, h in labels]
    return np.array(rows, dtype=float).reshape(-1, 5)


def evaluate_input(detector: Detector, samples: Sequence[Sample], class_names: list[str], maker: DetectorInput,
                   cache: FusedCache) -> EvalResult:
    """Run ``detector`` on the ``maker`` input of every sample (cached on disk) and score it."""
    dets, gts = [], []
    for s in samples:
        img = cache.load(maker, s.stem, s.ir, s.vi)
        dets.append(detector.detect(img))
        gts.append(labels_to_pixels(s.labels, img.shape[1], img.shape[0]))
    return score(maker.name, class_names, detector.class_names, dets, gts)


def _columns(results: Sequence[EvalResult]) -> list[int]:
    """Class ids shown: those with ground truth in any result, plus unmapped ones (shown as n/a), by id."""
    ids = set()
    for r in results:
        ids |= set(r.n_gt) | set(r.unmapped)
    return sorted(ids)


def _cell(r: EvalResult, cid: int, values: dict[int, float]) -> str:
    if cid in r.unmapped:
        return "n/a"
    if cid not in values:
        return "-"
    return f"{values[cid]:.3f}"


def write_tables(results: Sequence[EvalResult], out_dir: str | Path, stem: str = "detection_map",
                 title: str = "Detection mAP") -> tuple[Path, Path]:
    """Table VI layout for several inputs side by side: Markdown (best per column in bold) and CSV.

    CSV rows: (method, metric, one column per class, All). Returns (markdown path, csv path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = results[0].class_names
    cols = _columns(results)
    blocks = (("mAP@0.5", "ap50", "all50"), ("mAP@[0.5:0.95]", "ap50_95", "all50_95"))
    csv_path = out / f"{stem}.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "metric"] + [names[c] for c in cols] + ["All"])
        for r in results:
            for metric, attr, all_attr in blocks:
                w.writerow([r.name, metric] + [_cell(r, c, getattr(r, attr)) for c in cols]
                           + [f"{getattr(r, all_attr):.3f}"])

    def best(values: list[str]) -> list[str]:
        nums = [float(v) for v in values if v not in ("n/a", "-", "nan")]
        top = max(nums) if nums else None
        return [f"**{v}**" if top is not None and len(results) > 1 and v not in ("n/a", "-", "nan")
                and float(v) == top else v for v in values]

    grid = []
    for r in results:
        row = []
        for _, attr, all_attr in blocks:
            row += [_cell(r, c, getattr(r, attr)) for c in cols] + [f"{getattr(r, all_attr):.3f}"]
        grid.append(row)
    grid_t = [best(list(col)) for col in zip(*grid)] if grid else []
    grid = [list(row) for row in zip(*grid_t)]
    header = ["Method"] + [(f"All {m}" if c == -1 else f"{names[c]} {m}")
                           for m, _, _ in blocks for c in cols + [-1]]
    lines = [f"# {title}", "",
             "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([r.name] + row) + " |" for r, row in zip(results, grid)]
    r0 = results[0]
    lines += ["", f"Images: {r0.n_images}. Ground-truth boxes: "
              + ", ".join(f"{names[c]} {n}" for c, n in sorted(r0.n_gt.items())) + "."]
    for cid, reason in sorted(r0.unmapped.items()):
        lines.append(f"- {names[cid]}: n/a, {reason}.")
    lines += ["- \"-\": no ground truth of this class in the evaluated images. All: mean over the scored classes.",
              "- AP: 101-point interpolated precision envelope (ultralytics' definition); "
              "mAP@[0.5:0.95] averages IoU 0.50:0.05:0.95. Best per column in bold."]
    md_path = out / f"{stem}.md"
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path
