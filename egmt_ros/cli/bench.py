"""Benchmark fusion methods on ir/ + vi/ pair folders and write tables, contact sheets and an HTML report.

    python -m egmt_ros.cli.bench --data DIR [DIR ...] --methods egmt_rt,average,max,lp,gff \\
        [--fused NAME=DIR ...] [--metrics EN,SD,...] [--limit N] [--entities FILE] --out DIR

For every dataset (a pair folder) each registered method (``--methods``) fuses the grey IR and the visible luma Y
(``split_luma``); its output is converted to 8 bits exactly as a saved file would be (``to_uint8``: round, clip) and
scored with ``egmt_ros.metrics.fusion.compute_all`` against the 8-bit IR and 8-bit visible Y. A ``--fused NAME=DIR``
folder of already fused images (one per pair, matched by file stem; grey, or colour of which the Y is scored) is
scored the same way; a folder with no file for a dataset is left out of that dataset's table (and said so).

Outputs under ``--out``:
- ``<dataset>/results.md``, ``<dataset>/results.csv``: mean and std (population, over pairs) per metric per method,
  ms/frame (median after warm-up, on the dataset's first pair at its size; only for methods that were run),
  learnable parameters and GFLOPs where the method reports them; ``<dataset>/per_pair.csv``: every score;
  ``<dataset>/contact_sheet.png``: a few pairs, columns IR | VI | each method.
- ``results.md``, ``results.csv``: the overall table (pairs of all datasets pooled; ms/frame on one ``--time-size``
  frame) followed by / together with every dataset's table.
- ``index.html``: all tables and sheets (plain HTML, inline CSS, relative links).
"""

from __future__ import annotations

import argparse
import html
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import cv2
import numpy as np
from tqdm import tqdm

from egmt_ros import report
from egmt_ros.cli.common import output_folder
from egmt_ros.core.color import split_luma
from egmt_ros.core.images import IMAGE_EXTS, check_pair, list_pairs, load_image, load_pair, to_uint8
from egmt_ros.fusion.engine import fuse_images
from egmt_ros.fusion.methods import FusionMethod, available, get_method

SHEET_MAX_BYTES = 1_500_000


class BenchError(Exception):
    """A user error (bad argument, missing data, unknown method); reported without a traceback."""


@dataclass
class Entry:
    """One row of the tables: a method that is run, or a folder of fused images that is scored."""

    name: str
    kind: str  # "run" | "fused"
    method: FusionMethod | None = None
    folder: Path | None = None
    spec: str = ""  # how to build the method again (a registered name, or NAME=CHECKPOINT)


def build_method(spec: str) -> tuple[str, FusionMethod]:
    """``(row name, method)`` of a method spec: a registered name, or ``NAME=CHECKPOINT`` for an EGMT checkpoint
    (``get_method("egmt", model=CHECKPOINT)``, e.g. one the training CLI wrote)."""
    name, sep, path = spec.partition("=")
    if sep:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint for {name!r} not found: {path}")
        return name, get_method("egmt", model=path)
    return spec, get_method(spec)


@dataclass
class DatasetResult:
    """Scores and side information of one dataset."""

    name: str
    folder: Path
    n_pairs: int
    scores: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # entry -> per-pair scores
    stems: dict[str, list[str]] = field(default_factory=dict)  # entry -> stems scored
    timing: dict[str, float] = field(default_factory=dict)  # entry -> ms/frame (median)
    time_size: tuple[int, int] = (0, 0)  # (width, height) of the timing frame
    absent: list[str] = field(default_factory=list)  # fused entries with no file for this dataset
    sheet: Path | None = None


# --------------------------------------------------------------------------- arguments

