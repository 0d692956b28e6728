"""paths.shown_path: what reports write instead of a machine's absolute paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from egmt_ros.paths import shown_path


def test_shown_path_uses_the_data_root_variable_then_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, work, other = tmp_path / "data", tmp_path / "work", tmp_path / "elsewhere" / "x.pt"
    (root / "tno42").mkdir(parents=True)
    work.mkdir()
    monkeypatch.setenv("EGMT_DATA", str(root))
    monkeypatch.chdir(work)
    assert shown_path(root / "tno42") == "$EGMT_DATA/tno42"
    assert shown_path(root) == "$EGMT_DATA"
    assert shown_path(work / "out" / "best.pt") == "out/best.pt"
    assert shown_path(other) == str(other)  # outside both: unchanged
