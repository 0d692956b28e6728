"""rosbag_tools.play and rosbag_tools.record with real middleware in separate processes."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock

from rosbag_tools.make_bag import make_bag
from rosbag_tools.play import play_bag
import ros_harness
from ros_harness import RosDomain, describe_processes, wait_for_messages

START = 1_700_000_000.0


def write_pairs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    """A pair folder of ``n`` random (IR grey, VI BGR) images of ``size`` = (w, h)."""
    rng = np.random.default_rng(seed)
    (folder / "ir").mkdir(parents=True)
    (folder / "vi").mkdir()
    w, h = size
    for i in range(n):
        cv2.imwrite(str(folder / "ir" / f"{i:04d}.png"), rng.integers(0, 256, (h, w), dtype=np.uint8))
        cv2.imwrite(str(folder / "vi" / f"{i:04d}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def by_topic(bag: Path) -> dict[str, list[tuple[int, bytes]]]:
    """topic -> [(bag time, raw CDR)] in bag order."""
    out: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(bag) as r:
        for c, t, raw in r.messages():
            out.setdefault(c.topic, []).append((t, bytes(raw)))
    return out


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"process {proc.args} still running after {timeout} s\n{describe_processes()}") from None


def play_and_record(tmp_path: Path, spawn, bag: Path, rate: float) -> tuple[dict, dict, float]:
    """Record both camera topics in one process while another plays ``bag``; returns (source, recorded, play s)."""
    rec = tmp_path / "rec"
    recorder = spawn([sys.executable, "-m", "rosbag_tools.record", "--topics", "/thermal/image_raw",
                      "/rgb/image_raw", "--out", str(rec), "--no-progress"], name="record")
    t0 = time.monotonic()
    player = spawn([sys.executable, "-m", "rosbag_tools.play", str(bag), "--rate", str(rate), "--qos", "reliable",
                    "--wait-for-subscribers", "60", "--no-progress"], name="play")
    assert wait_exit(player, 120) == 0, describe_processes()
    played_s = time.monotonic() - t0
    time.sleep(0.5)
    recorder.send_signal(signal.SIGINT)
    assert wait_exit(recorder, 30) == 0, describe_processes()
    return by_topic(bag), by_topic(rec), played_s


def test_play_150_pairs_every_message_in_order(ros_domain: RosDomain, spawn, tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", 150, (64, 48))
    bag = tmp_path / "bag"
    make_bag(bag, pairs=tmp_path / "pairs", rate=30.0, start_time=START, progress=False)
    src, got, _ = play_and_record(tmp_path, spawn, bag, 1.0)
    for topic in ("/thermal/image_raw", "/rgb/image_raw"):
        assert len(got[topic]) == 150, describe_processes()
        assert [raw for _, raw in got[topic]] == [raw for _, raw in src[topic]]  # all, in order, byte for byte
        # played at 1x: the receive times span the bag's 149 frame periods (4.97 s)
        span = (got[topic][-1][0] - got[topic][0][0]) / 1e9
        assert 4.4 < span < 6.0, span
        gaps = np.diff([t for t, _ in got[topic]]) / 1e6
        assert 25.0 <= np.median(gaps) <= 42.0


def test_play_640x512_at_3x(ros_domain: RosDomain, spawn, ros_node, tmp_path: Path) -> None:
    """640x512 mono16 + bgr8 pairs at 90 Hz (3x): this test process subscribes (raw, nothing written to disk: a
    Python recorder cannot write 100+ MB/s here) and gets every message in order, published on the 3x schedule."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    n = 30
    write_pairs(tmp_path / "pairs", n, (640, 512))
    bag = tmp_path / "bag"
    make_bag(bag, pairs=tmp_path / "pairs", rate=30.0, thermal_encoding="mono16", start_time=START, progress=False)
    src = by_topic(bag)
    got: dict[str, list[tuple[int, str]]] = {"/thermal/image_raw": [], "/rgb/image_raw": []}

    def on_message(topic: str):
        def cb(raw: bytes, info) -> None:
            got[topic].append((int(info["source_timestamp"]), hashlib.sha1(raw).hexdigest()))
        return cb

    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    subs = [ros_node.create_subscription(Image, topic, on_message(topic), qos, raw=True) for topic in got]
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    try:
        player = spawn([sys.executable, "-m", "rosbag_tools.play", str(bag), "--rate", "3", "--qos", "reliable",
                        "--wait-for-subscribers", "60", "--ack-timeout", "30", "--no-progress"], name="play")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(len(v) < n for v in got.values()):
            executor.spin_once(timeout_sec=0.01)
            if player.poll() is not None:  # the player is done: take what is still queued, then stop
                deadline = min(deadline, time.monotonic() + 10.0)
        assert player.wait(timeout=60) == 0, describe_processes()
    finally:
        executor.remove_node(ros_node)
        executor.shutdown()
        for sub in subs:
            ros_node.destroy_subscription(sub)
    for topic, msgs in got.items():
        assert [h for _, h in msgs] == [hashlib.sha1(raw).hexdigest() for _, raw in src[topic]], describe_processes()
        span = (msgs[-1][0] - msgs[0][0]) / 1e9  # publisher-side stamps: the play schedule itself
        assert 0.25 < span < 0.8, span  # 29 periods of 1/30 s at 3x = 0.32 s


