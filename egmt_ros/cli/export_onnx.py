"""Export an EGMT checkpoint's fusion path to ONNX and check it against PyTorch with ONNX Runtime.

``python -m egmt_ros.cli.export_onnx [--model PATH] [--out PATH] [--opset 17] [--random paper|rt] [--no-check]
[--time 480x640 --threads 2 --reps 20]``

Graph inputs: ir, vi ``[B,1,H,W]``, ent ``[B,N,text_dim]``, ent_mask ``[B,N]`` bool; output fused ``[B,1,H,W]``;
B, H, W, N dynamic. ``--random`` exports a random-initialised model of that variant (benchmarks, tests).
``--time HxW`` also times one frame of that size (4 entities) with PyTorch eager fp32 and ONNX Runtime CPU:
3 warm-up runs, then the median and minimum of ``--reps`` runs, with ``--threads`` threads for both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from egmt_ros.paths import models_dir


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.cli.export_onnx", description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help=f"checkpoint (default {models_dir() / 'egmt_rt.pt'})")
    ap.add_argument("--out", type=Path, default=None, help="output .onnx (default: next to the checkpoint)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--random", choices=["paper", "rt"], default=None, help="export a random-init model instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    ap.add_argument("--time", default=None, metavar="HxW", help="time eager and ONNX Runtime at this size")
    ap.add_argument("--threads", type=int, default=2, help="threads for --time (torch and ONNX Runtime)")
    ap.add_argument("--reps", type=int, default=20, help="timed runs for --time")
    return ap


def _median_min_ms(fn, reps: int, warmup: int = 3) -> tuple[float, float]:
    """(median, min) wall time of ``fn()`` in ms after ``warmup`` untimed calls."""
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return round(times[len(times) // 2], 1), round(times[0], 1)


def time_model(model, onnx_path: Path, h: int, w: int, threads: int, reps: int) -> dict:
    """Eager fp32 and ONNX Runtime CPU time of one ``h x w`` frame with 4 entities (see the module docstring)."""
    from egmt_ros.model.export import OnnxFuser

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    ir = rng.random((1, 1, h, w), dtype=np.float32)
    vi = rng.random((1, 1, h, w), dtype=np.float32)
    ent = rng.standard_normal((1, 4, model.config.text_dim)).astype(np.float32)
    t_ir, t_vi, t_ent = torch.from_numpy(ir), torch.from_numpy(vi), torch.from_numpy(ent)
    with torch.inference_mode():
        eager = _median_min_ms(lambda: model.fuse(t_ir, t_vi, t_ent), reps)
    runner = OnnxFuser(onnx_path, threads=threads)
    ort = _median_min_ms(lambda: runner.run(ir, vi, ent), reps)
    return {"size": f"{w}x{h}", "threads": threads, "reps": reps, "params": model.num_params(),
            "eager_median_ms": eager[0], "eager_min_ms": eager[1], "ort_median_ms": ort[0], "ort_min_ms": ort[1]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from egmt_ros.model.checkpoint import load_checkpoint
    from egmt_ros.model.config import paper_config, rt_config
    from egmt_ros.model.export import OnnxFuser, export_onnx
    from egmt_ros.model.network import EGMT

    if args.random:
        torch.manual_seed(args.seed)
        model = EGMT(rt_config() if args.random == "rt" else paper_config()).eval()
        out = args.out or Path(f"egmt_{args.random}_random.onnx")
    else:
        src = args.model or models_dir() / "egmt_rt.pt"
        try:
            model, _card = load_checkpoint(src)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        out = args.out or src.with_suffix(".onnx")
    export_onnx(model, out, opset=args.opset)
    report: dict = {"onnx": str(out), "opset": args.opset, "variant": model.config.variant}
    if not args.no_check:
        rng = np.random.default_rng(args.seed)
        ir = rng.random((1, 1, 67, 91), dtype=np.float32)
        vi = rng.random((1, 1, 67, 91), dtype=np.float32)
        ent = rng.standard_normal((1, 3, model.config.text_dim)).astype(np.float32)
        with torch.inference_mode():
            ref = model.fuse(torch.from_numpy(ir), torch.from_numpy(vi), torch.from_numpy(ent)).numpy()
        got = OnnxFuser(out).run(ir, vi, ent)
        report["max_abs_diff"] = float(np.abs(ref - got).max())
        if report["max_abs_diff"] > 1e-4:
            print(json.dumps(report), file=sys.stderr)
            print("error: ONNX Runtime output differs from PyTorch by more than 1e-4", file=sys.stderr)
            return 1
    if args.time:
        h, w = (int(v) for v in args.time.lower().split("x"))
        report["timing"] = time_model(model, out, h, w, args.threads, args.reps)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
