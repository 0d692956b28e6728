"""Count person detections on fused vs visible-only vs infrared-only video frames (a proxy, not mAP).

    python -m egmt_ros.cli.count_people --videos ../shared/data/m2vd --methods vi,ir,average,lp \\
        --stride 3 --out docs/detection/m2vd

Reads every synchronized video pair ``VIDEOS/infrared/NAME.mp4`` + ``VIDEOS/visible/NAME.mp4``, takes every
``--stride``-th frame, builds each input (``ir``, ``vi`` or a fusion method; add ``egmt_rt`` once its weights exist)
and runs the default detector (person class only); ``NAME=CHECKPOINT`` in ``--methods`` adds any EGMT checkpoint
(e.g. ``egmt_new=out/train/best.pt``). The videos have no labels, so this counts detections: more
persons found is only suggestive (a false positive counts as much as a true one). Beside the raw count it gives the
**IR-confirmed** count (:func:`ir_confirmed`, :func:`warm_mask`): the detections whose box holds warm infrared pixels, which a person
(skin, breath, warm limbs) does and a parked scooter, a smoke plume or a shadow seen only in the visible image does
not. Writes ``counts.md``, ``counts.csv``, ``per_frame.csv`` and a few annotated montages (small JPEGs) of
``--sample-video``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from egmt_ros.core.images import from_uint8, to_gray
from egmt_ros.detection.detector import Detector, add_trust_argument, annotate
from egmt_ros.detection.inputs import DetectorInput

PROXY_NOTE = ("This is a proxy, not mAP: the M2VD videos carry no labels, so the table counts person detections "
              "(score >= the detector's threshold). A higher count is suggestive only; false positives count too.")
#: A detection is IR-confirmed when at least WARM_FRACTION of its box's IR pixels are warmer than the frame's IR mean
#: plus WARM_SIGMA standard deviations (white-hot IR).
WARM_SIGMA = 1.0
WARM_FRACTION = 0.05
CONFIRM_NOTE = ("IR-confirmed: a detection whose box has >= {frac:.0%} of its infrared pixels above the frame's IR "
                "mean + {sigma:g} standard deviations (white-hot). A person shows warm skin and limbs in thermal "
                "images; a parked scooter, a smoke plume or a shadow seen only in the visible image does not. A "
                "heuristic, not a label: a hot engine confirms whatever box covers it, and a person whose box holds "
                "no warm pixel (fully covered, or as cold as the background) is not confirmed.")


def warm_mask(ir: np.ndarray, sigma: float = WARM_SIGMA) -> np.ndarray:
    """The pixels of the grey IR frame ``ir`` (H x W) warmer than its mean + ``sigma`` standard deviations."""
    return ir > float(ir.mean()) + sigma * float(ir.std())


def ir_confirmed(warm: np.ndarray, box_xyxy: tuple[float, float, float, float],
                 fraction: float = WARM_FRACTION) -> bool:
    """Whether the box (pixels, ``x0, y0, x1, y1``, clipped to the image) of a detection holds warm IR: at least
    ``fraction`` of its pixels set in ``warm`` (:func:`warm_mask` of the frame, made once per frame)."""
    h, w = warm.shape[:2]
    x0, y0 = max(int(np.floor(box_xyxy[0])), 0), max(int(np.floor(box_xyxy[1])), 0)
    x1, y1 = min(int(np.ceil(box_xyxy[2])), w), min(int(np.ceil(box_xyxy[3])), h)
    if x1 <= x0 or y1 <= y0:
        return False
    return bool(warm[y0:y1, x0:x1].mean() >= fraction)


@dataclass
class MethodStats:
    """Per-video, per-input counters."""

    frames: int = 0
    persons: int = 0
    frames_with_person: int = 0
    confirmed: int = 0                  #: IR-confirmed detections (:func:`ir_confirmed`)
    frames_with_confirmed: int = 0
    fuse_s: float = 0.0
    detect_s: float = 0.0
    per_frame: list[tuple[int, int, int]] = field(default_factory=list)  #: (frame, persons, IR-confirmed)


def video_names(videos: Path) -> list[str]:
    """Names with both ``infrared/NAME.mp4`` and ``visible/NAME.mp4``, sorted."""
    ir = {p.stem for p in (videos / "infrared").glob("*.mp4")}
    vi = {p.stem for p in (videos / "visible").glob("*.mp4")}
    names = sorted(ir & vi)
    if not names:
        raise FileNotFoundError(f"no video pairs infrared/NAME.mp4 + visible/NAME.mp4 in {videos}")
    return names


def read_pairs(videos: Path, name: str, stride: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(frame index, IR grey float, visible RGB float) for every ``stride``-th frame of a video pair."""
    cap_ir = cv2.VideoCapture(str(videos / "infrared" / f"{name}.mp4"))
    cap_vi = cv2.VideoCapture(str(videos / "visible" / f"{name}.mp4"))
    try:
        idx = 0
        while True:
            if idx % stride == 0:
                ok_ir, f_ir = cap_ir.read()
                ok_vi, f_vi = cap_vi.read()
                if not (ok_ir and ok_vi):
                    return
                ir = to_gray(from_uint8(f_ir[:, :, ::-1]))
                vi = from_uint8(np.ascontiguousarray(f_vi[:, :, ::-1]))
                if ir.shape != vi.shape[:2]:
                    ir = cv2.resize(ir, (vi.shape[1], vi.shape[0]), interpolation=cv2.INTER_LINEAR)
                yield idx, ir, vi
            elif not (cap_ir.grab() and cap_vi.grab()):
                return
            idx += 1
    finally:
        cap_ir.release()
        cap_vi.release()


