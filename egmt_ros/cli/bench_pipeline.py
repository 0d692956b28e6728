"""Pipeline benchmark: throughput and per-stage latency of fusion, and of fusion + detection, per backend.

    python -m egmt_ros.cli.bench_pipeline --methods random_rt,lp,average --backend torch,compile,onnxruntime \\
        --size 640x480 --seconds 30 --threads 2,1 --out docs/benchmarks/performance

Methods: any registered fusion method (``egmt_rt`` = models/egmt_rt.pt, ``egmt`` with ``--model PATH``, ``lp``,
``average`` ...) plus ``random_rt`` / ``random_paper``: a random-initialised EGMT of the rt / paper configuration
(timing does not depend on the weights' values). Each EGMT method runs once per ``--backend``; the others once.
A backend may carry its own dtype, ``BACKEND:DTYPE`` (``--backend torch,openvino,openvino:bfloat16``): one
interleaved run then compares precisions too.

Frames: real image pairs of ``--data`` (default: RoadScene under the data root, visible in colour), resized to
``--size`` WxH and given to :class:`egmt_ros.fusion.engine.FusionEngine` as raw camera frames (mono8 thermal,
bgr8 visible), cycling through the first 8 pairs. Modes (``--modes``):

- ``fusion``: ``FusionEngine.process`` (stages preprocess = AGC + registration + colour conversion, fuse,
  postprocess = 8-bit BGR output);
- ``fusion+detection``: the same, then the default detector (:class:`egmt_ros.detection.detector.Detector`, the
  OpenVINO YOLO11n of the data root) on the fused image (stage detect).

Per EGMT method: the max abs difference of its output from torch eager float32 on the first ``--parity-frames``
frames (this first use is where torch.compile compiles; its seconds, like ONNX export or engine build, are the
``setup`` column). Per row: ``--warmup`` untimed frames (the first one's time is reported separately), then
frames until ``--seconds`` have passed (at least ``--min-frames``).
Throughput = timed frames / the sum of their total times; latency p50 / p99 per stage in ms; CPU ms per frame =
the process's CPU time (all threads) per timed frame. ``--threads`` sets torch's and ONNX Runtime's intra-op
threads and OpenCV's threads (the OpenVINO detector keeps its own default). ``--interleave`` times all methods and
thread counts of one mode round-robin, one frame each in turn, so that a shared machine's changing load hits them
alike.

With ``lp`` among the methods, every row also gets its total and fuse p50 over lp's of the same mode and threads
(``x lp`` column; issue 18's CPU yardstick: the default backend within 4x the Laplacian pyramid).

Writes ``<out>/bench_pipeline.md`` (command, hardware, load average, tables) and ``<out>/bench_pipeline.csv``.
The live-graph measurement (receive-to-publish latency through the ROS nodes from a bag) is not part of this tool:
``python -m egmt_ros.cli.demo`` reports it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from egmt_ros.detection.detector import add_trust_argument

STAGES = ("preprocess", "fuse", "postprocess", "detect", "total")
MODES = ("fusion", "fusion+detection")
RANDOM_METHODS = {"random_rt": "rt", "random_paper": "paper"}
CSV_COLUMNS = (["method", "weights", "backend", "device", "dtype", "threads", "mode", "width", "height", "frames",
                "wall_s", "fps", "setup_s", "first_frame_ms"]
               + [f"{s}_{q}_ms" for s in STAGES for q in ("p50", "p99")]
               + ["fuse_min_ms", "total_min_ms", "cpu_ms_per_frame", "max_abs_diff_vs_eager", "load_avg_1m",
                  "total_p50_vs_lp", "fuse_p50_vs_lp"])


class BenchError(Exception):
    """A user error, reported without a traceback."""


@dataclass
class Row:
    method: str
    weights: str
    backend: str
    device: str
    dtype: str
    threads: int
    mode: str
    width: int
    height: int
    frames: int = 0
    wall_s: float = 0.0
    setup_s: float = 0.0
    first_frame_ms: float = float("nan")
    cpu_s: float = 0.0  # process CPU time (all threads) over the timed frames
    max_abs_diff: float = float("nan")  # vs torch eager float32 (EGMT rows, --parity-frames)
    samples: dict[str, list[float]] = field(default_factory=dict)  # stage -> seconds per frame
    load_avg_1m: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in ("method", "weights", "backend", "device", "dtype",
                                                            "threads", "mode", "width", "height", "frames")}
        d["wall_s"] = round(self.wall_s, 3)
        d["fps"] = round(self.frames / self.wall_s, 3) if self.wall_s > 0 else float("nan")
        d["setup_s"] = round(self.setup_s, 3)
        d["first_frame_ms"] = round(self.first_frame_ms, 2)
        for s in STAGES:
            v = self.samples.get(s)
            p50, p99 = (np.percentile(np.asarray(v) * 1e3, [50, 99]) if v else (float("nan"), float("nan")))
            d[f"{s}_p50_ms"], d[f"{s}_p99_ms"] = round(float(p50), 2), round(float(p99), 2)
        for s in ("fuse", "total"):
            v = self.samples.get(s)
            d[f"{s}_min_ms"] = round(min(v) * 1e3, 2) if v else float("nan")
        d["cpu_ms_per_frame"] = round(self.cpu_s / self.frames * 1e3, 2) if self.frames else float("nan")
        d["max_abs_diff_vs_eager"] = float(f"{self.max_abs_diff:.3g}")
        d["load_avg_1m"] = round(self.load_avg_1m, 2)
        return d


# --------------------------------------------------------------------------- arguments
def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_size(s: str) -> tuple[int, int]:
    """``"640x480"`` -> (width 640, height 480)."""
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError as exc:
        raise BenchError(f"--size must be WIDTHxHEIGHT, e.g. 640x480; got {s!r}") from exc
    if w < 1 or h < 1:
        raise BenchError(f"--size must be positive, got {s!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.cli.bench_pipeline",
                                 description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="egmt_rt,lp,average",
                    help="comma-separated fusion methods (random_rt / random_paper: random-init EGMT)")
    ap.add_argument("--backend", default="torch", help="comma-separated EGMT backends: torch,compile,onnxruntime,"
                                                       "openvino,tensorrt; BACKEND:DTYPE overrides --dtype for "
                                                       "that backend (e.g. openvino:bfloat16)")
    ap.add_argument("--model", type=Path, default=None, help="checkpoint for the method 'egmt'")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", help="EGMT dtype: float32, float16, bfloat16")
    ap.add_argument("--size", default="640x480", help="frame size WIDTHxHEIGHT")
    ap.add_argument("--seconds", type=float, default=30.0, help="timed seconds per row")
    ap.add_argument("--min-frames", type=int, default=3, help="timed frames per row at least")
    ap.add_argument("--warmup", type=int, default=3, help="untimed frames per row")
    ap.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 2,1")
    ap.add_argument("--parity-frames", type=int, default=2,
                    help="EGMT rows: max |output - torch eager float32| over this many frames (0: skip)")
    ap.add_argument("--interleave", action="store_true",
                    help="time all methods and thread counts of each mode round-robin, one frame each in turn, so "
                         "that the machine's changing load hits them alike (for comparisons on a shared machine)")
    ap.add_argument("--modes", default=",".join(MODES), help="fusion, fusion+detection (comma-separated)")
    ap.add_argument("--entities", type=int, default=4, help="entity feature vectors given to EGMT (random unit "
                                                            "vectors: timing does not depend on their values)")
    ap.add_argument("--data", type=Path, default=None, help="pair folder (ir/ + vi/); default: <data root>/roadscene")
    ap.add_argument("--pairs", type=int, default=8, help="distinct pairs cycled through")
    ap.add_argument("--detector-weights", default=None, help="detector weights (default: Detector()'s search)")
    add_trust_argument(ap)
    ap.add_argument("--cache-dir", type=Path, default=None, help="ONNX / TensorRT cache (default ~/.cache/egmt_ros)")
    ap.add_argument("--out", type=Path, default=Path("out/bench_pipeline"), help="output folder")
    return ap


# --------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def load_avg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "onnxruntime", "openvino", "ultralytics", "numpy", "cv2"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001 - an absent package is just not listed
            pass
    return out


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------- frames and methods
def load_frames(folder: Path, size: tuple[int, int], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw camera-like frames: (mono8 thermal, bgr8 visible) resized to ``size`` (W, H)."""
    import cv2

    from egmt_ros.core.images import list_pairs, load_pair, to_uint8

    frames = []
    for _, ir_p, vi_p in list_pairs(folder)[: max(1, n)]:
        ir, vi = load_pair(ir_p, vi_p)
        ir = cv2.resize(to_uint8(ir), size, interpolation=cv2.INTER_AREA)
        vi8 = to_uint8(vi)
        vi8 = np.repeat(vi8[:, :, None], 3, axis=2) if vi8.ndim == 2 else vi8[:, :, ::-1]  # RGB -> BGR
        frames.append((ir, np.ascontiguousarray(cv2.resize(vi8, size, interpolation=cv2.INTER_AREA))))
    return frames


