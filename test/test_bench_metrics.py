"""The metric timing benchmark: every metric timed with the C kernels and with numpy, values compared."""

from __future__ import annotations

from pathlib import Path

import pytest

from egmt_ros.cli import bench_metrics
from egmt_ros.metrics import METRICS, _native


def test_bench_metrics_prints_both_paths_side_by_side(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_metrics.main(["--pair", f"{data_root / 'tno42'}:05", "--size", "96x72", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "C kernels available" in out and "96x72" in out and "tno42:05" in out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("metric",) and not cells[0].startswith("---"):
            rows[cells[0]] = cells[1:]
    assert list(rows) == [*METRICS, "compute_all", "compute_all, 1 thread"]
    for name, (t_kernels, t_numpy, speedup, diff) in rows.items():
        assert float(t_kernels) >= 0 and float(t_numpy) >= 0 and speedup.endswith("x"), name
        # Same values: exactly for the metrics without a kernel, to the kernels' rounding for PC and the FMIs.
        assert float(diff) <= (5e-5 if name in ("PC", "compute_all", "compute_all, 1 thread") else
                               1e-7 if name.startswith("FMI") else 0.0), name
    assert _native.enabled()  # the numpy run switched the kernels back on afterwards


def test_bench_metrics_unknown_pair_is_a_clear_error(data_root: Path) -> None:
    with pytest.raises(SystemExit, match="no pair 'nope'"):
        bench_metrics.main(["--pair", f"{data_root / 'tno42'}:nope"])