def test_play_waits_for_every_subscription_that_can_match(ros_domain: RosDomain, process_tracker, spawn, ros_node,
                                                          tmp_path: Path) -> None:
    """``--wait-for TOPIC:egmt_bag_recorder``: the recorder subscribes only once it sees the player's publishers, and
    the player then waits until it is matched with the recorder as well as with the subscriber that was there first
    (it played once any one was matched), and at the end lingers before it leaves (the recorder dropped the last
    best-effort frame, not yet taken, when the player left: 1 of 12 runs), so the recorder gets every message; a
    reliable subscription, which a best-effort player can never match, is not waited for (no 'playing anyway')."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    write_pairs(tmp_path / "pairs", 10, (32, 24))
    bag = tmp_path / "bag"
    make_bag(bag, pairs=tmp_path / "pairs", rate=30.0, start_time=START, progress=False)
    topics = ["/thermal/image_raw", "/rgb/image_raw"]
    for topic in topics:  # matched by DDS without spinning; nothing is read from them
        ros_node.create_subscription(Image, topic, lambda _m: None, qos_profile_sensor_data)
        ros_node.create_subscription(Image, topic, lambda _m: None,
                                     QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    rec = tmp_path / "rec"
    recorder = spawn([sys.executable, "-m", "rosbag_tools.record", "--topics", *topics, "--out", str(rec),
                      "--no-progress"], name="record")
    wait_for = [a for t in topics for a in ("--wait-for", f"{t}:egmt_bag_recorder")]
    player = spawn([sys.executable, "-m", "rosbag_tools.play", str(bag), "--qos", "sensor",
                    "--wait-for-subscribers", "60", *wait_for, "--no-progress"], name="play")
    assert wait_exit(player, 120) == 0, describe_processes()
    assert "playing anyway" not in process_tracker.output(player), describe_processes()
    time.sleep(0.5)
    recorder.send_signal(signal.SIGINT)
    assert wait_exit(recorder, 30) == 0, describe_processes()
    src, got = by_topic(bag), by_topic(rec)
    for topic in topics:
        assert [raw for _, raw in got[topic]] == [raw for _, raw in src[topic]], describe_processes()


def test_play_loop_clock_and_sigint(ros_domain: RosDomain, process_tracker, spawn, ros_node, tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", 20, (32, 24))
    bag = tmp_path / "bag"
    make_bag(bag, pairs=tmp_path / "pairs", rate=20.0, start_time=START, progress=False)
    player = spawn([sys.executable, "-m", "rosbag_tools.play", str(bag), "--loop", "--clock", "--rate", "2",
                    "--no-progress"], name="play")
    clocks = wait_for_messages(ros_node, "/clock", Clock, count=40, timeout=60.0)
    ns = [c.clock.sec * 1_000_000_000 + c.clock.nanosec for c in clocks]
    start_ns, end_ns = int(START * 1e9), int(START * 1e9) + round(19 * 1e9 / 20)
    assert all(start_ns <= t <= end_ns for t in ns)
    assert player.poll() is None  # looping: still playing after more than one pass of 0.5 s
    player.send_signal(signal.SIGINT)
    assert wait_exit(player, 20) == 0
    assert "interrupted: published" in process_tracker.output(player)


def test_play_clock_at_most_clock_hz(ros_domain: RosDomain, process_tracker, spawn, ros_node, tmp_path: Path) -> None:
    """/clock is throttled to --clock-hz (it went out before every message too: 40+ per second from a 20 Hz pair,
    each a callback in every use_sim_time node)."""
    write_pairs(tmp_path / "pairs", 20, (32, 24))
    bag = tmp_path / "bag"
    make_bag(bag, pairs=tmp_path / "pairs", rate=20.0, start_time=START, progress=False)
    player = spawn([sys.executable, "-m", "rosbag_tools.play", str(bag), "--loop", "--clock", "--clock-hz", "10",
                    "--no-progress"], name="play")
    arrived: list[float] = []
    wait_for_messages(ros_node, "/clock", Clock, count=12, timeout=60.0,
                      predicate=lambda _m: arrived.append(time.monotonic()) is None)
    player.send_signal(signal.SIGINT)
    assert wait_exit(player, 20) == 0
    span = arrived[11] - arrived[0]
    assert span >= 11 * 0.1 * 0.8, f"12 /clock messages in {span:.2f} s: more than 10 per second"


def test_play_bag_library_window_and_topics(ros_node, tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", 90, (32, 24))
    bag = tmp_path / "bag"
    make_bag(bag, pairs=tmp_path / "pairs", rate=30.0, start_time=START, storage="sqlite3", progress=False)
    res = play_bag(bag, rate=10.0, start=1.0, duration=1.0, topics=["/rgb/image_raw"], node=ros_node, progress=False)
    assert res.published == {"/rgb/image_raw": 30}  # stamps 1.0 <= t < 2.0 s at 30 Hz
    assert not res.interrupted and res.error is None and res.loops == 1
    assert 0.09 < res.wall_s < 3.0  # 29 periods at 10x = 0.097 s, plus set-up


def test_record_detections_from_vision_msgs(ros_domain: RosDomain, spawn, ros_node, tmp_path: Path) -> None:
    """The recorder stores vision_msgs/Detection2DArray as published (stand-in package from test/interfaces), and
    rosbag_tools' inline vision_msgs definitions decode it and carry the same type hash as the package."""
    from rosbag_tools.types import DETECTION2D_ARRAY, deserialize, typestore

    helper = Path(__file__).resolve().parent / "helpers" / "publish_detections.py"
    spawn([sys.executable, str(helper), "--topic", "/egmt/detections", "--rate", "20", "--duration", "60"],
          name="detections")
    ros_harness.wait_for_publishers(ros_node, "/egmt/detections", timeout=60.0)  # before the recording starts
    rec = tmp_path / "rec"
    # --duration counts from the recorder's start, discovery included (3.6 s of 4 on a loaded CI machine once)
    recorder = spawn([sys.executable, "-m", "rosbag_tools.record", "--topics", "/egmt/detections", "--out", str(rec),
                      "--duration", "10", "--no-progress"], name="record")
    assert wait_exit(recorder, 60) == 0, describe_processes()
    infos = ros_node.get_publishers_info_by_topic("/egmt/detections")
    assert infos and str(infos[0].topic_type_hash) == typestore().hash_rihs01(DETECTION2D_ARRAY)
    msgs = by_topic(rec)["/egmt/detections"]
    assert len(msgs) >= 10, describe_processes()
    recv = [t for t, _ in msgs]
    assert recv == sorted(recv) and abs(recv[-1] / 1e9 - time.time()) < 60  # receive times, system clock
    det = deserialize(msgs[0][1], DETECTION2D_ARRAY)
    assert det.header.frame_id == "rgb_camera_optical"
    assert (det.header.stamp.sec, det.header.stamp.nanosec) == (1700000000, 123456789)
    assert [d.id for d in det.detections] == ["track-7", "track-8"]
    assert [[r.hypothesis.class_id for r in d.results] for d in det.detections] == [["person0"], ["car0", "car1"]]
    second = det.detections[1]
    assert (second.bbox.center.position.x, second.bbox.size_y, second.bbox.center.theta) == (101.25, 82.0, 0.25)
    assert second.results[1].pose.covariance[35] == 0.04 and second.results[0].pose.pose.orientation.w == 0.5
