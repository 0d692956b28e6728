"""The launch file and the RViz config name what the graph publishes (``ros2 launch`` itself cannot run in CI:
launch/launch_ros are not installable here; see README "How the launch file was checked")."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_launch_declares_arguments_and_starts_three_nodes() -> None:
    tree = ast.parse((ROOT / "launch" / "fusion.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    declared = {c.args[0].value for c in calls if c.func.id == "DeclareLaunchArgument"}
    assert {"thermal_topic", "rgb_topic", "method", "model", "device", "use_sim_time", "bag", "params_file"} <= declared
    executables = {kw.value.value for c in calls if c.func.id == "Node" for kw in c.keywords if kw.arg == "executable"}
    assert {"fusion_node", "entity_node", "detection_node"} <= executables
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in (ROOT / "launch" / "fusion.launch.py").read_text()


def test_setup_installs_the_console_scripts_the_launch_file_starts() -> None:
    setup = (ROOT / "setup.py").read_text()
    for exe in ("fusion_node", "entity_node", "detection_node"):
        assert f"{exe} = egmt_ros.nodes.{exe}:main" in setup


def test_rviz_shows_fused_detections_and_inputs() -> None:
    cfg = yaml.safe_load((ROOT / "rviz" / "egmt.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in cfg["Visualization Manager"]["Displays"]}
    assert topics == {"/egmt/fused", "/egmt/detections/image", "/thermal/image_raw", "/rgb/image_raw"}