def _split_list(values: Sequence[str] | None) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (commas and spaces both separate)."""
    return [v for item in (values or []) for v in item.split(",") if v.strip()]


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size too small: {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m egmt_ros.cli.bench``."""
    p = argparse.ArgumentParser(prog="python -m egmt_ros.cli.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, type=Path, metavar="DIR",
                   help="pair folders (each with ir/ and vi/)")
    p.add_argument("--methods", nargs="*", default=[], metavar="NAMES",
                   help="fusion methods to run, comma separated: registered names (e.g. egmt_rt,average,max,lp,gff) "
                        "or NAME=CHECKPOINT for an EGMT checkpoint (e.g. egmt_paper=out/train/best.pt)")
    p.add_argument("--fused", nargs="+", action="extend", default=[], metavar="NAME=DIR",
                   help="score a folder of already fused images (matched to pairs by file stem)")
    p.add_argument("--metrics", nargs="*", default=[], metavar="NAMES",
                   help="metric names, comma separated (default: all, paper metrics first)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N pairs of each dataset")
    p.add_argument("--entities", type=Path, default=None, metavar="FILE",
                   help="JSON with entity words per pair for the contact sheet labels: {stem: [words]} or "
                        "{'dataset/stem': [words]} (default: <dataset>/entities.json when present)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--sheet-rows", type=int, default=4, help="pairs per contact sheet (default 4)")
    p.add_argument("--sheet-tile", type=_parse_size, default=(200, 150), metavar="WxH",
                   help="contact sheet cell size (default 200x150)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the median is reported (default 5)")
    p.add_argument("--time-size", type=_parse_size, default=(640, 480), metavar="WxH",
                   help="frame size of the overall table's timing (default 640x480)")
    p.add_argument("--screenshot", action="store_true",
                   help="also render index.html to index.png with headless Chromium")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes for fusing + scoring (default 1; timing always runs alone afterwards)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# --------------------------------------------------------------------------- helpers

def _load_metrics():
    try:
        from egmt_ros.metrics import fusion as fm
    except ModuleNotFoundError as exc:
        if exc.name in ("egmt_ros.metrics.fusion",):
            raise BenchError("the metric suite egmt_ros.metrics.fusion is not available in this checkout") from exc
        raise
    return fm


def _metric_names(fm, requested: list[str]) -> list[str]:
    """Requested (or all) metric names, in the order of PAPER_METRICS then the rest; unknown names are an error."""
    known = list(fm.METRICS)
    unknown = [m for m in requested if m not in fm.METRICS]
    if unknown:
        raise BenchError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = set(requested) if requested else set(known)
    order = [m for m in fm.PAPER_METRICS if m in fm.METRICS] + [m for m in known if m not in fm.PAPER_METRICS]
    return [m for m in order if m in chosen]


def _build_entries(method_names: list[str], fused: list[str]) -> list[Entry]:
    known = available()
    unknown = [m for m in method_names if "=" not in m and m not in known]
    if unknown:
        hint = ""
        if "egmt_rt" in unknown:
            hint = (" (egmt_rt is registered by egmt_ros.model.method, the EGMT model; it is not available in "
                    "this checkout, or it failed to register)")
        raise BenchError(f"unknown fusion method(s): {', '.join(unknown)}{hint}; known: {', '.join(known)}")
    entries = []
    for n in dict.fromkeys(method_names):
        try:
            label, method = build_method(n)
            entries.append(Entry(label, "run", method=method, spec=n))
        except (OSError, RuntimeError, ValueError, TypeError, ImportError) as exc:  # e.g. missing weights
            raise BenchError(f"cannot build fusion method {n!r}: {exc}") from exc
    for spec in fused:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise BenchError(f"--fused expects NAME=DIR, got {spec!r}")
        if any(e.name == name for e in entries):
            raise BenchError(f"--fused name {name!r} is used twice (or clashes with a method name)")
        path = Path(folder)
        if not path.is_dir():
            raise BenchError(f"--fused {name}: {path} is not a folder")
        entries.append(Entry(name, "fused", folder=path))
    if not entries:
        raise BenchError("nothing to benchmark: give --methods and/or --fused")
    return entries