def _random_checkpoint(variant: str, folder: Path) -> Path:
    """A random-initialised EGMT of the rt / paper configuration as a checkpoint (seed 0)."""
    import torch

    from egmt_ros.model.checkpoint import save_checkpoint
    from egmt_ros.model.config import paper_config, rt_config
    from egmt_ros.model.network import EGMT

    torch.manual_seed(0)
    model = EGMT(rt_config() if variant == "rt" else paper_config())
    if variant == "rt":  # its last conv starts at zero (output = pixel average): randomise it, so the output
        torch.nn.init.normal_(model.recon.out.weight, std=0.1)  # depends on every layer (--parity-frames)
        torch.nn.init.normal_(model.recon.out.bias, std=0.05)
    return save_checkpoint(folder / f"random_{variant}.pt", model,
                           {"training_data": "none (random initialisation, for timing only)"})


def split_backend(spec: str, default_dtype: str) -> tuple[str, str]:
    """``"openvino:bfloat16"`` -> ``("openvino", "bfloat16")``; without ``:DTYPE`` the dtype is ``default_dtype``."""
    name, _, dtype = spec.partition(":")
    return name, dtype or default_dtype


def make_method(name: str, backend: str | None, args: argparse.Namespace, threads: int, tmp: Path):
    """(method, weights description) for one row."""
    from egmt_ros.fusion.methods import get_method

    if backend is None:
        return get_method(name), "-"
    from egmt_ros.model.method import RT_CHECKPOINT, EGMTFuser
    from egmt_ros.paths import models_dir

    backend, dtype = split_backend(backend, args.dtype)
    opts: dict[str, Any] = {"device": args.device, "dtype": dtype, "backend": backend}
    if backend != "tensorrt":
        opts["threads"] = threads
    if backend in ("onnxruntime", "tensorrt", "openvino") and args.cache_dir is not None:
        opts["cache_dir"] = args.cache_dir
    if name in RANDOM_METHODS:
        path = tmp / f"random_{RANDOM_METHODS[name]}.pt"
        if not path.is_file():
            _random_checkpoint(RANDOM_METHODS[name], tmp)
        weights = f"random init ({RANDOM_METHODS[name]} config)"
    elif name == "egmt":
        if args.model is None:
            raise BenchError("method 'egmt' needs --model PATH")
        path, weights = args.model, str(args.model)
    elif name == "egmt_rt":
        path, weights = models_dir() / RT_CHECKPOINT, RT_CHECKPOINT
    else:
        raise BenchError(f"{name!r} is not an EGMT method")
    fuser = EGMTFuser.from_checkpoint(path, name=name, **opts)
    if args.entities > 0 and fuser.model.config.uses_text:
        rng = np.random.default_rng(0)
        f = rng.standard_normal((args.entities, fuser.model.config.text_dim)).astype(np.float32)
        fuser.set_entity_features(f / np.linalg.norm(f, axis=1, keepdims=True))
    return fuser, weights


