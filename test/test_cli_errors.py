"""Bad input to the command-line tools ends in ONE line on stderr naming the file and the problem, a non-zero exit
status, no traceback, and no empty or half-written output folder: fuse and bench on a pair of different sizes and on
a text file named .png, fuse with --model pointing at a text file, the demo with a truncated bag (refused before the
graph starts), play on a 100-byte .mcap."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest


def pair_folder(root: Path, vi_size: tuple[int, int] = (64, 48), vi_text: bool = False) -> Path:
    """``root/ir/a.png`` (64x48 grey) and ``root/vi/a.png``: colour of ``vi_size`` (w, h), or text named .png."""
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "ir" / "a.png"), rng.integers(0, 256, (48, 64), dtype=np.uint8))
    if vi_text:
        (root / "vi" / "a.png").write_text("this is a text file, not an image\n")
    else:
        cv2.imwrite(str(root / "vi" / "a.png"), rng.integers(0, 256, (vi_size[1], vi_size[0], 3), dtype=np.uint8))
    return root


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


def assert_one_line_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.mark.parametrize("tool", ["fuse", "bench"])
@pytest.mark.parametrize("case", ["sizes", "text_png"])
def test_fuse_and_bench_refuse_bad_pairs(tool: str, case: str, tmp_path: Path) -> None:
    data = pair_folder(tmp_path / "pairs", vi_size=(32, 32), vi_text=False) if case == "sizes" else \
        pair_folder(tmp_path / "pairs", vi_text=True)
    out = tmp_path / "out"
    args = (["egmt_ros.cli.fuse", "--ir", "pairs/ir", "--vi", "pairs/vi", "--out", "out"] if tool == "fuse" else
            ["egmt_ros.cli.bench", "--data", "pairs", "--methods", "average", "--out", "out", "--quiet"])
    line = assert_one_line_error(run_cli(args, tmp_path), "pairs/vi/a.png")
    assert ("64x48" in line and "32x32" in line) if case == "sizes" else "not a readable image" in line
    assert not out.exists()


def test_fuse_refuses_a_text_file_as_model(tmp_path: Path) -> None:
    pair_folder(tmp_path / "pairs")
    (tmp_path / "model.pt").write_text("not a checkpoint\n")
    proc = run_cli(["egmt_ros.cli.fuse", "--ir", "pairs/ir", "--vi", "pairs/vi", "--out", "out",
                    "--model", "model.pt"], tmp_path)
    assert "not an egmt_ros checkpoint" in assert_one_line_error(proc, "model.pt")
    assert not (tmp_path / "out").exists()


def test_play_refuses_a_100_byte_mcap(tmp_path: Path) -> None:
    (tmp_path / "tiny.mcap").write_bytes(np.random.default_rng(1).integers(0, 256, 100, dtype=np.uint8).tobytes())
    proc = run_cli(["rosbag_tools.play", "tiny.mcap", "--no-progress"], tmp_path)
    assert "not a readable bag" in assert_one_line_error(proc, "tiny.mcap")


def test_demo_refuses_a_truncated_bag_before_starting_the_graph(data_root: Path, tmp_path: Path) -> None:
    from rosbag_tools.make_bag import make_bag

    make_bag(tmp_path / "bag", pairs=data_root / "msrs_train5", max_frames=3, progress=False)
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    t0 = time.monotonic()
    proc = run_cli(["egmt_ros.cli.demo", "--sample", "bag", "--out", "demo"], tmp_path)
    assert "damaged" in assert_one_line_error(proc, "bag")
    assert time.monotonic() - t0 < 60, "refused up front, not after starting three nodes"
    assert not (tmp_path / "demo").exists()