def _dataset_names(folders: list[Path]) -> list[str]:
    """Unique, file-system-safe names: the folder name, prefixed by its parent where names collide."""
    names: list[str] = []
    for f in folders:
        r = f.resolve()
        name = r.name
        if name in names:
            name = f"{r.parent.name}_{r.name}"
        i = 2
        base = name
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


def _files_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS}


def _load_fused_u8(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """An already fused image as the 8-bit grey that is scored (the Y of a colour file)."""
    img = load_image(path)
    y = img if img.ndim == 2 else split_luma(img)[0]
    if y.shape != shape:
        raise BenchError(f"{path} is {y.shape[1]}x{y.shape[0]}, its source pair is {shape[1]}x{shape[0]}")
    return to_uint8(y)


def load_entities(path: Path | None, dataset_folder: Path) -> dict[str, list[str]]:
    """Entity words per key from a JSON file (``--entities`` or ``<dataset>/entities.json``); {} if none."""
    src = path if path is not None else dataset_folder / "entities.json"
    if not src.is_file():
        if path is not None:
            raise BenchError(f"--entities: no file {path}")
        return {}
    try:
        raw = json.loads(src.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchError(f"{src} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BenchError(f"{src}: expected a JSON object mapping pair names to entity words")
    out: dict[str, list[str]] = {}
    for key, val in raw.items():
        if isinstance(val, dict):
            val = val.get("entities", val.get("labels", []))
        words = [v.get("label", v.get("name", "")) if isinstance(v, dict) else str(v) for v in (val or [])]
        out[str(key)] = [w for w in words if w]
    return out


def sheet_title(dataset: str, stem: str, entities: dict[str, list[str]]) -> str:
    """Row label of a contact sheet: the pair name and its entity words (key ``dataset/stem`` first, then ``stem``)."""
    words = entities.get(f"{dataset}/{stem}", entities.get(stem, []))
    return stem + (": " + ", ".join(words) if words else "")


def time_method(method: FusionMethod, ir: np.ndarray, vi_y: np.ndarray, warmup: int = 1, repeat: int = 5) -> float:
    """Median wall time of ``method.fuse`` in milliseconds after ``warmup`` untimed runs."""
    for _ in range(max(0, warmup)):
        method.fuse(ir, vi_y)
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        method.fuse(ir, vi_y)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def _sheet_indices(n: int, rows: int) -> list[int]:
    if n <= 0 or rows <= 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(rows, n))})


# --------------------------------------------------------------------------- the run

@dataclass
class PairJob:
    """Everything needed to score one pair (picklable, for worker processes)."""

    index: int
    stem: str
    ir_path: Path
    vi_path: Path
    entries: list[tuple[str, str]]  # (name, kind) of the active entries, in table order
    fused_paths: dict[str, Path]  # fused entry name -> its file for this pair (absent: no file)
    keep_images: bool  # return the images for the contact sheet


@dataclass
class PairResult:
    index: int
    stem: str
    scores: dict[str, dict[str, float]]  # entry name -> metric -> value
    images: list[np.ndarray | None] | None  # IR, VI, then one per entry (None: no file), when kept


def score_pair(job: PairJob, methods: dict[str, FusionMethod], fm, metrics: list[str]) -> PairResult:
    """Fuse one pair with every run method / load every fused file, and score all of them on 8-bit images."""
    ir, vi = load_pair(job.ir_path, job.vi_path)
    vi_y, _ = split_luma(vi)
    ir_u8, vi_u8 = to_uint8(ir), to_uint8(vi_y)
    images: list[np.ndarray | None] = [ir_u8, vi]
    scores: dict[str, dict[str, float]] = {}
    for name, kind in job.entries:
        if kind == "run":
            fused_u8 = to_uint8(fuse_images(methods[name], ir, vi_y))  # the one fusion path, grey visible
        elif name in job.fused_paths:
            fused_u8 = _load_fused_u8(job.fused_paths[name], ir.shape)
        else:
            images.append(None)
            continue
        scores[name] = fm.compute_all(fused_u8, ir_u8, vi_u8, names=metrics)
        images.append(fused_u8)
    return PairResult(job.index, job.stem, scores, images if job.keep_images else None)


