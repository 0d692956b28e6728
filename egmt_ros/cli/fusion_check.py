"""Look at fusion results: contact sheets of chosen frames, and how close a method is to the pixel-max rule.

    python -m egmt_ros.cli.fusion_check sheet --methods average,lp,egmt_rt,new=CKPT \\
        [--pairs ../shared/data/tno42:01,07 ...] [--video ../shared/data/m2vd:0117_1620:100,250,400,550] \\
        --out docs/fusion/smoke.jpg [--tile 240]
    python -m egmt_ros.cli.fusion_check maxcorr --data ../shared/data/tno42 --methods egmt_rt,new=CKPT

``sheet``: one row per frame (a pair ``DIR:STEM,STEM`` of a pair folder or a video frame ``DIR:VIDEO:INDEX,...``
of a video folder), columns IR, visible, then each method's fused luma (with the visible chroma), each tile
``--tile`` pixels wide and captioned; a JPEG (quality 85) so the sheet stays small.
``maxcorr``: per method, over all pairs of the folders, the mean Pearson correlation of the fused luma with
``max(IR, visible luma)``, the fraction of pixels within 3 grey levels of it and the fraction identical (8-bit), and
the mean correlation with the pixel average ``(IR + visible luma) / 2`` (how average-like the method is: the paper
recipe's collapse, docs/model.md).
A method is a registered fusion method name or ``NAME=CHECKPOINT`` for an EGMT checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from egmt_ros.core.color import split_luma
from egmt_ros.core.images import list_pairs, load_pair, to_uint8
from egmt_ros.fusion.engine import fuse_images
from egmt_ros.fusion.methods import FusionMethod, get_method


def load_methods(specs: Sequence[str]) -> dict[str, FusionMethod]:
    """``{column name: method}`` of ``name`` / ``NAME=CHECKPOINT`` entries."""
    out: dict[str, FusionMethod] = {}
    for spec in specs:
        if "=" in spec:
            name, ckpt = (x.strip() for x in spec.split("=", 1))
            if not Path(ckpt).is_file():
                raise SystemExit(f"--methods: no such checkpoint {ckpt!r}")
            out[name] = get_method("egmt", model=ckpt)
        else:
            out[spec] = get_method(spec)
    return out


def read_video_frame(folder: Path, video: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(IR grey, visible RGB) float [0, 1] of frame ``index`` of ``folder/{infrared,visible}/VIDEO.mp4``."""
    frames = []
    for sub in ("infrared", "visible"):
        cap = cv2.VideoCapture(str(folder / sub / f"{video}.mp4"))
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, f = cap.read()
        cap.release()
        if not ok:
            raise SystemExit(f"cannot read frame {index} of {folder / sub / video}.mp4")
        frames.append(f[:, :, ::-1].astype(np.float32) / 255.0)
    ir = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    return ir, np.ascontiguousarray(frames[1])


