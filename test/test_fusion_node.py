"""fusion_node in its own process, real middleware: pairing, output equality, rates, bad input, text commands."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from sensor_msgs.msg import Image

from egmt_ros.core.codec import image_to_numpy
from egmt_ros.core.images import list_pairs, load_pair, to_uint8
from egmt_ros.fusion.engine import fuse_images
from egmt_ros.fusion.methods import get_method
from egmt_ros.fusion.terf import box_mask
from graph_client import GraphClient

METHOD = "average"  # a deterministic, fast method: the node's behaviour, not the network, is under test here


def start_fusion_node(spawn, *params: str, qos: str = "reliable"):
    """The node with the test's QoS: ``reliable`` where every frame must count (best effort may drop large
    images on a loaded machine; that is what the sensor-data test below tolerates)."""
    args = [sys.executable, "-m", "egmt_ros.nodes.fusion_node", "--ros-args", "-p", f"model.method:={METHOD}",
            "-p", "diagnostics_period:=0.5", "-p", "command.use_text_encoder:=false", "-p", f"qos:={qos}", "-p", "qos_depth:=50",
            "-p", "sync.queue_size:=60"]
    for p in params:
        args += ["-p", p]
    return spawn(args)


@pytest.fixture
def pair(data_root):
    _, ir_p, vi_p = list_pairs(data_root / "roadscene")[3]
    ir, vi = load_pair(ir_p, vi_p)
    return to_uint8(ir), np.ascontiguousarray(to_uint8(vi)[:, :, ::-1])  # mono8 thermal, bgr8 rgb


def expected_fused(thermal: np.ndarray, bgr: np.ndarray) -> np.ndarray:
    fused = fuse_images(get_method(METHOD), thermal / np.float32(255.0), bgr[:, :, ::-1] / np.float32(255.0))
    return to_uint8(fused)[:, :, ::-1]


def settle(client: GraphClient, n_thermal: int, n_rgb: int, timeout: float = 30.0) -> dict[str, str]:
    """Wait until the node has received every frame (reliable QoS) and the test every fused image it published;
    returns the node's last diagnostic values."""
    def done() -> bool:
        d = client.diagnostics("fusion")
        return bool(d) and int(d[-1][2]["frames_in_thermal"]) == n_thermal and \
            int(d[-1][2]["frames_in_rgb"]) == n_rgb and len(client.messages("/egmt/fused")) == int(d[-1][2]["pairs_fused"])

    try:
        client.wait_until(done, timeout, f"{n_thermal} thermal + {n_rgb} RGB frames processed")
    except TimeoutError:
        raise AssertionError(f"{len(client.messages('/egmt/fused'))} fused; {client.diagnostics('fusion')[-1:]}")
    return client.diagnostics("fusion")[-1][2]


@pytest.fixture
def client(ros_node):
    c = GraphClient(ros_node, qos="reliable")
    yield c
    c.close()


def test_default_sensor_data_qos_fuses(spawn, ros_node, pair) -> None:
    thermal, bgr = pair
    start_fusion_node(spawn, qos="sensor_data")
    c = GraphClient(ros_node, qos="sensor_data")
    try:
        c.wait_for_subscribers()
        t0, i = c.now(), 0
        while len(c.messages("/egmt/fused")) < 3 and i < 300:  # best effort: keep the camera running until 3 arrive
            c.publish_thermal(thermal, "mono8", t0 + i / 15)
            c.publish_rgb(bgr, "bgr8", t0 + i / 15)
            time.sleep(1 / 15)
            i += 1
        c.wait_until(lambda: len(c.messages("/egmt/fused")) >= 3, 5, "fused images with best-effort QoS")
        assert np.array_equal(image_to_numpy(c.messages("/egmt/fused")[0]), expected_fused(thermal, bgr))
    finally:
        c.close()


