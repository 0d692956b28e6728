"""entity_node and fusion_node in separate processes: entities from detections on keyframes, latched; fusion goes
on (and says how old the entities are) when the entity node dies."""

from __future__ import annotations

import signal
import sys
import time

import numpy as np
import pytest

from egmt_ros.core.images import list_pairs, load_pair, to_uint8
from graph_client import GraphClient


@pytest.fixture
def client(ros_node):
    c = GraphClient(ros_node, qos="reliable")
    yield c
    c.close()


def _detections(stamp_msg, classes):
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    arr = Detection2DArray()
    arr.header.stamp = stamp_msg
    for i, (c, s) in enumerate(classes):
        d = Detection2D()
        d.bbox.center.position.x, d.bbox.center.position.y = 50.0 + 40 * i, 60.0
        d.bbox.size_x, d.bbox.size_y = 30.0, 80.0
        h = ObjectHypothesisWithPose()
        h.hypothesis.class_id, h.hypothesis.score = c, s
        d.results.append(h)
        arr.detections.append(d)
    return arr


def test_entities_from_detections_and_fusion_survives_entity_node(spawn, client, data_root) -> None:
    from vision_msgs.msg import Classification, Detection2DArray

    from egmt_ros.nodes.common import LATCHED_QOS, sec_to_stamp

    _, ir_p, vi_p = list_pairs(data_root / "msrs_train5")[2]
    ir, vi = load_pair(ir_p, vi_p)
    thermal, bgr = to_uint8(ir), np.ascontiguousarray(to_uint8(vi)[:, :, ::-1])
    common = ["--ros-args", "-p", "qos:=reliable", "-p", "diagnostics_period:=0.5"]
    spawn([sys.executable, "-m", "egmt_ros.nodes.fusion_node", *common, "-p", "model.method:=average",
           "-p", "command.use_text_encoder:=false", "-p", "entities.max_age:=1.5"])
    entity = spawn([sys.executable, "-m", "egmt_ros.nodes.entity_node", *common, "-p", "vocabulary:=street, tree",
                    "-p", "keyframe.min_interval:=0.3", "-p", "keyframe.max_interval:=0.5", "-p",
                    "keyframe.max_rate:=5.0"])
    client.collect("/egmt/entities", Classification, qos=LATCHED_QOS)
    det_pub = client.node.create_publisher(Detection2DArray, "/egmt/detections", 10)
    client.wait_for_subscribers()
    client.wait_until(lambda: det_pub.get_subscription_count() >= 2, 60, "fusion and entity nodes on detections")

    fused_stamps: list[float] = []

    def play(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = client.now()
            fused_stamps.append(round(t, 6))
            det_pub.publish(_detections(sec_to_stamp(t), [("person", 0.8), ("car", 0.5), ("dog", 0.1)]))
            client.publish_thermal(thermal, "mono8", t)
            client.publish_rgb(bgr, "bgr8", t)
            time.sleep(0.1)

    def with_detections():  # keyframes before the first detections arrived carry the vocabulary only
        return [m for m in client.messages("/egmt/entities") if any(r.class_id == "person" for r in m.results)]

    deadline = time.monotonic() + 40
    while not with_detections() and time.monotonic() < deadline:
        play(0.5)
    assert with_detections(), "entity_node published entities from the detections"
    msg = with_detections()[-1]
    labels = [r.class_id for r in msg.results]
    assert labels == ["person", "car", "street", "tree"]   # by score; 'dog' under min_score; vocabulary last
    assert round(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, 6) in fused_stamps  # a keyframe stamp

    client.wait_until(lambda: any(d[2]["entities"] == "person,car,street,tree" for d in client.diagnostics("fusion")),
                      20, "fusion_node to hold the entities")
    # kill the entity node mid-run: fusion goes on with the last entities and reports their age
    entity.send_signal(signal.SIGKILL)
    entity.wait(10)
    n_before = len(client.messages("/egmt/fused"))
    play(3.0)
    client.wait_until(lambda: len(client.messages("/egmt/fused")) > n_before + 3, 20, "fusion after entity node died")
    last = client.diagnostics("fusion")[-1]
    assert last[2]["entities"] == "person,car,street,tree"
    assert float(last[2]["entity_age_s"]) > 1.5
    assert "entities are" in last[1] and "old" in last[1]
