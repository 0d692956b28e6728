"""One command for the GPU numbers: parity with CPU float32, then per backend, dtype and batch the device-resident
pipeline's latency and throughput, alone and with detection.

    python -m egmt_ros.cli.bench_gpu                       # CUDA: eager + compile, fp32/fp16/bf16, batch 1/4/8
    python -m egmt_ros.cli.bench_gpu --device cpu --size 128x96 --frames 5 --modes eager --dtypes float32

Frames: real pairs of ``--data`` (default RoadScene of the data root) resized to ``--size``, as raw camera frames
(mono8 thermal, bgr8 visible), through :class:`egmt_ros.fusion.device.DeviceFusionPipeline` (AGC mapping, colour,
EGMT, colour, uint8 on the device; one host -> device and one device -> host copy per call of N pairs).

Rows: every ``--modes`` (``eager``: torch eager; ``compile``: torch.compile, on CUDA the whole per-frame device path
as CUDA graphs, mode reduce-overhead) x ``--dtypes`` x ``--batches``. Columns: per call p50 / p99 ms (a call fuses
``batch`` pairs; on CUDA each call ends when its uint8 images are in host memory), pairs/s; at batch 1 also
fusion + detection (the fused frame goes to the detector as a device tensor, no host round trip): p50 / p99 ms and
fps. ``parity``: max |fused luma - torch eager float32 on the CPU| on the first frame (the acceptance bound is 1e-2,
``--parity-bound``: any row above it makes the exit code 1, so one run checks a robot's GPU).

Detection: ``--detector yolov5`` (default; the official ``yolov5n.pt`` of the data root, a pickle: needs
``--weights-trust-pickle``), ``ultralytics`` (the default OpenVINO YOLO11n: CPU only, gets the fused frame from host
memory), or ``none``. Writes ``<out>/bench_gpu.md`` and ``.csv``; prints the table.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from egmt_ros.cli.bench_pipeline import (BenchError, _random_checkpoint, cpu_model, gpu_name, load_avg, load_frames,
                                         parse_size, versions)
from egmt_ros.detection.detector import add_trust_argument

DTYPES = ("float32", "float16", "bfloat16")
MODES = ("eager", "compile")
COLUMNS = ["mode", "dtype", "batch", "calls", "p50_ms", "p99_ms", "pairs_per_s", "det_p50_ms", "det_p99_ms",
           "det_fps", "parity"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.cli.bench_gpu", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--model", default="egmt_rt", help="egmt_rt (shipped), random_rt, or a checkpoint path")
    ap.add_argument("--size", default="640x480", help="frame size WIDTHxHEIGHT")
    ap.add_argument("--modes", default=",".join(MODES), help="eager, compile (comma-separated)")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="float32, float16, bfloat16 (comma-separated)")
    ap.add_argument("--batches", default="1,4,8", help="pairs per call (comma-separated)")
    ap.add_argument("--frames", type=int, default=200, help="timed calls per row")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls per row (compile / CUDA graph capture)")
    ap.add_argument("--entities", type=int, default=4, help="entity feature vectors (random unit vectors)")
    ap.add_argument("--detector", default="yolov5", choices=["yolov5", "ultralytics", "none"])
    add_trust_argument(ap)
    ap.add_argument("--data", type=Path, default=None, help="pair folder (ir/ + vi/); default <data root>/roadscene")
    ap.add_argument("--pairs", type=int, default=8, help="distinct pairs cycled through")
    ap.add_argument("--parity-bound", type=float, default=1e-2,
                    help="largest accepted parity (fused luma in [0, 1]); a row above it makes the exit code 1")
    ap.add_argument("--out", type=Path, default=Path("out/bench_gpu"), help="output folder")
    return ap


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _cuda(args: argparse.Namespace) -> bool:
    return str(args.device).startswith("cuda")


def _fuser(args: argparse.Namespace, mode: str, dtype: str, tmp: Path):
    from egmt_ros.model.method import RT_CHECKPOINT, EGMTFuser
    from egmt_ros.paths import models_dir

    if args.model == "egmt_rt":
        path = models_dir() / RT_CHECKPOINT
    elif args.model == "random_rt":
        path = tmp / "random_rt.pt"
        if not path.is_file():
            _random_checkpoint("rt", tmp)
    else:
        path = Path(args.model)
    fuser = EGMTFuser.from_checkpoint(path, device=args.device if mode else "cpu", dtype=dtype,
                                      backend="compile" if mode == "compile" and not _cuda(args) else "torch")
    if args.entities > 0 and fuser.model.config.uses_text:
        f = np.random.default_rng(0).standard_normal((args.entities, fuser.model.config.text_dim)).astype(np.float32)
        fuser.set_entity_features(f / np.linalg.norm(f, axis=1, keepdims=True))
    return fuser


def parity(fuser, ref, frame: tuple[np.ndarray, np.ndarray]) -> float:
    """Max |fused luma of ``fuser`` on its device - ``ref`` (CPU float32 eager)| for one raw frame."""
    import torch

    from egmt_ros.core.images import from_uint8, to_gray

    ir, vi_y = from_uint8(frame[0]), to_gray(from_uint8(np.ascontiguousarray(frame[1][:, :, ::-1])))
    b = fuser.backend
    with torch.inference_mode():
        t = [torch.from_numpy(a)[None, None].to(b.device, b.dtype) for a in (ir, vi_y)]
        got = b.fuse_tensor(*t).float().clamp(0, 1)[0, 0].cpu().numpy()
    return float(np.abs(got - ref.fuse(ir, vi_y)).max())


def _detector(args: argparse.Namespace):
    if args.detector == "none":
        return None
    from egmt_ros.detection.backends import make_detector

    return make_detector(args.detector, trust_pickle=args.weights_trust_pickle,
                         device=args.device if args.detector == "yolov5" else "cpu")


def _detect(detector, fused_dev) -> None:
    """Detection on the fused uint8 BGR device tensor: as a tensor (yolov5) or from host memory (ultralytics)."""
    if hasattr(detector, "detect_tensor"):
        detector.detect_tensor(fused_dev.flip(-1).permute(0, 3, 1, 2).float() / 255.0)
    else:
        detector.detect(fused_dev[0].flip(-1).cpu().numpy())


def time_row(pipe, frames, batch: int, calls: int, warmup: int, detector=None) -> dict[str, float]:
    """p50 / p99 ms per call and pairs/s of ``pipe.process_batch`` (or fuse + detect when ``detector``)."""
    lat = []
    for i in range(warmup + calls):
        sel = [frames[(i * batch + k) % len(frames)] for k in range(batch)]
        th, rgb = [f[0] for f in sel], [f[1] for f in sel]
        t0 = time.perf_counter()
        if detector is None:
            pipe.process_batch(th, rgb)
        else:
            _detect(detector, pipe.fuse_to_device(th, rgb))
        if i >= warmup:
            lat.append(time.perf_counter() - t0)
    a = np.asarray(lat)
    return {"p50_ms": float(np.percentile(a, 50) * 1e3), "p99_ms": float(np.percentile(a, 99) * 1e3),
            "fps": batch * len(a) / float(a.sum())}


def markdown(rows: list[dict[str, Any]], meta: dict[str, str]) -> str:
    lines = ["# bench_gpu", "", f"Command: `{meta['command']}`", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "command"]
    lines += ["", "| mode | dtype | batch | p50 ms | p99 ms | pairs/s | +det p50 ms | +det p99 ms | +det fps | "
                  "parity vs CPU fp32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        det = [f"{r[k]:.1f}" if r[k] == r[k] else "-" for k in ("det_p50_ms", "det_p99_ms", "det_fps")]
        lines.append(f"| {r['mode']} | {r['dtype']} | {r['batch']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['pairs_per_s']:.1f} | {' | '.join(det)} | {r['parity']:.2e} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, argv: list[str]) -> int:
    import tempfile

    import torch

    from egmt_ros import report
    from egmt_ros.fusion.device import DeviceFusionPipeline
    from egmt_ros.paths import data_root

    if _cuda(args) and not torch.cuda.is_available():
        raise BenchError("--device cuda, but torch sees no CUDA device (on a CPU-only machine: --device cpu)")
    modes, dtypes, batches = _csv(args.modes), _csv(args.dtypes), [int(b) for b in _csv(args.batches)]
    for m in modes:
        if m not in MODES:
            raise BenchError(f"unknown mode {m!r}; use {', '.join(MODES)}")
    for d in dtypes:
        if d not in DTYPES:
            raise BenchError(f"unknown dtype {d!r}; use {', '.join(DTYPES)}")
    frames = load_frames(args.data or data_root(must_exist=True) / "roadscene", parse_size(args.size), args.pairs)
    detector = _detector(args)
    rows: list[dict[str, Any]] = []
    la0 = load_avg()
    with tempfile.TemporaryDirectory(prefix="egmt_bench_gpu_") as tmpdir:
        ref = _fuser(args, "", "float32", Path(tmpdir))  # CPU float32 eager, the same entity features
        for mode in modes:
            for dtype in dtypes:
                fuser = _fuser(args, mode, dtype, Path(tmpdir))
                diff = parity(fuser, ref, frames[0])
                # compile on CUDA: the whole device path (pre + network + post) in CUDA graphs; on the CPU: the
                # network through the compile backend
                pipe = DeviceFusionPipeline(fuser, cuda_graph=mode == "compile" and _cuda(args))
                for batch in batches:
                    r = time_row(pipe, frames, batch, args.frames, args.warmup)
                    row = {"mode": mode, "dtype": dtype, "batch": batch, "calls": args.frames, "p50_ms": r["p50_ms"],
                           "p99_ms": r["p99_ms"], "pairs_per_s": r["fps"], "det_p50_ms": float("nan"),
                           "det_p99_ms": float("nan"), "det_fps": float("nan"), "parity": diff}
                    if detector is not None and batch == 1:
                        d = time_row(pipe, frames, 1, args.frames, args.warmup, detector)
                        row.update(det_p50_ms=d["p50_ms"], det_p99_ms=d["p99_ms"], det_fps=d["fps"])
                    rows.append(row)
                    print(f"[bench_gpu] {mode} {dtype} batch {batch}: p50 {row['p50_ms']:.2f} ms, "
                          f"{row['pairs_per_s']:.1f} pairs/s, parity {diff:.2e}", file=sys.stderr, flush=True)
    la1 = load_avg()
    gpu = gpu_name()
    meta = {"command": "python -m egmt_ros.cli.bench_gpu " + " ".join(shlex.quote(a) for a in argv),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "device": f"{args.device}" + (f" ({gpu})" if gpu and _cuda(args) else "")
                      + f"; host {cpu_model()}",
            "model": f"{args.model}, {args.entities} entity vectors, {args.size}",
            "detector": args.detector, "load average (1 min)": f"{la0[0]:.2f} at the start, {la1[0]:.2f} at the end",
            "software": ", ".join(f"{k} {v}" for k, v in versions().items())}
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, meta)
    (args.out / "bench_gpu.md").write_text(md)
    report.write_csv(args.out / "bench_gpu.csv", rows, COLUMNS)
    print(md)
    bad = [r for r in rows if not r["parity"] <= args.parity_bound]
    for r in bad:
        print(f"error: parity check failed: {r['mode']} {r['dtype']} batch {r['batch']} differs from CPU float32 by "
              f"{r['parity']:.2e} (> {args.parity_bound:g})", file=sys.stderr)
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv)
    except (BenchError, FileNotFoundError, ValueError, ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
