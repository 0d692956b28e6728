"""Fuse every IR/VI pair of two folders with any registered fusion method (default: the shipped EGMT model).

``python -m egmt_ros.cli.fuse --ir DIR --vi DIR --out DIR [--method egmt_rt|egmt|average|max|lp|gff]
[--model PATH] [--backend torch|compile|onnxruntime|tensorrt] [--device cpu|cuda] [--entities a,b]
[--command "more infrared on the background"]``

Pairs are matched by file stem. One 8-bit image per pair is written to ``--out`` under the IR file's name, at the
sources' size (never resized), in colour when the visible image is colour (fused luma + visible chroma). The pairs
go through the fusion node's engine (:class:`egmt_ros.fusion.engine.FusionEngine`), so a pair gives the same bytes
here as on /egmt/fused. ``--model`` loads another checkpoint (methods ``egmt_rt``/``egmt``); ``--command`` applies a
text command to the whole frame (regions of classes need detections, which files do not have).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from egmt_ros.cli.common import output_folder
from egmt_ros.core.images import IMAGE_EXTS, check_pair, load_pair, save_image
from egmt_ros.fusion.methods import available
from egmt_ros.paths import models_dir


def match_pairs(ir_dir: Path, vi_dir: Path) -> list[tuple[Path, Path]]:
    """``[(ir_path, vi_path)]`` paired by file stem, sorted by name."""
    if not ir_dir.is_dir() or not vi_dir.is_dir():
        raise FileNotFoundError(f"not a folder: {ir_dir if not ir_dir.is_dir() else vi_dir}")
    vi = {p.stem: p for p in vi_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
    return [(p, vi[p.stem]) for p in sorted(ir_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTS and p.stem in vi]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.cli.fuse", description=__doc__.split("\n")[0])
    ap.add_argument("--ir", type=Path, required=True, help="folder of infrared images")
    ap.add_argument("--vi", type=Path, required=True, help="folder of visible images (same file stems)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--method", default="egmt_rt", choices=available(), help="fusion method (default egmt_rt)")
    ap.add_argument("--model", type=Path, default=None,
                    help=f"EGMT checkpoint (default {models_dir() / 'egmt_rt.pt'})")
    ap.add_argument("--backend", default="torch", help="EGMT inference backend (egmt_ros.model.backends; default torch)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--entities", default="", help="comma-separated entity words for every pair, e.g. person,car")
    ap.add_argument("--command", default="", help="a text command for every pair, e.g. 'brighten everything'")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from egmt_ros.fusion.engine import FusionEngine

    try:
        pairs = match_pairs(args.ir, args.vi)  # the inputs first: they are checked in milliseconds, the model loads
        for ir_path, vi_path in pairs:        # in seconds
            check_pair(ir_path, vi_path)
        engine = FusionEngine.from_settings({
            "model.method": args.method, "model.path": str(args.model or ""), "model.backend": args.backend,
            "model.device": args.device, "command.use_text_encoder": False})
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not pairs:
        print(f"error: no IR/VI pairs with matching names in {args.ir} and {args.vi}", file=sys.stderr)
        return 2
    engine.set_entities([w.strip() for w in args.entities.split(",") if w.strip()])
    if args.command:
        applied, answer = engine.command(args.command)
        if not applied:
            print(f"error: command {args.command!r} {answer}", file=sys.stderr)
            return 2
    try:
        with output_folder(args.out):
            for ir_path, vi_path in tqdm(pairs, desc="fuse", unit="pair"):
                ir, vi = load_pair(ir_path, vi_path)
                save_image(args.out / ir_path.name, engine.fuse(ir, vi))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(pairs)} fused images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
