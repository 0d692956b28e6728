"""The whole graph (bringup: fusion + entity + detection nodes in one process) against real images, from another
process: fused images with the pair stamps, detections for them (people in MSRS 00633D), entities, diagnostics."""

from __future__ import annotations

import sys
import time

import numpy as np
from sensor_msgs.msg import Image

from egmt_ros.core.images import load_pair, to_uint8
from graph_client import GraphClient


def test_bringup_fuses_detects_and_finds_entities(spawn, ros_node, data_root) -> None:
    from vision_msgs.msg import Classification, Detection2DArray

    from egmt_ros.nodes.common import LATCHED_QOS

    ir, vi = load_pair(data_root / "msrs_train5/ir/00633D.png", data_root / "msrs_train5/vi/00633D.png")
    thermal, bgr = to_uint8(ir), np.ascontiguousarray(to_uint8(vi)[:, :, ::-1])
    spawn([sys.executable, "-m", "egmt_ros.nodes.bringup", "--ros-args", "-p", "qos:=reliable",
           "-p", "fusion_node:model.method:=average", "-p", "fusion_node:command.use_text_encoder:=false",
           "-p", "diagnostics_period:=0.5", "-p", "keyframe.min_interval:=0.2", "-p", "keyframe.max_interval:=0.5",
           "-p", "keyframe.max_rate:=5.0"])
    c = GraphClient(ros_node, qos="reliable")
    try:
        c.collect("/egmt/detections", Detection2DArray, qos=10)
        c.collect("/egmt/detections/image", Image)
        c.collect("/egmt/entities", Classification, qos=LATCHED_QOS)
        c.wait_for_subscribers(timeout=120)
        sent: list[float] = []
        deadline = time.monotonic() + 120
        def entity_labels() -> list[str]:
            ents = c.messages("/egmt/entities")
            return [r.class_id for r in ents[-1].results] if ents else []

        while time.monotonic() < deadline and not ("person" in entity_labels() and c.messages("/egmt/detections")):
            t = c.now()
            sent.append(round(t, 6))
            c.publish_thermal(thermal, "mono8", t)
            c.publish_rgb(bgr, "bgr8", t)
            time.sleep(0.25)
        dets = c.messages("/egmt/detections")
        assert dets, "detections arrived"
        fused_stamps = {round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, 6) for m in c.messages("/egmt/fused")}
        det_stamps = [round(d.header.stamp.sec + d.header.stamp.nanosec * 1e-9, 6) for d in dets]
        assert fused_stamps <= set(sent) and set(det_stamps) <= fused_stamps  # detections are for fused frames
        persons = [h for d in dets[-1].detections for h in d.results if h.hypothesis.class_id == "person"]
        assert len(persons) >= 2, "the two labelled people of 00633D"
        ann = c.messages("/egmt/detections/image")
        assert ann and (ann[-1].width, ann[-1].height) == (bgr.shape[1], bgr.shape[0])
        assert "person" in entity_labels()  # entities come from the detections on keyframes
        c.wait_until(lambda: {n for arr in c.messages("/diagnostics") for n in (s.name for s in arr.status)} >= {
            "fusion_node: fusion", "entity_node: entities", "detection_node: detection"}, 20, "diagnostics of all nodes")
    finally:
        c.close()
