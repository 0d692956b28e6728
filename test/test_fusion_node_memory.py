"""A 60 s run with the cameras at twice the rate the node can fuse: the node's peak RSS stays within 10 % of its peak
during warm-up (bounded queues, newest pair wins, no leak per frame).

The node's RSS is not one number in steady state: each fused 640x480 pair allocates ~32 MB of temporaries (gff in
float32; tracemalloc of one ``FusionEngine.fuse_pair``) and frees them, and glibc hands that memory back to the
kernel or keeps it depending on the moment, so RSS read at one instant swings by ~13 % (RssAnon only; RssFile and
RssShmem stay constant). One sample as the baseline could land in a trough (in CI: 215 MB, then every 10 s sample
231-243 MB, flat). So RSS is read at every published pair and each stretch of time is summarised by its peak: the
warm-up's peak is the baseline. A node that keeps each fused pair grows by ~1 GB in the 60 s and fails at once.
"""

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

        def run(seconds: float, hz: float) -> int:
            """Publish pairs at ``hz`` for ``seconds``; the peak RSS (KiB) of the node meanwhile."""
            end, peak = time.monotonic() + seconds, 0
            while time.monotonic() < end:
                t = c.now()
                c.publish_thermal(thermal, "mono8", t)
                c.publish_rgb(bgr, "bgr8", t)
                peak = max(peak, rss_kib(node.pid))
                time.sleep(1.0 / hz)
            return peak

        first = run(4.0, 10.0)  # measure the node's fusion time first
        d = c.diagnostics("fusion")[-1][2]
        fuse_ms = max(float(d["total_ms_p50"]), 5.0)
        hz = min(30.0, 2.0 * 1000.0 / fuse_ms)  # cameras at 2x what the node can fuse (capped at 30 Hz)
        # warm-up, 20 s at the overload rate: its peak (and the first 4 s's) is the baseline; 20 s rather than 10
        # because glibc's heap settles in steps (its mmap threshold adapts to the sizes freed), seen up to +8 % late
        base = max(first, run(10.0, hz), run(10.0, hz))
        peaks = [run(10.0, hz) for _ in range(6)]
        d = c.diagnostics("fusion")[-1][2]
        assert int(d["pairs_dropped"]) > 0, f"the node was not overloaded ({hz:.1f} Hz, {fuse_ms:.0f} ms/frame)"
        assert max(peaks) <= 1.10 * base, f"RSS grew: peak {base} KiB in warm-up, then per 10 s {peaks}"
        assert int(d["frames_pending"]) <= 20
    finally:
        c.close()