_WORKER: dict = {}


def _worker_init(run_names: list[str], metrics: list[str]) -> None:
    """Worker process set-up: one OpenCV thread, its own method instances and metric module."""
    cv2.setNumThreads(1)
    _WORKER["methods"] = dict(build_method(spec) for spec in run_names)
    _WORKER["fm"] = _load_metrics()
    _WORKER["metrics"] = metrics


def _worker_score(job: PairJob) -> PairResult:
    return score_pair(job, _WORKER["methods"], _WORKER["fm"], _WORKER["metrics"])


def _run_dataset(name: str, folder: Path, entries: list[Entry], metrics: list[str], fm, args: argparse.Namespace,
                 out: Path, bar: tqdm, pool: Executor | None) -> DatasetResult:
    pairs = list_pairs(folder)
    if args.limit is not None:
        pairs = pairs[:args.limit]
    res = DatasetResult(name, folder, len(pairs))
    stems = {s for s, _, _ in pairs}
    fused_files: dict[str, dict[str, Path]] = {}
    for e in entries:
        if e.kind == "fused":
            files = {s: p for s, p in _files_by_stem(e.folder).items() if s in stems}
            if files:
                fused_files[e.name] = files
            else:
                res.absent.append(e.name)
    active = [e for e in entries if e.kind == "run" or e.name in fused_files]
    for e in active:
        res.scores[e.name], res.stems[e.name] = [], []

    entities = load_entities(args.entities, folder)
    sheet_idx = set(_sheet_indices(len(pairs), args.sheet_rows))
    jobs = [PairJob(i, stem, ir_path, vi_path, [(e.name, e.kind) for e in active],
                    {k: v[stem] for k, v in fused_files.items() if stem in v}, i in sheet_idx)
            for i, (stem, ir_path, vi_path) in enumerate(pairs)]
    methods = {e.name: e.method for e in active if e.kind == "run"}
    if pool is None:
        results = (score_pair(j, methods, fm, metrics) for j in jobs)
    else:
        results = pool.map(_worker_score, jobs)
    sheet_rows: list[list[np.ndarray | None]] = []
    sheet_titles: list[str] = []
    for pr in results:
        for e in active:
            if e.name in pr.scores:
                res.scores[e.name].append(pr.scores[e.name])
                res.stems[e.name].append(pr.stem)
        if pr.images is not None:
            sheet_rows.append(pr.images)
            sheet_titles.append(sheet_title(name, pr.stem, entities))
        bar.set_postfix_str(f"{name}/{pr.stem}")
        bar.update(1)

    if pairs:  # timing in this process, after scoring, on the first pair at its own size
        ir, vi = load_pair(pairs[0][1], pairs[0][2])
        vi_y = split_luma(vi)[0]
        res.time_size = (ir.shape[1], ir.shape[0])
        for e in active:
            if e.kind == "run":
                res.timing[e.name] = time_method(e.method, ir, vi_y, args.warmup, args.repeat)
    if sheet_rows:
        sheet = report.contact_sheet(sheet_rows, ["IR", "VI"] + [e.name for e in active], sheet_titles,
                                     tile=args.sheet_tile)
        res.sheet = report.save_png(out / name / "contact_sheet.png", sheet, max_bytes=SHEET_MAX_BYTES)
    return res