def test_pairs_at_30hz_with_jitter_keep_stamps_and_equal_the_cli_path(spawn, client, pair) -> None:
    thermal, bgr = pair
    start_fusion_node(spawn)
    client.wait_for_subscribers()
    rng = np.random.default_rng(0)
    t0 = int(client.now()) * 1_000_000_000 + 999_999_999  # integer ns; the first nanosec field is 999999999
    rgb_stamps = []
    for i in range(45):
        s = t0 + i * 33_333_333 + int(rng.integers(0, 1000))  # odd nanoseconds that float seconds would round
        rgb_stamps.append((s // 1_000_000_000, s % 1_000_000_000))
        client.publish_thermal(thermal, "mono8", s + int(np.clip(rng.normal(0, 0.005), -0.012, 0.012) * 1e9))
        client.publish_rgb(bgr, "bgr8", s)
        time.sleep(1 / 30.0)
    settle(client, 45, 45)
    d = client.diagnostics("fusion")[-1][2]
    # every pair was matched; each was fused or, newest pair wins when fusion is slower than 30 Hz, dropped
    assert int(d["pairs_matched"]) == 45 and int(d["frames_unmatched"]) == 0, str(d)
    assert int(d["pairs_fused"]) + int(d["pairs_dropped"]) == 45
    assert d["entity_age_s"].startswith("no entities yet")  # no entity node: fusion runs with an empty entity set
    fused = client.messages("/egmt/fused")
    assert len(fused) >= 3
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in fused]
    assert set(stamps) <= set(rgb_stamps), "fused stamps are exactly the RGB stamps (integer ns end to end)"
    assert len(set(stamps)) == len(stamps), "one fused image per pair"
    want = expected_fused(thermal, bgr)
    for m in fused[:3]:
        assert (m.encoding, m.header.frame_id) == ("bgr8", "rgb_camera")
        assert np.array_equal(image_to_numpy(m), want)


def test_shipped_model_with_backend_and_threads_equals_the_cli_path(spawn, client, pair) -> None:
    """The default method (egmt_rt, the shipped weights) in the node, on ONNX Runtime with 1 intra-op thread:
    the parameters reach the backend (diagnostics) and the output is the CLI path's (torch eager) within 8-bit
    rounding of the two engines' float differences."""
    thermal, bgr = pair
    start_fusion_node(spawn, "model.method:=egmt_rt", "model.backend:=onnxruntime", "model.threads:=1")
    client.wait_for_subscribers(timeout=120)
    t = client.now()
    client.publish_thermal(thermal, "mono8", t)
    client.publish_rgb(bgr, "bgr8", t)
    client.wait_until(lambda: client.messages("/egmt/fused") and client.diagnostics("fusion"), 120, "a fused image")
    d = client.diagnostics("fusion")[-1][2]
    assert (d["method"], d["backend"], d["backend_threads"]) == ("egmt_rt", "onnxruntime", "1"), str(d)
    got = image_to_numpy(client.messages("/egmt/fused")[0]).astype(int)
    fused = fuse_images(get_method("egmt_rt"), thermal / np.float32(255.0), bgr[:, :, ::-1] / np.float32(255.0))
    want = to_uint8(fused)[:, :, ::-1].astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


def test_thermal_30hz_rgb_15hz_counts_unmatched(spawn, client, pair) -> None:
    thermal, bgr = pair
    start_fusion_node(spawn, "sync.slop:=0.01")
    client.wait_for_subscribers()
    t0 = client.now()
    n_rgb = 0
    rgb_stamps = set()
    for i in range(60):
        s = t0 + i / 30.0
        client.publish_thermal(thermal, "mono8", s)
        if i % 2 == 0:
            client.publish_rgb(bgr, "bgr8", s + 0.002)
            rgb_stamps.add(round(s + 0.002, 6))
            n_rgb += 1
        time.sleep(1 / 30.0)
    diag = settle(client, 60, n_rgb)
    fused = client.messages("/egmt/fused")
    got = [round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, 6) for m in fused]
    assert set(got) <= rgb_stamps and len(got) == len(set(got))
    assert int(diag["pairs_matched"]) == n_rgb, str(diag)        # one pair per RGB frame
    assert int(diag["pairs_fused"]) + int(diag["pairs_dropped"]) == n_rgb
    assert int(diag["frames_unmatched"]) >= 28                    # the thermal frames without an RGB partner
    assert int(diag["frames_pending"]) <= 20                      # bounded: 2 x sync.queue_size