def montage(tiles: list[tuple[str, np.ndarray]], width: int = 320) -> np.ndarray:
    """Side-by-side uint8 RGB tiles, each resized to ``width`` and captioned."""
    out = []
    for caption, img in tiles:
        h = round(img.shape[0] * width / img.shape[1])
        tile = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
        cv2.rectangle(tile, (0, 0), (width, 18), (0, 0, 0), -1)
        cv2.putText(tile, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        out.append(tile)
    return np.concatenate(out, axis=1)


def write_tables(stats: dict[str, dict[str, MethodStats]], methods: list[str], out: Path, meta: dict) -> None:
    """counts.csv, per_frame.csv and counts.md."""
    with (out / "counts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "method", "frames", "mean_persons_per_frame", "frames_with_person",
                    "fraction_with_person", "mean_confirmed_per_frame", "frames_with_confirmed",
                    "fuse_ms_per_frame", "detect_ms_per_frame"])
        for video, per in stats.items():
            for m in methods:
                s = per[m]
                n = max(s.frames, 1)
                w.writerow([video, m, s.frames, f"{s.persons / n:.3f}", s.frames_with_person,
                            f"{s.frames_with_person / n:.3f}", f"{s.confirmed / n:.3f}", s.frames_with_confirmed,
                            f"{1000 * s.fuse_s / n:.1f}",
                            f"{1000 * s.detect_s / n:.1f}"])
    with (out / "per_frame.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "frame", "method", "persons", "confirmed"])
        for video, per in stats.items():
            for m in methods:
                w.writerows([video, i, m, n, c] for i, n, c in per[m].per_frame)
    lines = ["# Person detections on M2VD video pairs: fused vs single modality", "", f"**{PROXY_NOTE}**", "",
             f"Detector: `{meta['detector']}` (COCO class person, conf >= {meta['conf']}, imgsz {meta['imgsz']}). "
             f"Every {meta['stride']}th frame. Inputs: `vi` visible only, `ir` infrared only, others fused "
             "(fused luma + visible chroma).", "",
             "Mean persons per frame / frames with at least one person:", "",
             "| Video | frames | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for video, per in stats.items():
        cells = [f"{per[m].persons / max(per[m].frames, 1):.2f} / {per[m].frames_with_person}" for m in methods]
        lines.append(f"| {video} | {per[methods[0]].frames} | " + " | ".join(cells) + " |")
    lines += ["", "IR-confirmed persons per frame / frames with at least one (" +
              CONFIRM_NOTE.format(frac=WARM_FRACTION, sigma=WARM_SIGMA) + "):", "",
              "| Video | frames | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for video, per in stats.items():
        cells = [f"{per[m].confirmed / max(per[m].frames, 1):.2f} / {per[m].frames_with_confirmed}" for m in methods]
        lines.append(f"| {video} | {per[methods[0]].frames} | " + " | ".join(cells) + " |")
    lines += ["", "Time per frame (ms, measured in this run; fusion / detection):", "",
              "| Video | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for video, per in stats.items():
        cells = [f"{1000 * per[m].fuse_s / max(per[m].frames, 1):.1f} / "
                 f"{1000 * per[m].detect_s / max(per[m].frames, 1):.1f}" for m in methods]
        lines.append(f"| {video} | " + " | ".join(cells) + " |")
    lines += ["", f"Total run time {meta['total_s']:.0f} s. Machine: {meta['machine']}; 1-minute load average "
              f"{meta['load'][0]:.1f} at the start, {meta['load'][1]:.1f} at the end (times are wall-clock and "
              "include waiting for the CPU when other processes share it).", ""]
    if meta["samples"]:
        lines += ["Annotated frames (left to right: " + ", ".join(methods) + "):", ""]
        lines += [f"![{p}]({p})" for p in meta["samples"]]
    (out / "counts.md").write_text("\n".join(lines) + "\n")


def make_input(spec: str) -> tuple[str, DetectorInput]:
    """(column name, input) of one ``--methods`` entry: ``vi``, ``ir``, a registered fusion method, or
    ``NAME=CHECKPOINT`` (an EGMT checkpoint, shown as NAME)."""
    if "=" not in spec:
        return spec, DetectorInput(spec)
    name, ckpt = (x.strip() for x in spec.split("=", 1))
    if not name or not Path(ckpt).is_file():
        raise SystemExit(f"--methods: NAME=CHECKPOINT needs a name and an existing file, got {spec!r}")
    return name, DetectorInput("egmt", model=ckpt)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m egmt_ros.cli.count_people", description=__doc__.split("\n")[0])
    p.add_argument("--videos", required=True, help="folder with infrared/NAME.mp4 and visible/NAME.mp4")
    p.add_argument("--methods", default="vi,ir,average,lp",
                   help="comma-separated inputs: vi, ir, fusion methods, NAME=CHECKPOINT (an EGMT checkpoint)")
    p.add_argument("--stride", type=int, default=1, help="use every K-th frame")
    p.add_argument("--out", required=True, help="output folder (tables and JPEGs)")
    p.add_argument("--weights", default=None, help="detector weights (default: the default detector)")
    add_trust_argument(p)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--device", default="cpu")
    p.add_argument("--videos-only", default=None, help="comma-separated video names (default: all pairs)")
    p.add_argument("--sample-video", default="0117_1620", help="video whose frames are saved annotated")
    p.add_argument("--samples", type=int, default=3, help="number of annotated montages (evenly spaced)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Count, tabulate, save samples; returns 0."""
    args = build_parser().parse_args(argv)
    videos, out = Path(args.videos), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = [m.strip() for m in args.methods.split(",") if m.strip()]
    makers = dict(make_input(m) for m in specs)
    methods = list(makers)
    detector = Detector(args.weights, device=args.device, conf=args.conf, imgsz=args.imgsz, classes=["person"],
                        trust_pickle=args.weights_trust_pickle)
    names = video_names(videos)
    if args.videos_only:
        names = [n for n in names if n in {v.strip() for v in args.videos_only.split(",")}]
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    stats: dict[str, dict[str, MethodStats]] = {}
    samples: list[str] = []
    for name in names:
        per = defaultdict(MethodStats)
        total = int(cv2.VideoCapture(str(videos / "visible" / f"{name}.mp4")).get(cv2.CAP_PROP_FRAME_COUNT))
        evaluated = list(range(0, total, args.stride))
        wanted = set()
        if name == args.sample_video and args.samples > 0 and evaluated:
            wanted = {evaluated[round((k + 1) * (len(evaluated) - 1) / (args.samples + 1))]
                      for k in range(args.samples)}
        for idx, ir, vi in read_pairs(videos, name, args.stride):
            warm = warm_mask(ir)
            tiles = []
            for m in methods:
                t0 = time.perf_counter()
                img = makers[m].make(ir, vi)
                t1 = time.perf_counter()
                dets = detector.detect(img)
                t2 = time.perf_counter()
                s = per[m]
                s.frames += 1
                confirmed = sum(ir_confirmed(warm, d.box_xyxy) for d in dets)
                s.persons += len(dets)
                s.frames_with_person += bool(dets)
                s.confirmed += confirmed
                s.frames_with_confirmed += bool(confirmed)
                s.fuse_s += t1 - t0
                s.detect_s += t2 - t1
                s.per_frame.append((idx, len(dets), confirmed))
                if idx in wanted:
                    tiles.append((f"{m}: {len(dets)} person(s)", annotate(img, dets)))
            if tiles:
                path = out / f"{name}_frame{idx:04d}.jpg"
                cv2.imwrite(str(path), montage(tiles)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
                samples.append(path.name)
        stats[name] = per
        print(f"{name}: {per[methods[0]].frames} frames; " + ", ".join(
            f"{m} {per[m].persons / max(per[m].frames, 1):.2f}/frame" for m in methods), flush=True)
    meta = {"detector": Path(detector.weights).name, "conf": args.conf, "imgsz": args.imgsz, "stride": args.stride,
            "total_s": time.perf_counter() - t_start, "samples": samples,
            "load": (load_start, os.getloadavg()[0]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s) visible, device {args.device}"}
    write_tables(stats, methods, out, meta)
    print((out / "counts.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