def _aggregate(entries: list[Entry], metrics: list[str], scores: dict[str, list[dict[str, float]]],
               timing: dict[str, float], size: tuple[int, int], dataset: str,
               coverage: dict[str, list[str]] | None = None) -> list[dict]:
    """Table rows (one per entry with scores): n, mean/std per metric, timing, params, GFLOPs."""
    rows = []
    for e in entries:
        per = scores.get(e.name)
        if not per:
            continue
        row: dict = {"dataset": dataset, "method": e.name, "kind": e.kind, "n": len(per)}
        if coverage is not None:
            row["datasets"] = ", ".join(coverage.get(e.name, []))
        for m in metrics:
            vals = np.array([s.get(m, np.nan) for s in per], dtype=np.float64)
            ok = vals[np.isfinite(vals)]
            row[f"{m}_mean"] = float(ok.mean()) if ok.size else float("nan")
            row[f"{m}_std"] = float(ok.std()) if ok.size else float("nan")
            row[f"{m}_nan"] = int(vals.size - ok.size)
        if e.kind == "run":
            row["ms_per_frame"] = timing.get(e.name)
            row["time_frame"] = f"{size[0]}x{size[1]}" if e.name in timing else None
            row["params"] = e.method.num_params()
            fl = e.method.flops(size[1], size[0])
            row["gflops"] = None if fl is None else fl / 1e9
        rows.append(row)
    return rows


def _columns(fm, metrics: list[str], overall: bool) -> list[report.Column]:
    cols = [report.Column("method", "method"), report.Column("n", "n")]
    if overall:
        cols.append(report.Column("datasets", "datasets"))
    for m in metrics:
        spec = fm.METRICS[m]
        cols.append(report.Column(f"{m}_mean", m, higher_is_better=bool(spec.higher_is_better),
                                  std_key=f"{m}_std"))
    cols += [report.Column("ms_per_frame", "ms/frame", higher_is_better=False), report.Column("time_frame", "frame"),
             report.Column("params", "params"), report.Column("gflops", "GFLOPs")]
    return cols


def _csv_fields(metrics: list[str]) -> list[str]:
    f = ["dataset", "method", "kind", "n"]
    for m in metrics:
        f += [f"{m}_mean", f"{m}_std"]
    return f + ["ms_per_frame", "time_frame", "params", "gflops"]


def _notes(absent: list[str], rows: list[dict], metrics: list[str], expected: dict[str, int],
           warmup: int, repeat: int) -> list[str]:
    """Notes under a table: absent / partially covered fused folders, NaN scores, how things were measured.

    ``expected[method]`` is the number of pairs the row should have (pairs of the datasets it covers).
    """
    notes = []
    if absent:
        notes.append("Not in this table (no fused file matches this dataset's pair names): " + ", ".join(absent) + ".")
    partial = [f"{r['method']} ({r['n']} of {expected[r['method']]})" for r in rows if r["n"] < expected[r["method"]]]
    if partial:
        notes.append("Scored on fewer pairs than the dataset has (fused files missing): " + ", ".join(partial) + ".")
    nan = [f"{m} of {r['method']} ({r[f'{m}_nan']} pairs)" for r in rows for m in metrics if r.get(f"{m}_nan")]
    if nan:
        notes.append("Undefined (NaN) scores left out of the mean: " + ", ".join(nan) + ".")
    threads = cv2.getNumThreads()
    notes.append(f"mean ± std (population) over pairs. ms/frame: median of {repeat} runs after {warmup} warm-up "
                 f"run(s) on one frame of the size shown, {os.cpu_count()} CPU cores visible, OpenCV threads "
                 f"{threads}; only for methods run here (fused folders were made elsewhere). "
                 "Run methods are scored on their output rounded to 8 bits (as a saved file); sources are the "
                 "8-bit IR and the 8-bit visible luma Y (BT.601).")
    return notes


def _method_lines(entries: list[Entry]) -> list[str]:
    lines = []
    for e in entries:
        if e.kind == "run":
            desc = getattr(e.method, "description", "") or ""
            params = getattr(e.method, "params", None)
            extra = f" {params}" if params else ""
            lines.append(f"{e.name}: run here; {desc}{extra}".rstrip())
        else:
            lines.append(f"{e.name}: fused images from {e.folder}")
    return lines