def _raw_image(width: int, height: int, encoding: str, data: bytes, stamp) -> Image:
    m = Image()
    m.header.stamp = stamp
    m.width, m.height, m.encoding = width, height, encoding
    m.step = width * (len(data) // max(1, width * height)) if width and height else 0
    m.data = data
    return m


def test_bad_input_is_reported_and_the_node_keeps_fusing(spawn, client, pair) -> None:
    thermal, bgr = pair
    proc = start_fusion_node(spawn)
    client.wait_for_subscribers()

    def send_bad() -> None:  # wrong encoding, zero size, size mismatch, NaN thermal, a stamp 10 s in the past
        now = client.now()
        client.rgb.publish(_raw_image(4, 2, "yuv422", bytes(16), client.node.get_clock().now().to_msg()))
        client.thermal.publish(_raw_image(0, 0, "mono8", b"", client.node.get_clock().now().to_msg()))
        client.publish_thermal(np.zeros((10, 12), np.uint8), "mono8", now + 0.1)
        client.publish_rgb(np.zeros((20, 24, 3), np.uint8), "bgr8", now + 0.1)
        time.sleep(0.2)
        client.publish_thermal(np.full((20, 24), np.nan, np.float32), "32FC1", now + 0.3)
        client.publish_rgb(np.zeros((20, 24, 3), np.uint8), "bgr8", now + 0.3)
        client.publish_thermal(thermal, "mono8", now - 10.0)

    expected = ("unsupported encoding 'yuv422'", "zero-size", "size mismatch", "no finite", "in the past")
    # Messages sent right after the subscription count turns 1 can still be lost while discovery finishes on the
    # node's side (it failed once in a full `make test`): send the bad inputs again until all are reported.
    for attempt in range(5):
        send_bad()
        try:
            client.wait_until(lambda: all(any(e in d[1] for d in client.diagnostics("fusion")) for e in expected),
                              4, f"diagnostics mentioning {expected}")
            break
        except TimeoutError:
            if attempt == 4:
                raise
    assert proc.poll() is None, "the node survived bad input"
    # and it still fuses good pairs
    t = client.now() + 1.0
    for i in range(10):
        client.publish_thermal(thermal, "mono8", t + i / 30)
        client.publish_rgb(bgr, "bgr8", t + i / 30)
        time.sleep(1 / 30)
    last = round(t + 9 / 30, 6)
    client.wait_until(lambda: any(round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, 6) == last
                                  for m in client.messages("/egmt/fused")), 20, "fused images after bad input")
    levels = {d[0] for d in client.diagnostics("fusion")}
    assert b"\x01" in levels or b"\x02" in levels


