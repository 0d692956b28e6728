"""Train a YOLO detector on fused IR/visible images and report its per-class mAP (EGMT Table VI layout).

    python -m egmt_ros.cli.train_detector --data M3FD_ROOT --fusion egmt_rt --model yolov5nu.yaml \\
        --epochs 100 --imgsz 640 --batch 16 --out out/detect_egmt_rt

``--fusion`` is a fusion method name (``egmt_rt``, ``average``, ``lp``, ...) or ``ir`` / ``vi`` for one modality.
Outputs under ``--out``: ``datasets/<fusion>/`` (ultralytics dataset), ``cache/`` (fused images, reused by later
runs), ``train/`` (ultralytics run, ``weights/best.pt``), ``detection_map.md`` / ``.csv`` (val split).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from egmt_ros.detection.detector import Detector, add_trust_argument
from egmt_ros.detection.evaluate import evaluate_input, write_tables
from egmt_ros.detection.training import prepare_dataset, train


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m egmt_ros.cli.train_detector", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="M3FD-style root: ir/ + vi/ images, Annotation/ (VOC) or labels/")
    p.add_argument("--fusion", required=True, help="fusion method name, or ir / vi for a single modality")
    p.add_argument("--model", default="yolov5nu.yaml",
                   help="ultralytics model: yolov5nu.yaml / yolo11n.yaml (random init) or a .pt to fine-tune "
                        "(with --trust-pickle: a .pt is a pickle that can run code when loaded)")
    add_trust_argument(p, "--trust-pickle")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help="ultralytics device: cpu, 0, 0,1, ...")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers")
    p.add_argument("--out", default="out/detect", help="output folder")
    p.add_argument("--cache", default=None, help="fused-image cache folder (default OUT/cache)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of pairs in the val split when the root has no train.txt/val.txt")
    p.add_argument("--names", default=None, help="comma-separated class names for YOLO txt labels without classes.txt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true", help="skip ultralytics' training plots (faster)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Fuse, write the dataset, train, evaluate on val; returns 0."""
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    t0 = time.perf_counter()
    prep = prepare_dataset(args.data, args.fusion, out, args.cache, args.val_fraction, names)
    t_data = time.perf_counter() - t0
    print(f"dataset: {len(prep.train)} train + {len(prep.val)} val pairs, {len(prep.data.names)} classes "
          f"({', '.join(prep.data.names[:8])}{', ...' if len(prep.data.names) > 8 else ''}), "
          f"labels {prep.data.label_format}, input {args.fusion} ({t_data:.1f} s) -> {prep.yaml_path}")
    t1 = time.perf_counter()
    best = train(prep.yaml_path, args.model, out, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                 device=args.device, workers=args.workers, seed=args.seed, plots=not args.no_plots,
                 trust_pickle=args.trust_pickle)
    print(f"trained {args.model} for {args.epochs} epoch(s) in {time.perf_counter() - t1:.1f} s -> {best}")
    # best.pt is the file this run just wrote into --out: loading it is this run's own consent
    detector = Detector(str(best), device=args.device, conf=0.001, iou=0.7, imgsz=args.imgsz, trust_pickle=True)
    result = evaluate_input(detector, prep.val, prep.data.names, prep.maker, prep.cache)
    md, csv_path = write_tables([result], out, title=f"Detection mAP, val split, {args.model} trained on {args.fusion}")
    print(md.read_text())
    print(f"tables: {md} {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
