"""Run fusion_node, entity_node and detection_node in ONE process with a multi-threaded executor.

The way to run the graph where ``ros2 launch`` is missing (CI, pip-only machines) and in tests:

    python -m egmt_ros.nodes.bringup [--params config/egmt.yaml] [--nodes fusion,entity,detection]
        [--ros-args -p fusion_node.model.method:=lp ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from egmt_ros.nodes.common import run_node
from egmt_ros.paths import REPO_ROOT

NODES = ("fusion", "entity", "detection")


def default_params_file() -> Path | None:
    """config/egmt.yaml of the checkout, else of the installed package share (None if neither exists)."""
    if REPO_ROOT is not None and (REPO_ROOT / "config/egmt.yaml").is_file():
        return REPO_ROOT / "config/egmt.yaml"
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory("egmt_ros")) / "config/egmt.yaml"
        return p if p.is_file() else None
    except Exception:  # noqa: BLE001 - package not on the ament index
        return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args: list[str] = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.nodes.bringup", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=None, help="parameter YAML (default: config/egmt.yaml)")
    ap.add_argument("--nodes", default=",".join(NODES), help="which nodes to start (default: all three)")
    args = ap.parse_args(argv)
    params = args.params or default_params_file()
    if params is not None and not params.is_file():
        print(f"bringup: parameter file not found: {params}", file=sys.stderr)
        return 2
    wanted = [n.strip() for n in args.nodes.split(",") if n.strip()]
    unknown = set(wanted) - set(NODES)
    if unknown:
        print(f"bringup: unknown node(s) {sorted(unknown)}; choose from {', '.join(NODES)}", file=sys.stderr)
        return 2
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