def test_text_commands_change_only_person_boxes_and_reset(spawn, client, pair) -> None:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    thermal, bgr = pair
    start_fusion_node(spawn, "effects.feather:=6.0", "effects.max_detection_age:=100.0")
    client.wait_for_subscribers()
    det_pub = client.node.create_publisher(Detection2DArray, "/egmt/detections", 10)
    client.wait_until(lambda: det_pub.get_subscription_count() > 0, 10, "detections subscription")
    box = (100.0, 60.0, 180.0, 220.0)
    dets = Detection2DArray()
    d = Detection2D()
    d.bbox.center.position.x, d.bbox.center.position.y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    d.bbox.size_x, d.bbox.size_y = box[2] - box[0], box[3] - box[1]
    h = ObjectHypothesisWithPose()
    h.hypothesis.class_id, h.hypothesis.score = "person", 0.9
    d.results.append(h)
    dets.detections.append(d)
    plain = expected_fused(thermal, bgr)

    def run(command: str | None) -> tuple[np.ndarray, str]:
        """Send a command (if any), then 2 frames; returns the 2nd fused frame after it and the feedback."""
        n_fb = len(client.messages("/egmt/command/feedback"))
        if command is not None:
            client.command.publish(__import__("std_msgs.msg", fromlist=["String"]).String(data=command))
            client.wait_until(lambda: len(client.messages("/egmt/command/feedback")) > n_fb, 10, "command feedback")
        fb = client.messages("/egmt/command/feedback")[-1].data if command else ""
        stamp = 0.0
        for _ in range(2):
            stamp = client.now()
            dets.header.stamp = client.node.get_clock().now().to_msg()
            det_pub.publish(dets)
            client.publish_thermal(thermal, "mono8", stamp)
            client.publish_rgb(bgr, "bgr8", stamp)
            time.sleep(0.1)

        def last_frame() -> Image | None:  # the newest pair is never dropped
            for m in reversed(client.messages("/egmt/fused")):
                if abs(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 - stamp) < 1e-6:
                    return m
            return None

        client.wait_until(lambda: last_frame() is not None, 20, "the fused image of the 2nd frame")
        return image_to_numpy(last_frame()), fb

    dets.header.stamp = client.node.get_clock().now().to_msg()
    det_pub.publish(dets)
    client.wait_until(lambda: any(int(d[2]["detections_received"]) > 0 for d in client.diagnostics("fusion")), 20,
                      "the node to receive the detections")
    out, _ = run(None)
    assert np.array_equal(out, plain)
    out, fb = run("more infrared on the people")
    assert fb.startswith("applied") and "person" in fb
    mask = box_mask(plain.shape[:2], [box], 6.0)
    assert np.array_equal(out[mask == 0], plain[mask == 0]), "nothing changes outside the feathered person box"
    assert np.abs(out[mask == 1].astype(int) - plain[mask == 1]).mean() > 1.0, \
        f"the person region changed: {fb}; {client.diagnostics('fusion')[-1:]}"
    out, fb = run("sing me a song")
    assert fb.startswith("not applied")
    assert np.abs(out[mask == 1].astype(int) - plain[mask == 1]).mean() > 1.0, "unparseable changed nothing"
    out, fb = run("reset")
    assert fb.startswith("applied") and np.array_equal(out, plain)


def test_command_parameter_through_the_parameter_client(spawn, client, pair) -> None:
    """``ros2 param set /fusion_node command "..."`` from another process (rclpy's parameter client): an understood
    command is accepted, answered on the feedback topic (rclpy drops the reason of a successful set) and changes the
    fused image; one the parser does not understand is refused with the parser's reason and changes nothing."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    thermal, bgr = pair
    start_fusion_node(spawn)
    client.wait_for_subscribers()
    params = AsyncParameterClient(client.node, "fusion_node")
    assert params.wait_for_services(timeout_sec=30)

    def set_command(text: str):
        future = params.set_parameters([Parameter("command", value=text)])
        client.wait_until(future.done, 20, f"the answer to command {text!r}")
        return future.result().results[0]

    def fused_now() -> np.ndarray:
        stamp = client.node.get_clock().now().nanoseconds
        client.publish_thermal(thermal, "mono8", stamp)
        client.publish_rgb(bgr, "bgr8", stamp)

        def frame() -> Image | None:
            return next((m for m in client.messages("/egmt/fused")
                         if m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamp), None)

        client.wait_until(lambda: frame() is not None, 20, "the fused image of the new pair")
        return image_to_numpy(frame())

    plain = expected_fused(thermal, bgr)
    assert np.array_equal(fused_now(), plain)
    assert set_command("brighten everything").successful
    client.wait_until(lambda: any(m.data.startswith("applied") and "brighten x1 on everything" in m.data
                                  for m in client.messages("/egmt/command/feedback")), 10,
                      "the feedback of the parameter's command")
    brighter = fused_now()
    assert brighter.mean() > plain.mean() + 2.0, (brighter.mean(), plain.mean())
    result = set_command("sing me a song")
    assert not result.successful and result.reason.startswith("not applied") and "no known task" in result.reason
    assert np.array_equal(fused_now(), brighter), "a refused command changes nothing"
    result = set_command("reset")
    assert result.successful and np.array_equal(fused_now(), plain)