def parse_rows(pairs: Sequence[str], videos: Sequence[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, IR, visible) of every requested frame."""
    rows = []
    for spec in pairs:
        folder, stems = spec.rsplit(":", 1)
        found = {stem: (ir, vi) for stem, ir, vi in list_pairs(folder)}
        for stem in stems.split(","):
            if stem not in found:
                raise SystemExit(f"--pairs: no pair {stem!r} in {folder}")
            ir, vi = load_pair(*found[stem])
            rows.append((f"{Path(folder).name}/{stem}", ir, vi))
    for spec in videos:
        folder, video, idx = spec.rsplit(":", 2)
        for i in idx.split(","):
            ir, vi = read_video_frame(Path(folder), video, int(i))
            rows.append((f"{video} f{int(i):04d}", ir, vi))
    return rows


def _tile(img: np.ndarray, width: int, caption: str) -> np.ndarray:
    rgb = to_uint8(img)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    h = round(rgb.shape[0] * width / rgb.shape[1])
    tile = cv2.resize(rgb, (width, h), interpolation=cv2.INTER_AREA)
    cv2.rectangle(tile, (0, 0), (width, 16), (0, 0, 0), -1)
    cv2.putText(tile, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def fused_rgb(method: FusionMethod, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """The method's fused luma with the visible chroma (grey visible: grey out)."""
    return fuse_images(method, ir, vi)


def contact_sheet(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], methods: dict[str, FusionMethod],
                  width: int = 240) -> np.ndarray:
    """uint8 RGB sheet: one row per frame, columns IR, visible, then the methods (tiles resized to ``width``)."""
    lines = []
    for label, ir, vi in rows:
        tiles = [_tile(ir, width, f"IR {label}"), _tile(vi, width, "visible")]
        tiles += [_tile(fused_rgb(m, ir, vi), width, name) for name, m in methods.items()]
        h = min(t.shape[0] for t in tiles)
        lines.append(np.concatenate([t[:h] for t in tiles], axis=1))
    wmax = max(x.shape[1] for x in lines)
    return np.concatenate([np.pad(x, ((0, 0), (0, wmax - x.shape[1]), (0, 0))) for x in lines], axis=0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images (NaN when either is constant)."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def max_rule_agreement(fused: np.ndarray, ir: np.ndarray, vi_y: np.ndarray) -> dict[str, float]:
    """Pearson correlation of the 8-bit fused luma with 8-bit ``max(IR, VI luma)`` (``corr``), the fractions of
    pixels within 3 grey levels / identical, and the correlation with the average ``(IR + VI luma) / 2`` of the
    8-bit sources (``corr_avg``)."""
    f = to_uint8(fused).astype(np.float64)
    a, b = to_uint8(ir).astype(np.float64), to_uint8(vi_y).astype(np.float64)
    m = np.maximum(a, b)
    d = np.abs(f - m)
    return {"corr": _pearson(f, m), "within3": float((d <= 3).mean()), "equal": float((d == 0).mean()),
            "corr_avg": _pearson(f, (a + b) / 2.0)}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.cli.fusion_check", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sh = sub.add_parser("sheet", help="contact sheet of chosen frames")
    sh.add_argument("--methods", required=True, help="comma-separated methods or NAME=CHECKPOINT")
    sh.add_argument("--pairs", nargs="*", default=[], help="PAIR_FOLDER:STEM[,STEM...]")
    sh.add_argument("--video", nargs="*", default=[], help="VIDEO_FOLDER:VIDEO:INDEX[,INDEX...]")
    sh.add_argument("--tile", type=int, default=240, help="tile width in pixels")
    sh.add_argument("--out", required=True, help="output JPEG")
    mc = sub.add_parser("maxcorr", help="agreement of fused images with the pixel-max rule and the average")
    mc.add_argument("--data", nargs="+", required=True, help="pair folders")
    mc.add_argument("--methods", required=True, help="comma-separated methods or NAME=CHECKPOINT")
    args = ap.parse_args(argv)
    methods = load_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    if args.cmd == "sheet":
        rows = parse_rows(args.pairs, args.video)
        if not rows:
            raise SystemExit("sheet: give --pairs and/or --video")
        sheet = contact_sheet(rows, methods, args.tile)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), sheet[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(f"{out}: {sheet.shape[1]}x{sheet.shape[0]}, {out.stat().st_size // 1024} KiB")
        return 0
    pairs = [p for d in args.data for p in list_pairs(d)]
    print("| method | pairs | corr with max(IR, VI) | within 3 levels | identical | corr with (IR + VI) / 2 |\n"
          "|---|---|---|---|---|---|")
    for name, m in methods.items():
        scores = []
        for _, ir_p, vi_p in pairs:
            ir, vi = load_pair(ir_p, vi_p)
            y, _ = split_luma(vi)
            scores.append(max_rule_agreement(m.fuse(ir, y), ir, y))
        mean = {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
        print(f"| {name} | {len(scores)} | {mean['corr']:.4f} | {mean['within3']:.3f} | {mean['equal']:.3f} "
              f"| {mean['corr_avg']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