def parity_vs_eager(fuser, frames, n: int) -> float:
    """Max |fuser - torch eager float32 CPU| of the fused luma on the first ``n`` frames (same checkpoint, same
    entity features; inputs: the raw frames as [0, 1] IR grey and visible luma)."""
    from egmt_ros.core.images import from_uint8, to_gray
    from egmt_ros.model.method import EGMTFuser

    ref = EGMTFuser.from_checkpoint(fuser.checkpoint)
    ref.set_entity_features(fuser._ent)
    worst = 0.0
    for thermal, rgb in frames[:n]:
        ir, vi_y = from_uint8(thermal), to_gray(from_uint8(np.ascontiguousarray(rgb[:, :, ::-1])))
        worst = max(worst, float(np.abs(fuser.fuse(ir, vi_y) - ref.fuse(ir, vi_y)).max()))
    return worst


def is_egmt(name: str) -> bool:
    return name in ("egmt", "egmt_rt") or name in RANDOM_METHODS


# --------------------------------------------------------------------------- timing
def run_rows(items: list[tuple[Row, Any, set[str]]], frames, detector, seconds: float, warmup: int,
             min_frames: int) -> None:
    """Time each ``(row, method, reported)`` through the pipeline (and the detector) on ``frames``; fills the rows.

    Several items (of any thread counts: each frame runs with its row's) are timed round-robin, one frame each in
    turn, for ``seconds`` x their number (``--interleave``):
    a change of the machine's load then hits every row alike. ``reported``: setup steps of that method already
    counted in an earlier row (updated here). A row's wall time is the sum of its frames' total times.
    """
    import cv2
    import torch

    from egmt_ros.fusion.engine import FusionEngine

    pipes = [FusionEngine(method) for _, method, _ in items]

    def one(k: int, i: int) -> dict[str, float]:
        thermal, rgb = frames[i % len(frames)]
        torch.set_num_threads(items[k][0].threads)  # rows of several thread counts may take turns (~1 us)
        cv2.setNumThreads(items[k][0].threads)
        t0 = time.perf_counter()
        res = pipes[k].process(thermal, rgb, "bgr8", stamp=float(i))
        times = dict(res.timings)
        if detector is not None:
            t1 = time.perf_counter()
            img = res.image[:, :, ::-1] if res.image.ndim == 3 else res.image  # BGR -> RGB
            detector.detect(img)
            times["detect"] = time.perf_counter() - t1
        times["total"] = time.perf_counter() - t0
        return times

    for k, (row, method, reported) in enumerate(items):
        row.load_avg_1m = load_avg()[0]
        for i in range(max(1, warmup)):
            t = one(k, i)
            if i == 0:
                row.first_frame_ms = t["total"] * 1e3
        setup = getattr(getattr(method, "backend", None), "setup_seconds", {})
        row.setup_s = sum(v for key, v in setup.items() if key not in reported)
        reported.update(setup)
        row.samples = {}
    n = 0
    t_start = time.perf_counter()
    while True:
        for k, (row, _, _) in enumerate(items):
            c0 = time.process_time()
            t = one(k, warmup + n)
            row.cpu_s += time.process_time() - c0
            row.wall_s += t["total"]
            row.frames += 1
            for key, v in t.items():
                row.samples.setdefault(key, []).append(v)
        n += 1
        if time.perf_counter() - t_start >= seconds * len(items) and n >= min_frames:
            break


