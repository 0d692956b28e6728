"""Whole-frame text-control effects against the plain fusion, TeRF Table 2 style.

    python -m egmt_ros.cli.bench_effects --data ../shared/data/roadscene [--method lp] [--limit N]
        [--noise-sigma 0.05] [--out docs/benchmarks/terf]

Rows (TeRF Table 2's I-VII where they apply):
  plain        the base fusion F of the sources
  (I)  ir      infrared inclination of F, level 1 (whole frame)
  (II) vi      visible inclination of F, level 1
  (III) brighten / (IV) darken   illumination enhance / reduce of F, level 1
  (IV') darken on over-exposed   the darken row on the over-exposed subset only (fused mean luma > 0.5);
                                 also its plain row, so the SSIM against the visible source can be compared
  (V)  noisy   F of the sources with Gaussian noise (sigma ``--noise-sigma`` on [0, 1]) added to the visible image
  (VI) denoised  noise removal (level 1) applied to (V)
Metrics: EN, SD, AG, SF of the result; mean luma (0-255); SSIM_vi = SSIM(result, visible) alone; SSIM (sum over both
sources) and Qabf against the NOISE-FREE sources (egmt_ros.metrics; 0..255 scale).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from egmt_ros.core.color import split_luma
from egmt_ros.core.images import list_pairs, load_pair, to_uint8
from egmt_ros.fusion.methods import get_method
from egmt_ros.fusion.terf import STEP, effect
from egmt_ros.metrics.basic import average_gradient, entropy, spatial_frequency, std_dev
from egmt_ros.metrics.gradient import qabf
from egmt_ros.metrics.structural import ssim, ssim_pair
from egmt_ros.report import Column, markdown_table, write_csv

ROWS = ("plain", "ir", "vi", "brighten", "darken", "plain (over-exposed)", "darken (over-exposed)", "noisy",
        "denoised")
OVEREXPOSED_MEAN = 0.5


def score(result: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> dict[str, float]:
    """Metrics of one result (float [0, 1]) against the clean sources."""
    f, a, b = (to_uint8(x) for x in (result, ir, vi))
    return {"EN": entropy(f), "SD": std_dev(f), "AG": average_gradient(f), "SF": spatial_frequency(f),
            "mean": float(f.mean()), "SSIM_vi": ssim_pair(f, b), "SSIM": ssim(f, a, b), "Qabf": qabf(f, a, b)}


def run(data: Path, method_name: str, limit: int | None, sigma: float, seed: int = 0) -> dict[str, list[dict]]:
    method = get_method(method_name)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {r: [] for r in ROWS}
    pairs = list_pairs(data)[:limit]
    for _name, ir_p, vi_p in tqdm(pairs, desc=f"effects on {data.name}", unit="pair"):
        ir, vi = load_pair(ir_p, vi_p)
        vi_y, _ = split_luma(vi)
        plain = method.fuse(ir, vi_y)
        rows["plain"].append(score(plain, ir, vi_y))
        for task in ("ir", "vi", "brighten", "darken"):
            rows[task].append(score(effect(task, STEP[task], plain, ir, vi_y), ir, vi_y))
        if plain.mean() > OVEREXPOSED_MEAN:
            rows["plain (over-exposed)"].append(rows["plain"][-1])
            rows["darken (over-exposed)"].append(rows["darken"][-1])
        noisy_vi = np.clip(vi_y + rng.normal(0, sigma, vi_y.shape), 0, 1).astype(np.float32)
        noisy = method.fuse(ir, noisy_vi)
        rows["noisy"].append(score(noisy, ir, vi_y))
        rows["denoised"].append(score(effect("denoise", STEP["denoise"], noisy, ir, noisy_vi), ir, vi_y))
    return rows


def summarise(rows: dict[str, list[dict]]) -> list[dict]:
    out = []
    for name, vals in rows.items():
        if not vals:
            continue
        row: dict = {"row": name, "n": len(vals)}
        for k in vals[0]:
            row[k] = float(np.mean([v[k] for v in vals]))
        out.append(row)
    return out


COLUMNS = [Column("row", "result"), Column("n", "pairs"), Column("EN", "EN", None, unit="bits"),
           Column("SD", "SD"), Column("AG", "AG"), Column("SF", "SF"), Column("mean", "mean luma"),
           Column("SSIM_vi", "SSIM vs VI"), Column("SSIM", "SSIM (sum)"), Column("Qabf", "Qabf")]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.cli.bench_effects", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="pair folder (ir/ + vi/)")
    ap.add_argument("--method", default="lp", help="base fusion method (default lp)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--noise-sigma", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/terf"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    table = summarise(run(args.data, args.method, args.limit, args.noise_sigma))
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "effects.csv", table, [c.key for c in COLUMNS])
    cmd = "python -m egmt_ros.cli.bench_effects " + " ".join(sys.argv[1:] if argv is None else argv)
    md = (f"# Whole-frame text-control effects on {args.data.name} (base fusion: {args.method})\n\n"
          f"Command: `{cmd}` ({time.perf_counter() - t0:.0f} s on this machine).\n\n"
          + markdown_table(table, COLUMNS, note=False))
    (args.out / "effects.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
