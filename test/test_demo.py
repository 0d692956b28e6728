"""The demo (``make demo``'s CLI) end to end on the first frames of the default sample: bag -> whole graph (bringup,
egmt_rt) -> recorded outputs -> evaluation -> report.html, which headless Chromium must render with its images and
the summary table; the page opens with what was run and the headline comparison, and has a baseline row."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2

from egmt_ros import report

FRAMES = 45


def test_demo_produces_a_report_that_renders(ros_domain, data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = dict(os.environ, EGMT_DATA=str(data_root))  # ros_domain put this test's ROS_DOMAIN_ID in os.environ
    proc = subprocess.run([sys.executable, "-m", "egmt_ros.cli.demo", "--max-frames", str(FRAMES), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = out.resolve() / "report.html"
    assert f"report: {page}" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == FRAMES and 1 <= summary["frames_fused"] <= FRAMES
    assert summary["compared_frames"] >= 1 and summary["persons_per_frame_fused"] is not None
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("demo: ")][-1]
    assert f"{summary['frames_fused']} frames fused of {FRAMES} pairs" in line and "visible-only" in line

    text = page.read_text()
    assert "<h2>Summary</h2><table>" in text
    assert re.search(r"<td>fused frames</td><td>\s*" + str(summary["frames_fused"]) + r"\s*</td>", text), \
        "the summary table shows the fused frame count"
    images = re.findall(r'<img[^>]*\bsrc="([^"]+)"', text)
    assert {"contact_sheet.png", "latency_over_time.png"} <= set(images), images
    for name in images:
        img = cv2.imread(str(out / name))
        assert img is not None and img.std() > 5, f"{name} is an image with content"
    # what a reader sees first: what was run, the headline comparison, then the metrics with a baseline row
    shown = report.rendered_text(page)
    assert shown.index("What was run") < shown.index("Summary") < shown.index("Fusion metrics")
    assert "M2VD 0117_1620 (default sample)" in shown and "egmt_rt" in shown and "playback rate 1x" in shown
    assert re.search(r"hardware .*\d+ logical cores", shown)
    head = re.search(r"Fused vs visible only: (\d+\.\d\d) vs (\d+\.\d\d) persons per frame, on (\d+) frames", shown)
    assert head and shown.index(head.group(0)) < shown.index("What was run"), "the headline opens the page"
    assert float(head.group(1)) == round(summary["persons_per_frame_fused"], 2) and int(head.group(3)) == \
        summary["compared_frames"]
    assert re.search(r"EN entropy of the fused grey levels \(information content\) bits 0\.\.8 higher "
                     r"\d+\.\d{4} \d+\.\d{4}", shown), "metric row with legend, fused and pixel-average values"
    assert "pixel average (mean)" in shown and "fusion rate (throughput)" in shown and "dropped" not in shown
    assert report.html_problems(page) == []  # every <img> decoded in Chromium, no script or load errors
    shot = report.screenshot_html(page, tmp_path / "report.png", width=1200, height=1400)
    grey = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert grey.shape == (1400, 1200) and grey.std() > 20 and (grey < 100).mean() > 0.01  # not blank


def test_demo_plays_a_bag_without_camera_info_once_the_graph_is_up(ros_domain, data_root: Path,
                                                                   tmp_path: Path) -> None:
    """A make_bag bag without camera_info (only the two camera topics, which the recorder subscribes at once) is
    played only when the nodes subscribe: it was played while the fusion node still loaded its model (0 fused)."""
    from rosbag_tools.make_bag import make_bag

    bag, out, frames = tmp_path / "bag", tmp_path / "demo", 20
    m2vd = data_root / "m2vd"
    make_bag(bag, ir_video=m2vd / "infrared" / "0117_1605.mp4", vi_video=m2vd / "visible" / "0117_1605.mp4",
             rate=22.0, thermal_encoding="mono16", jitter_ms=2.0, offset_ms=8.0, max_frames=frames, progress=False)
    env = dict(os.environ, EGMT_DATA=str(data_root))
    proc = subprocess.run([sys.executable, "-m", "egmt_ros.cli.demo", "--sample", str(bag), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == frames and summary["frames_fused"] >= 1, summary
    assert "playing anyway" not in (out / "play.log").read_text(), "the player waited for the nodes"


def test_the_report_names_the_method_a_parameter_selects() -> None:
    """``-p fusion_node:model.method:=egmt`` overrides ``--method`` in the graph, so the report's title names it too
    (it said egmt_rt while the node fused with egmt)."""
    from egmt_ros.cli.demo import fusion_method

    assert fusion_method("egmt_rt", []) == "egmt_rt"
    assert fusion_method("egmt_rt", ["fusion_node:model.method:=egmt", "fusion_node:model.path:=m.pt"]) == "egmt"
    assert fusion_method("lp", ["model.method:=average", "fusion_node:model.method:=gff"]) == "gff"
    assert fusion_method("egmt_rt", ["detection_node:model.method:=x", "fusion_node:model.backend:=torch"]) == "egmt_rt"
