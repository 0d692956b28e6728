"""``.venv/bin/python -m egmt_ros.nodes.bringup`` and ``make run`` as the README gives them: from another folder, with nothing sourced
(no AMENT_PREFIX_PATH, LD_LIBRARY_PATH or Fast DDS variables), all three nodes start, and the large best-effort
images of a camera reach the fusion node (the Fast DDS profile is applied by bringup itself)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image

from graph_client import GraphClient
from ros_harness import REPO_ROOT, RosDomain, _package_parent


def bare_env(domain: RosDomain) -> dict[str, str]:
    """What a new user's shell has: HOME, PATH without the venv, the ROS domain of the test (to keep tests apart),
    and PYTHONPATH only for the checkout under test (a fresh clone's editable install points there anyway)."""
    return {"HOME": os.environ.get("HOME", tempfile.gettempdir()), "PATH": "/usr/bin:/bin", "ROS_DOMAIN_ID": str(domain.domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONPATH": str(_package_parent()),
            "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "EGMT_DATA": os.environ.get("EGMT_DATA", "")}


PARAMS = ("fusion_node:model.method:=average", "fusion_node:command.use_text_encoder:=false")
COMMANDS = {
    "bringup": [sys.executable, "-m", "egmt_ros.nodes.bringup", "--ros-args", *(a for p in PARAMS for a in ("-p", p))],
    "make run": ["make", "--no-print-directory", "-s", "-C", str(REPO_ROOT), "run", "PARAMS=" + " ".join(PARAMS)],
}


@pytest.mark.parametrize("how", COMMANDS)
def test_bringup_starts_all_three_nodes_without_sourcing(how: str, ros_domain, spawn, ros_node,
                                                         tmp_path: Path) -> None:
    spawn(COMMANDS[how], env=bare_env(ros_domain), cwd=tmp_path)
    c = GraphClient(ros_node)  # sensor_data QoS, as camera drivers and the nodes' default
    try:
        c.wait_for_subscribers(timeout=180)
        nodes = {"fusion_node", "entity_node", "detection_node"}
        outputs = ("/egmt/fused", "/egmt/detections", "/egmt/entities")
        c.wait_until(lambda: nodes <= set(ros_node.get_node_names()) and all(
            ros_node.count_publishers(t) >= 1 for t in outputs), 120, "the three nodes and their publishers")
        assert ros_node.count_subscribers("/egmt/fused") >= 2  # detection_node and entity_node
        rng = np.random.default_rng(3)
        thermal = rng.integers(0, 256, (512, 640), dtype=np.uint8)
        bgr = rng.integers(0, 256, (512, 640, 3), dtype=np.uint8)  # 983 KB: needs the large-image profile
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not c.messages("/egmt/fused"):
            t = c.now()
            c.publish_thermal(thermal, "mono8", t)
            c.publish_rgb(bgr, "bgr8", t)
            time.sleep(0.2)
        fused = c.messages("/egmt/fused")
        assert fused and (fused[-1].width, fused[-1].height, fused[-1].encoding) == (640, 512, "bgr8")
    finally:
        c.close()


def test_help_names_ros_args() -> None:
    out = subprocess.run([sys.executable, "-m", "egmt_ros.nodes.bringup", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "--ros-args" in out and "-p NODE:NAME:=VALUE" in out
