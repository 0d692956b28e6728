"""A 60 s run with the cameras at twice the rate the node can fuse: the node's RSS stays within 10 % of its value
after warm-up (bounded queues, newest pair wins, no leak per frame)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from egmt_ros.core.images import load_pair, to_uint8
from graph_client import GraphClient


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def test_rss_flat_over_60s_at_twice_the_fusion_rate(spawn, ros_node, data_root) -> None:
    ir, vi = load_pair(data_root / "msrs_train5/ir/00556D.png", data_root / "msrs_train5/vi/00556D.png")
    thermal, bgr = to_uint8(ir), np.ascontiguousarray(to_uint8(vi)[:, :, ::-1])
    node = spawn([sys.executable, "-m", "egmt_ros.nodes.fusion_node", "--ros-args", "-p", "model.method:=gff",
                  "-p", "command.use_text_encoder:=false", "-p", "diagnostics_period:=1.0"])
    c = GraphClient(ros_node)
    try:
        c.wait_for_subscribers()

        def run(seconds: float, hz: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = c.now()
                c.publish_thermal(thermal, "mono8", t)
                c.publish_rgb(bgr, "bgr8", t)
                time.sleep(1.0 / hz)

        run(4.0, 10.0)  # measure the node's fusion time first
        d = c.diagnostics("fusion")[-1][2]
        fuse_ms = max(float(d["total_ms_p50"]), 5.0)
        hz = min(30.0, 2.0 * 1000.0 / fuse_ms)  # cameras at 2x what the node can fuse (capped at 30 Hz)
        run(10.0, hz)  # warm-up
        base = rss_kib(node.pid)
        samples = []
        for _ in range(6):
            run(10.0, hz)
            samples.append(rss_kib(node.pid))
        d = c.diagnostics("fusion")[-1][2]
        assert int(d["pairs_dropped"]) > 0, f"the node was not overloaded ({hz:.1f} Hz, {fuse_ms:.0f} ms/frame)"
        assert max(samples) <= 1.10 * base, f"RSS grew: {base} KiB after warm-up, then {samples}"
        assert int(d["frames_pending"]) <= 20
    finally:
        c.close()
