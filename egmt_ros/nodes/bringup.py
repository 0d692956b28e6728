"""Run fusion_node, entity_node and detection_node in ONE process with a multi-threaded executor.

The way to run the graph where ``ros2 launch`` is missing (CI, pip-only machines) and in tests; nothing needs to
be sourced (``make run`` does the same):

    .venv/bin/python -m egmt_ros.nodes.bringup [--params config/egmt.yaml] [--nodes fusion,entity,detection]
        [--ros-args -p fusion_node:model.method:=lp -p qos:=reliable ...]

Before ``rclpy.init`` it makes vision_msgs importable (the checkout's CI stand-in ``install_interfaces/`` when no
vision_msgs is installed) and gives Fast DDS the large-image profile (egmt_ros/nodes/environment.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from egmt_ros.nodes.common import run_node
from egmt_ros.nodes.environment import prepare_process
from egmt_ros.paths import package_file

NODES = ("fusion", "entity", "detection")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args: list[str] = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    ap = argparse.ArgumentParser(
        prog="python -m egmt_ros.nodes.bringup", description=__doc__.splitlines()[0],
        epilog="ROS arguments go after --ros-args: -p NAME:=VALUE sets a parameter of every node, "
               "-p NODE:NAME:=VALUE one node's (e.g. --ros-args -p fusion_node:model.method:=average "
               "-p qos:=reliable); -r FROM:=TO remaps a topic (e.g. -r /thermal/image_raw:=/flir/image_raw). "
               "Parameters and defaults: config/egmt.yaml.")
    ap.add_argument("--params", type=Path, default=None, help="parameter YAML (default: config/egmt.yaml)")
    ap.add_argument("--nodes", default=",".join(NODES), help="which nodes to start (default: all three)")
    args = ap.parse_args(argv)
    params = args.params or package_file("config/egmt.yaml")
    if params is not None and not params.is_file():
        print(f"bringup: parameter file not found: {params}", file=sys.stderr)
        return 2
    wanted = [n.strip() for n in args.nodes.split(",") if n.strip()]
    unknown = set(wanted) - set(NODES)
    if unknown:
        print(f"bringup: unknown node(s) {sorted(unknown)}; choose from {', '.join(NODES)}", file=sys.stderr)
        return 2
    prepare_process()
    cli = ["--ros-args"] + (["--params-file", str(params)] if params else []) + ros_args[1:]
    factories = []
    if "fusion" in wanted:
        from egmt_ros.nodes.fusion_node import FusionNode
        factories.append(FusionNode)
    if "entity" in wanted:
        from egmt_ros.nodes.entity_node import EntityNode
        factories.append(EntityNode)
    if "detection" in wanted:
        from egmt_ros.nodes.detection_node import DetectionNode
        factories.append(DetectionNode)
    run_node(*factories, args=["bringup"] + cli)
    return 0


if __name__ == "__main__":
    sys.exit(main())
