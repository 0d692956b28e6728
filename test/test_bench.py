"""The benchmark CLI and the report helpers, end to end on a tiny temporary dataset (real metrics, real Chromium)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from egmt_ros import report
from egmt_ros.cli import bench
from egmt_ros.core.color import split_luma
from egmt_ros.core.images import load_image, save_image, to_uint8
from egmt_ros.metrics.fusion import METRICS, PAPER_METRICS

SIZE = (64, 80)  # H, W
TILE = (80, 60)
STEMS_A = ("a01", "a02", "a03")
STEMS_B = ("b01", "b02")
# a shuffled subset (the FMI and PC metrics are the slow ones); the tables must reorder it: paper metrics first
CHOSEN = ("SD", "NCIE", "EN", "MI", "Qabf", "SSIM", "Nabf", "PSNR", "VIF")


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """IR: high-contrast 8x8 blocks (levels 20 / 235) with mild noise; VI: a colour gradient near mid grey."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    blocks = ((yy // 8 + xx // 8 + seed) % 2).astype(np.float32)
    ir = (20 + 215 * blocks + rng.normal(0, 4, (h, w))) / 255.0
    base = 0.45 + 0.1 * xx / w + 0.05 * np.sin(yy / 5.0)
    vi = np.stack([base + 0.04, base, base - 0.05], axis=2) + rng.normal(0, 0.03, (h, w, 3))
    return np.clip(ir, 0, 1).astype(np.float32), np.clip(vi, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Write two tiny datasets and three fused folders, run the CLI once; return paths and the exit code."""
    root = tmp_path_factory.mktemp("bench")
    ds_a, ds_b = root / "tinyA", root / "tinyB"
    ircopy, avgsaved, partial = root / "ircopy", root / "avgsaved", root / "partial"
    for i, stem in enumerate(STEMS_A):
        ir, vi = _pair(i)
        save_image(ds_a / "ir" / f"{stem}.png", ir)
        save_image(ds_a / "vi" / f"{stem}.png", vi)
        # what was really saved (8 bits), reloaded
        ir8, vi8 = load_image(ds_a / "ir" / f"{stem}.png"), load_image(ds_a / "vi" / f"{stem}.png")
        save_image(ircopy / f"{stem}.png", ir8)
        vi_y, _ = split_luma(vi8)
        avg8 = to_uint8(np.clip((ir8 + vi_y) / 2, 0, 1))
        save_image(avgsaved / f"{stem}.png", avg8)
        if i < 2:
            save_image(partial / f"{stem}.png", avg8)
    for i, stem in enumerate(STEMS_B):
        ir, vi = _pair(10 + i)
        save_image(ds_b / "ir" / f"{stem}.png", ir)
        save_image(ds_b / "vi" / f"{stem}.png", vi)
    (ds_a / "entities.json").write_text('{"a01": ["person", "car"]}')
    out = root / "out"
    rc = bench.main(["--data", str(ds_a), str(ds_b), "--methods", "average,max",
                     "--fused", f"ircopy={ircopy}", f"avgsaved={avgsaved}", f"partial={partial}",
                     "--metrics", ",".join(CHOSEN), "--sheet-tile", f"{TILE[0]}x{TILE[1]}", "--repeat", "2", "--quiet", "--out", str(out)])
    return {"rc": rc, "out": out}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _md_rows(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(header cells, {method: cells}) of the first Markdown table in a file."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    header, body = cells[0], [c for c in cells[2:]]
    return header, {row[0]: row for row in body}


def test_cli_succeeds_and_writes_outputs(bench_run: dict) -> None:
    out = bench_run["out"]
    assert bench_run["rc"] == 0
    for rel in ("results.md", "results.csv", "index.html", "tinyA/results.md", "tinyA/results.csv",
                "tinyA/per_pair.csv", "tinyA/contact_sheet.png", "tinyB/results.csv", "tinyB/contact_sheet.png"):
        assert (out / rel).is_file(), rel


def test_csv_rows_and_columns(bench_run: dict) -> None:
    rows = _read_csv(bench_run["out"] / "tinyA" / "results.csv")
    assert [r["method"] for r in rows] == ["average", "max", "ircopy", "avgsaved", "partial"]
    assert [int(r["n"]) for r in rows] == [3, 3, 3, 3, 2]
    assert [r["kind"] for r in rows] == ["run", "run", "fused", "fused", "fused"]
    order = [m for m in PAPER_METRICS if m in CHOSEN] + [m for m in METRICS if m in CHOSEN and m not in PAPER_METRICS]
    assert order[:2] == ["SSIM", "MI"] and order[-1] == "VIF"  # the rule, spelled out for this subset
    metric_cols = [c for c in rows[0] if c.endswith("_mean")]
    assert metric_cols == [f"{m}_mean" for m in order]
    assert all(f"{m}_std" in rows[0] for m in CHOSEN)
    header, _ = _md_rows(bench_run["out"] / "tinyA" / "results.md")
    assert [h.split(" ")[0] for h in header[2:2 + len(order)]] == order
    # timing only for methods that were run, at the dataset's frame size
    assert float(rows[0]["ms_per_frame"]) > 0 and rows[0]["time_frame"] == f"{SIZE[1]}x{SIZE[0]}"
    assert rows[2]["ms_per_frame"] == "" and rows[2]["params"] == ""
    assert rows[0]["params"] == "0"


def test_fused_folders_absent_from_other_dataset(bench_run: dict) -> None:
    out = bench_run["out"]
    assert [r["method"] for r in _read_csv(out / "tinyB" / "results.csv")] == ["average", "max"]
    md = (out / "tinyB" / "results.md").read_text()
    assert "Not in this table" in md and "ircopy" in md and "partial" in md
    assert "partial (2 of 3)" in (out / "tinyA" / "results.md").read_text()
    overall = {r["method"]: r for r in _read_csv(out / "results.csv") if r["dataset"] == "overall"}
    assert int(overall["average"]["n"]) == 5 and int(overall["ircopy"]["n"]) == 3


def test_saved_average_scores_like_run_average(bench_run: dict) -> None:
    """The run method is scored on its 8-bit rounding, exactly like a saved file of the same fusion."""
    rows = {r["method"]: r for r in _read_csv(bench_run["out"] / "tinyA" / "results.csv")}
    for m in CHOSEN:
        a, b = float(rows["average"][f"{m}_mean"]), float(rows["avgsaved"][f"{m}_mean"])
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), m


def test_best_marking_on_known_cell(bench_run: dict) -> None:
    """SD of the IR copy (blocks 20/235) is far above the average's and the max's (mid-grey visible): bold there."""
    header, rows = _md_rows(bench_run["out"] / "tinyA" / "results.md")
    col = next(i for i, h in enumerate(header) if h.split(" ")[0] == "SD")
    assert header[col].endswith("↑")
    assert rows["ircopy"][col].startswith("**")
    assert not any(rows[m][col].startswith("**") for m in ("average", "max", "avgsaved", "partial"))
    csv_rows = {r["method"]: r for r in _read_csv(bench_run["out"] / "tinyA" / "results.csv")}
    assert float(csv_rows["ircopy"]["SD_mean"]) > 1.5 * float(csv_rows["average"]["SD_mean"])
    assert "higher is better" in (bench_run["out"] / "tinyA" / "results.md").read_text()


def test_contact_sheet_size(bench_run: dict) -> None:
    img = cv2.imread(str(bench_run["out"] / "tinyA" / "contact_sheet.png"))
    n_cols = 2 + 5  # IR, VI, average, max, ircopy, avgsaved, partial
    assert img.shape == (report.SHEET_HEADER_H + 3 * (report.SHEET_LABEL_H + TILE[1]), n_cols * TILE[0], 3)
    img_b = cv2.imread(str(bench_run["out"] / "tinyB" / "contact_sheet.png"))
    assert img_b.shape[1] == 4 * TILE[0]  # IR, VI, average, max: absent folders have no column


def test_html_report_renders_in_chromium(bench_run: dict, tmp_path: Path) -> None:
    index = bench_run["out"] / "index.html"
    text = index.read_text()
    assert 'src="tinyA/contact_sheet.png"' in text and "<table>" in text and "<b class=\"best\">" in text
    assert report.html_problems(index) == []
    shot = report.screenshot_html(index, tmp_path / "shot.png", width=1000, height=1200)
    img = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (1200, 1000)
    assert img.std() > 20 and img.mean() < 250 and (img < 100).mean() > 0.01


def test_render_check_catches_broken_page(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    page = tmp_path / "bad.html"
    page.write_text(report.html_page("bad", '<img src="bad.png"><img src="gone.png"><script>nope();</script>'))
    problems = "\n".join(report.html_problems(page))
    assert "gone.png" in problems and "BROKEN_IMAGE bad.png" in problems and "Uncaught" in problems


def test_unknown_method_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for d in ("ir", "vi"):
        save_image(tmp_path / "ds" / d / "x.png", np.full((16, 16), 0.5, np.float32))
    rc = bench.main(["--data", str(tmp_path / "ds"), "--methods", "average,no_such_method", "--out",
                     str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no_such_method" in err and "known:" in err and "average" in err and "gff" in err


def test_bad_metric_and_bad_fused_spec(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for d in ("ir", "vi"):
        save_image(tmp_path / "ds" / d / "x.png", np.full((16, 16), 0.5, np.float32))
    base = ["--data", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), "--quiet"]
    assert bench.main(base + ["--methods", "average", "--metrics", "NOPE"]) == 2
    assert "NOPE" in capsys.readouterr().err
    assert bench.main(base + ["--fused", "no_equals_sign"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err


def test_table_helpers() -> None:
    assert report.best_rows([1.0, 3.0, float("nan"), 3.0], higher_is_better=True) == {1, 3}
    assert report.best_rows([None, 2.0, 1.0], higher_is_better=False) == {2}
    assert report.best_rows([None, "x"], higher_is_better=True) == set()
    cols = [report.Column("method", "method"), report.Column("q", "Q", higher_is_better=False, std_key="q_sd")]
    md = report.markdown_table([{"method": "a", "q": 0.5, "q_sd": 0.1}, {"method": "b", "q": 0.25, "q_sd": 0.0}], cols)
    assert "| b | **0.2500 ± 0** |" in md and "| a | 0.5000 ± 0.1000 |" in md
    assert "lower is better (↓): Q" in md
    assert report.fmt_number(166883) == "166,883" and report.fmt_number(None) == "-"


def test_entities_json_labels(tmp_path: Path) -> None:
    (tmp_path / "entities.json").write_text(
        '{"a01": ["person", "car"], "tinyB/b01": [{"label": "tree", "score": 0.9}], "b01": ["wrong"],'
        ' "a02": {"entities": ["road"]}}')
    ent = bench.load_entities(None, tmp_path)
    assert bench.sheet_title("tinyA", "a01", ent) == "a01: person, car"
    assert bench.sheet_title("tinyB", "b01", ent) == "b01: tree"
    assert bench.sheet_title("tinyA", "a02", ent) == "a02: road"
    assert bench.sheet_title("tinyA", "a03", ent) == "a03"
    assert bench.load_entities(None, tmp_path / "nowhere") == {}


def test_checkpoint_methods_are_run_and_scored_beside_registered_ones(tmp_path: Path) -> None:
    """``--methods NAME=CHECKPOINT`` runs an EGMT checkpoint (here a tiny random one) as its own row, in the main
    process and in the --jobs worker processes alike, with the same scores."""
    import torch

    from egmt_ros.model.checkpoint import save_checkpoint
    from egmt_ros.model.config import rt_config
    from egmt_ros.model.network import EGMT
    torch.manual_seed(0)
    model = EGMT(rt_config(channels=8, heads=2, window=4, scale=4, detail_channels=4, text_dim=16,
                           text_encoder="hash-16", num_classes=3))
    torch.nn.init.normal_(model.recon.out.weight, std=0.1)  # (zero-initialised: the output would ignore the net)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", model, {"training_data": "test"})
    for i, stem in enumerate(("p1", "p2")):
        ir, vi = _pair(i)
        save_image(tmp_path / "ds" / "ir" / f"{stem}.png", ir)
        save_image(tmp_path / "ds" / "vi" / f"{stem}.png", vi)
    rows = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        assert bench.main(["--data", str(tmp_path / "ds"), "--methods", f"average,tiny_egmt={ckpt}", "--metrics",
                           "SSIM,EN", "--jobs", jobs, "--repeat", "1", "--quiet", "--out", str(out)]) == 0
        rows[jobs] = {r["method"]: r for r in _read_csv(out / "ds" / "results.csv")}
        assert set(rows[jobs]) == {"average", "tiny_egmt"}
        assert rows[jobs]["tiny_egmt"]["params"] == str(sum(p.numel() for p in model.parameters()))
    assert rows["1"]["tiny_egmt"]["SSIM_mean"] == rows["2"]["tiny_egmt"]["SSIM_mean"]
    assert rows["1"]["tiny_egmt"]["SSIM_mean"] != rows["1"]["average"]["SSIM_mean"]
    rc = bench.main(["--data", str(tmp_path / "ds"), "--methods", f"gone={tmp_path / 'missing.pt'}", "--quiet",
                     "--out", str(tmp_path / "out3")])
    assert rc == 2
