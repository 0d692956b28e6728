"""Per-class detection mAP of fused vs single-modality inputs, side by side (the EGMT paper's Table VI layout).

    python -m egmt_ros.cli.eval_detector --data M3FD_ROOT --weights out/detect/train/weights/best.pt \\
        --fusion ir,vi,average,lp,egmt_rt --out docs/detection/m3fd

``--weights`` is one model for every input, or ``name=path`` pairs (``vi=a.pt,egmt_rt=b.pt``) when each input has
its own detector (the paper's protocol: one YOLOv5 trained per fusion method). Without ``--weights`` the default
detector is used (COCO classes mapped to M3FD's; Lamp has no COCO class and shows n/a).
Writes ``detection_map.md`` and ``detection_map.csv`` to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from egmt_ros.detection.dataset import load_detection_data, split_samples
from egmt_ros.detection.detector import Detector, add_trust_argument
from egmt_ros.detection.evaluate import evaluate_input, write_tables
from egmt_ros.detection.inputs import DetectorInput, FusedCache


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m egmt_ros.cli.eval_detector", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="M3FD-style root: ir/ + vi/ images, Annotation/ (VOC) or labels/")
    p.add_argument("--weights", default=None, help="detector weights (one path, or name=path,...); default detector")
    add_trust_argument(p)
    p.add_argument("--fusion", default="ir,vi,average", help="comma-separated inputs: ir, vi, fusion method names")
    p.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="which pairs to score (the split train_detector used; default val)")
    p.add_argument("--out", default="out/eval_detector", help="output folder for the tables")
    p.add_argument("--cache", default=None, help="fused-image cache folder (default OUT/cache)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--device", default="cpu")
    p.add_argument("--conf", type=float, default=0.001, help="score threshold (0.001 as in ultralytics val)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU (0.7 as in ultralytics val)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--names", default=None, help="comma-separated class names for YOLO txt labels without classes.txt")
    return p


def parse_weights(spec: str | None, inputs: list[str]) -> dict[str, str | None]:
    """``--weights`` -> input name -> weights (None: the default detector)."""
    if not spec or "=" not in spec:
        return {name: spec for name in inputs}
    pairs = dict(item.split("=", 1) for item in spec.split(",") if item.strip())
    missing = [n for n in inputs if n not in pairs]
    if missing:
        raise SystemExit(f"--weights gives no model for {', '.join(missing)}")
    return {n: pairs[n] for n in inputs}


def main(argv: list[str] | None = None) -> int:
    """Score every input and write the table; returns 0."""
    args = build_parser().parse_args(argv)
    inputs = [f.strip() for f in args.fusion.split(",") if f.strip()]
    weights = parse_weights(args.weights, inputs)
    out = Path(args.out)
    data = load_detection_data(args.data, [n.strip() for n in args.names.split(",")] if args.names else None)
    train, val = split_samples(data, args.val_fraction)
    samples = {"val": val, "train": train, "all": data.samples}[args.split]
    cache = FusedCache(Path(args.cache) if args.cache else out / "cache")
    detectors: dict[str | None, Detector] = {}
    results = []
    for name in inputs:
        w = weights[name]
        if w not in detectors:
            detectors[w] = Detector(w, device=args.device, conf=args.conf, iou=args.iou, imgsz=args.imgsz,
                                    trust_pickle=args.weights_trust_pickle)
        results.append(evaluate_input(detectors[w], samples, data.names, DetectorInput(name), cache))
    used = sorted({Path(d.weights).name for d in detectors.values()})
    md, csv_path = write_tables(results, out, title=f"Detection mAP ({args.split} split, {len(samples)} pairs; "
                                                    f"detector {', '.join(used)})")
    print(md.read_text())
    print(f"tables: {md} {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
