"""fusion_check: agreement with the pixel-max rule (hand-computed) and the contact sheet layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from egmt_ros.cli import fusion_check as fc


def test_max_rule_agreement_by_hand() -> None:
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 200, (20, 30)).astype(np.float32) / 255.0
    vi = rng.integers(0, 200, (20, 30)).astype(np.float32) / 255.0
    same = fc.max_rule_agreement(np.maximum(ir, vi), ir, vi)
    assert {k: same[k] for k in ("corr", "within3", "equal")} == {"corr": pytest.approx(1.0), "within3": 1.0,
                                                                   "equal": 1.0}
    assert same["corr_avg"] < 0.95                             # the max of two independent images is not their mean
    avg = fc.max_rule_agreement((ir + vi) / 2.0, ir, vi)       # 8-bit rounding of the mean: correlation ~1
    assert avg["corr_avg"] == pytest.approx(1.0, abs=1e-4) and avg["corr"] < 0.95
    one = fc.max_rule_agreement(ir, ir, vi)                    # independent sources: corr(IR, (IR + VI) / 2) = 1/sqrt(2)
    assert one["corr_avg"] == pytest.approx(2 ** -0.5, abs=0.05)
    shifted = np.maximum(ir, vi).copy()
    shifted[:10] += 2.0 / 255.0                                # half the rows 2 grey levels off
    got = fc.max_rule_agreement(shifted, ir, vi)
    assert got["within3"] == 1.0 and got["equal"] == pytest.approx(0.5)
    far = fc.max_rule_agreement(1.0 - np.maximum(ir, vi), ir, vi)
    assert far["corr"] == pytest.approx(-1.0) and far["equal"] < 0.05


def test_contact_sheet_rows_and_columns(data_root: Path, tmp_path: Path) -> None:
    rows = fc.parse_rows([f"{data_root / 'tno42'}:01,02"], [f"{data_root / 'm2vd'}:0111_1716:5"])
    assert [r[0] for r in rows] == ["tno42/01", "tno42/02", "0111_1716 f0005"]
    sheet = fc.contact_sheet(rows, fc.load_methods(["average", "lp"]), width=100)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 4 * 100 and sheet.shape[2] == 3
    assert fc.main(["sheet", "--methods", "average", "--pairs", f"{data_root / 'tno42'}:01",
                    "--out", str(tmp_path / "s.jpg"), "--tile", "80"]) == 0
    assert (tmp_path / "s.jpg").stat().st_size < 100_000
    with pytest.raises(SystemExit, match="no pair"):
        fc.parse_rows([f"{data_root / 'tno42'}:nope"], [])