# --------------------------------------------------------------------------- report
def _ms(d: dict[str, Any], stage: str) -> str:
    p50, p99 = d[f"{stage}_p50_ms"], d[f"{stage}_p99_ms"]
    if p50 != p50:  # NaN: stage not run
        return "-"
    return f"{p50:.1f} / {p99:.1f}"


def _sci(v: float) -> str:
    return "-" if v != v else f"{v:.1e}"  # NaN: not an EGMT row


def add_lp_ratios(rows: list[dict[str, Any]]) -> None:
    """``total_p50_vs_lp`` / ``fuse_p50_vs_lp``: each row's p50 over the Laplacian pyramid's (method ``lp``) of the
    same mode and thread count (issue 18's CPU yardstick); NaN without such an lp row."""
    lp = {(d["mode"], d["threads"]): d for d in rows if d["method"] == "lp"}
    for d in rows:
        ref = lp.get((d["mode"], d["threads"]))
        for stage in ("total", "fuse"):
            d[f"{stage}_p50_vs_lp"] = d[f"{stage}_p50_ms"] / ref[f"{stage}_p50_ms"] if ref else float("nan")


def _ratio(d: dict[str, Any]) -> str:
    if d["total_p50_vs_lp"] != d["total_p50_vs_lp"]:  # NaN: no lp row
        return "-"
    return f"{d['total_p50_vs_lp']:.1f}x / {d['fuse_p50_vs_lp']:.1f}x"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Pipeline benchmark", "", "Command:", "", "```", meta["command"], "```", ""]
    lines += [f"- {k}: {v}" for k, v in meta["facts"].items()]
    lines += ["", "Latency per stage: p50 / p99 in ms over the timed frames; fps = timed frames / wall seconds; "
                  "setup = export / compile / engine build seconds (first use); first frame = the first warm-up "
                  "frame in ms; fuse min = the fastest timed fuse stage (least disturbed by other load); "
                  "CPU ms/frame = this process's CPU time (all its threads) per timed frame, which other "
                  "processes' load does not inflate the way it inflates wall time; max diff = max |fused luma - "
                  "torch eager float32| on the first --parity-frames frames; load 1m = the 1-minute load "
                  "average when the row started; x lp = total p50 / fuse p50 over the lp row's of the same mode "
                  "and threads.", ""]
    head = ["method", "weights", "backend", "threads", "mode", "frames", "fps", "preprocess", "fuse", "postprocess",
            "detect", "total", "fuse min", "CPU ms/frame", "max diff", "setup s", "first frame ms", "load 1m",
            "x lp (total / fuse)"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for d in rows:
        cells = [d["method"], d["weights"], d["backend"], str(d["threads"]), d["mode"], str(d["frames"]),
                 f"{d['fps']:.2f}", _ms(d, "preprocess"), _ms(d, "fuse"), _ms(d, "postprocess"), _ms(d, "detect"),
                 _ms(d, "total"), f"{d['fuse_min_ms']:.1f}", f"{d['cpu_ms_per_frame']:.0f}",
                 _sci(d["max_abs_diff_vs_eager"]),
                 f"{d['setup_s']:.1f}", f"{d['first_frame_ms']:.0f}", f"{d['load_avg_1m']:.2f}", _ratio(d)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[Path, Path]:
    from egmt_ros.report import write_csv

    out.mkdir(parents=True, exist_ok=True)
    md = out / "bench_pipeline.md"
    md.write_text(markdown(rows, meta))
    csv = write_csv(out / "bench_pipeline.csv", rows, CSV_COLUMNS)
    return md, csv


def _run_group(built, mode: str, args: argparse.Namespace, size: tuple[int, int], frames, detector,
               many: bool = False):
    """Time the built methods in one mode (round-robin when several); the rows as dicts (a list if ``many``)."""
    items = []
    for name, backend, method, weights, reported, diff, nthreads in built:
        row = Row(name, weights, backend or "-", args.device if backend else "cpu",
                  split_backend(backend, args.dtype)[1] if backend else "-",
                  nthreads, mode, size[0], size[1], max_abs_diff=diff)
        items.append((row, method, reported))
    print(f"[bench_pipeline] mode={mode}: "
          + ", ".join(f"{r.method}/{r.backend}/{r.threads}t" for r, _, _ in items) + " ...", file=sys.stderr,
          flush=True)
    run_rows(items, frames, detector if mode == "fusion+detection" else None, args.seconds, args.warmup,
             args.min_frames)
    out = []
    for row, _, _ in items:
        d = row.as_dict()
        print(f"[bench_pipeline]   {row.method}/{row.backend}: {d['frames']} frames, {d['fps']:.2f} fps, fuse p50 "
              f"{d['fuse_p50_ms']:.1f} ms, total p50 {d['total_p50_ms']:.1f} ms", file=sys.stderr, flush=True)
        out.append(d)
    return out if many else out[0]


# --------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    import cv2
    import torch

    threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        return _run(args, argv)
    except (BenchError, FileNotFoundError, ValueError, ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:  # --threads changes process-wide settings: give the caller its own back
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    import cv2
    import torch

    from egmt_ros.model.backends import canonical_backend
    from egmt_ros.paths import data_root, shown_path

    size = parse_size(args.size)
    methods = _csv(args.methods)
    backends = [":".join([canonical_backend(b), *d]) for b, *d in (b.split(":", 1) for b in _csv(args.backend))]
    modes = _csv(args.modes)
    for m in modes:
        if m not in MODES:
            raise BenchError(f"unknown mode {m!r}; use {', '.join(MODES)}")
    threads = [int(t) for t in _csv(args.threads)]
    if not methods or not backends or not modes or not threads or min(threads) < 1:
        raise BenchError("--methods, --backend, --modes and --threads must each name at least one value")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda, but torch sees no CUDA device")
    folder = args.data or data_root(must_exist=True) / "roadscene"
    frames = load_frames(folder, size, args.pairs)

    detector = None
    if "fusion+detection" in modes:
        from egmt_ros.detection.detector import Detector

        detector = Detector(args.detector_weights, trust_pickle=args.weights_trust_pickle)

    la0 = load_avg()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rows: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="egmt_bench_") as tmpdir:
        tmp = Path(tmpdir)
        built: list[tuple] = []  # (name, backend, method, weights, reported setup keys, max diff, threads)
        for nthreads in threads:
            torch.set_num_threads(nthreads)  # before building: inductor compiles for the current thread count
            cv2.setNumThreads(nthreads)
            for name in methods:
                for backend in (backends if is_egmt(name) else [None]):
                    t0 = time.perf_counter()
                    method, weights = make_method(name, backend, args, nthreads, tmp)
                    print(f"[bench_pipeline] {name} backend={backend or '-'} threads={nthreads}: loaded in "
                          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
                    diff = float("nan")
                    if backend is not None and args.parity_frames > 0:
                        diff = parity_vs_eager(method, frames, args.parity_frames)
                        print(f"[bench_pipeline]   max |diff| vs torch eager float32: {diff:.3g}", file=sys.stderr,
                              flush=True)
                    built.append((name, backend, method, weights, set(), diff, nthreads))
                    if not args.interleave:
                        for mode in modes:
                            rows.append(_run_group([built[-1]], mode, args, size, frames, detector))
                        built[-1] = (name, backend, None, weights, set(), diff, nthreads)  # free the model
        if args.interleave:  # every method of every thread count takes turns, per mode
            for mode in modes:
                rows.extend(_run_group(built, mode, args, size, frames, detector, many=True))
        del built
    la1 = load_avg()
    mem = mem_gib()
    gpu = gpu_name()
    facts = {
        "date": started,
        "machine": f"{os.cpu_count()} logical CPUs (nproc), {cpu_model()}"
                   + (f", {mem:.0f} GiB RAM" if mem else "") + (f", GPU {gpu}" if gpu else ", no GPU"),
        "load average (1, 5, 15 min)": f"{la0[0]:.2f}, {la0[1]:.2f}, {la0[2]:.2f} at the start; "
                                       f"{la1[0]:.2f}, {la1[1]:.2f}, {la1[2]:.2f} at the end",
        "software": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "frames": f"{len(frames)} pairs of {shown_path(folder)} resized to {size[0]}x{size[1]} (mono8 thermal, bgr8 visible)",
        "settings": f"--seconds {args.seconds:g}, --warmup {args.warmup}, --entities {args.entities}, "
                    f"device {args.device}, dtype {args.dtype}",
    }
    notes = []
    if any(is_egmt(m) for m in methods):
        notes.append("EGMT rows get entity features as an input (random unit vectors; timing does not depend on "
                     "their values). random_rt / random_paper: random-initialised weights of that configuration "
                     "(timing does not depend on the weights; random_rt's zero-initialised last decoder conv is "
                     "randomised too, so that its output depends on every layer for the max diff column).")
    if detector is not None:
        notes.append(f"detector: {shown_path(detector.weights)} (ultralytics predict, imgsz {detector.imgsz}, device "
                     f"{detector.device}); its threads are OpenVINO's default, not --threads.")
    if gpu is None:
        notes.append("GPU: not measured: no device in this session.")
    notes.append("Live ROS graph (receive-to-publish from a bag): not measured by this tool; see "
                 "`python -m egmt_ros.cli.demo`.")
    meta = {"command": "python -m egmt_ros.cli.bench_pipeline " + " ".join(shlex.quote(a) for a in argv),
            "facts": facts, "notes": notes}
    add_lp_ratios(rows)
    for d in rows:
        if d["method"] != "lp" and d["total_p50_vs_lp"] == d["total_p50_vs_lp"]:
            print(f"[bench_pipeline]   {d['method']}/{d['backend']}/{d['threads']}t/{d['mode']}: {_ratio(d)} lp's "
                  "total / fuse p50", file=sys.stderr, flush=True)
    md, csv = write_outputs(args.out, rows, meta)
    print(f"wrote {md} and {csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