def _md_section(title: str, rows: list[dict], cols: list[report.Column], notes: list[str],
                sheet: str | None = None, level: int = 2) -> str:
    text = f"{'#' * level} {title}\n\n" + report.markdown_table(rows, cols)
    for n in notes:
        text += f"\n{n}\n"
    if sheet:
        text += f"\n![contact sheet]({sheet})\n"
    return text + "\n"


def _html_section(title: str, rows: list[dict], cols: list[report.Column], notes: list[str],
                  links: list[tuple[str, str]], sheet: str | None = None) -> str:
    _h = html
    text = f"<h2>{_h.escape(title)}</h2>\n" + report.html_table(rows, cols)
    for n in notes:
        text += f'<p class="note">{_h.escape(n)}</p>\n'
    if links:
        text += "<p>" + " · ".join(f'<a href="{_h.escape(quote(h))}">{_h.escape(t)}</a>' for t, h in links) + "</p>\n"
    if sheet:
        text += f'<img class="sheet" src="{_h.escape(quote(sheet))}" alt="contact sheet {_h.escape(title)}">\n'
    return text


def run(args: argparse.Namespace, argv: Sequence[str]) -> Path:
    """Run the benchmark described by parsed ``args``; returns the index.html path."""
    t_start = time.perf_counter()
    fm = _load_metrics()
    metrics = _metric_names(fm, _split_list(args.metrics))
    entries = _build_entries(_split_list(args.methods), args.fused)
    folders = list(args.data)
    for f in folders:
        if not f.is_dir():
            raise BenchError(f"--data: {f} is not a folder")
    names = _dataset_names(folders)
    pair_counts = []
    for f in folders:
        try:
            pairs = list_pairs(f)[:args.limit]
            for _, ir_path, vi_path in pairs:
                check_pair(ir_path, vi_path)
        except (FileNotFoundError, ValueError) as exc:
            raise BenchError(str(exc)) from exc
        pair_counts.append(len(pairs))
    out: Path = args.out

    results: list[DatasetResult] = []
    pool: Executor | None = None
    if args.jobs > 1:
        run_names = [e.spec for e in entries if e.kind == "run"]
        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(run_names, metrics))
    try:
        with tqdm(total=sum(pair_counts), desc="bench", unit="pair", disable=args.quiet or None) as bar:
            for name, folder in zip(names, folders):
                results.append(_run_dataset(name, folder, entries, metrics, fm, args, out, bar, pool))
    finally:
        if pool is not None:
            pool.shutdown()

    # overall: pairs of every dataset pooled; timing on one --time-size frame made from the first pair
    pooled: dict[str, list[dict[str, float]]] = {}
    coverage: dict[str, list[str]] = {}
    for r in results:
        for k, v in r.scores.items():
            pooled.setdefault(k, []).extend(v)
            coverage.setdefault(k, []).append(r.name)
    tw, th = args.time_size
    ir0, vi0 = load_pair(*list_pairs(folders[0])[0][1:])
    ir0 = cv2.resize(ir0, (tw, th), interpolation=cv2.INTER_AREA)
    vi0 = cv2.resize(split_luma(vi0)[0], (tw, th), interpolation=cv2.INTER_AREA)
    overall_timing = {e.name: time_method(e.method, ir0, vi0, args.warmup, args.repeat)
                      for e in entries if e.kind == "run"}
    overall_rows = _aggregate(entries, metrics, pooled, overall_timing, (tw, th), "overall", coverage)
    total_pairs = sum(r.n_pairs for r in results)

    command = "python -m egmt_ros.cli.bench " + shlex.join(list(argv))
    header_lines = [f"Command: `{command}`",
                    "Datasets: " + ", ".join(f"{r.name} ({r.n_pairs} pairs, {r.folder})" for r in results),
                    "Methods:\n" + "".join(f"- {m}\n" for m in _method_lines(entries)),
                    "Metric units: " + ", ".join(f"{m} {fm.METRICS[m].unit}".strip() for m in metrics)]
    ov_cols = _columns(fm, metrics, overall=True)
    n_by_name = {r.name: r.n_pairs for r in results}
    ov_expected = {k: sum(n_by_name[d] for d in cov) for k, cov in coverage.items()}
    ov_notes = _notes([], overall_rows, metrics, ov_expected, args.warmup, args.repeat)
    ov_notes.insert(0, "All datasets' pairs pooled (each pair weighs the same); a method with fewer datasets in "
                       "its 'datasets' column is averaged over those only, so compare rows with the same datasets.")
    ds_cols = _columns(fm, metrics, overall=False)
    all_rows = list(overall_rows)
    md_parts = ["# Fusion benchmark\n", *(f"{line}\n" for line in header_lines), "",
                _md_section(f"Overall ({total_pairs} pairs)", overall_rows, ov_cols, ov_notes)]
    html_head = (f"<p>Command: <code>{html.escape(command)}</code></p>\n<p>{html.escape(header_lines[1])}</p>\n"
                 "<p>Methods:</p>\n<ul>\n" + "".join(f"<li>{html.escape(m)}</li>\n" for m in _method_lines(entries))
                 + f"</ul>\n<p>{html.escape(header_lines[3])}</p>\n")
    html_parts = [html_head,
                  _html_section(f"Overall ({total_pairs} pairs)", overall_rows, ov_cols, ov_notes,
                                [("results.csv", "results.csv"), ("results.md", "results.md")])]
    for r in results:
        rows = _aggregate(entries, metrics, r.scores, r.timing, r.time_size, r.name)
        all_rows += rows
        notes = _notes(r.absent, rows, metrics, {k: r.n_pairs for k in r.scores}, args.warmup, args.repeat)
        sheet_rel = f"{r.name}/contact_sheet.png" if r.sheet else None
        title = f"{r.name} ({r.n_pairs} pairs)"
        ds_md = _md_section(title, rows, ds_cols, notes, "contact_sheet.png" if r.sheet else None, level=1)
        (out / r.name).mkdir(parents=True, exist_ok=True)
        (out / r.name / "results.md").write_text(ds_md, encoding="utf-8")
        report.write_csv(out / r.name / "results.csv", rows, _csv_fields(metrics))
        per_pair = [{"dataset": r.name, "method": k, "stem": s, **sc}
                    for k in r.scores for s, sc in zip(r.stems[k], r.scores[k])]
        report.write_csv(out / r.name / "per_pair.csv", per_pair, ["dataset", "method", "stem", *metrics])
        md_parts.append(_md_section(title, rows, ds_cols, notes, sheet_rel))
        html_parts.append(_html_section(title, rows, ds_cols, notes,
                                        [(f"{r.name}/results.csv", f"{r.name}/results.csv"),
                                         (f"{r.name}/per_pair.csv", f"{r.name}/per_pair.csv")], sheet_rel))
    wall = time.perf_counter() - t_start
    md_parts.append(f"Wall time of this run: {wall:.1f} s.\n")
    html_parts.append(f'<p class="note">Wall time of this run: {wall:.1f} s.</p>\n')
    (out / "results.md").write_text("\n".join(md_parts), encoding="utf-8")
    report.write_csv(out / "results.csv", all_rows, _csv_fields(metrics))
    index = out / "index.html"
    index.write_text(report.html_page("Fusion benchmark", "".join(html_parts)), encoding="utf-8")
    if args.screenshot:
        report.screenshot_html(index, out / "index.png")
    return index


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 2 on a user error (message on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        with output_folder(args.out):
            index = run(args, argv)
    except (BenchError, OSError, ValueError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    print(f"bench: wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
