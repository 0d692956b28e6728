"""Real middleware across processes: 640x512 images arrive intact, and the test harness cleans up after itself."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image

import ros_harness
from egmt_ros.core.codec import image_to_numpy
from helpers.publish_images import make_images
from ros_harness import (
    HELPERS_DIR,
    TEST_DIR,
    ProcessTracker,
    RosDomain,
    allocate_domain_id,
    python_cmd,
    wait_for_messages,
)

SEED = 20261115


def _sha(data: object) -> str:
    """SHA-256 of any buffer (``array.array`` message data, bytes, a contiguous numpy array)."""
    return hashlib.sha256(memoryview(data)).hexdigest()


def test_640x512_bgr8_and_mono16_arrive_byte_exact(ros_domain: RosDomain, spawn, ros_node) -> None:
    """A separate process publishes both images with the sensor-data QoS; the test process receives them intact."""
    publisher = spawn(python_cmd(HELPERS_DIR / "publish_images.py", "--seed", SEED, "--rate", 20, "--duration", 60))
    bgr, mono16 = make_images(SEED)
    assert bgr.shape == (512, 640, 3) and mono16.shape == (512, 640)
    assert len(np.unique(bgr)) == 256 and mono16.max() > 65000 and mono16.min() < 500  # full-range noise
    t0 = time.monotonic()
    got_bgr = wait_for_messages(ros_node, "/egmt_test/bgr8", Image, count=3, timeout=30.0)
    got_mono = wait_for_messages(ros_node, "/egmt_test/mono16", Image, count=3, timeout=15.0)
    elapsed = time.monotonic() - t0
    assert publisher.poll() is None, "publisher died early"
    for msg in got_bgr:
        assert (msg.width, msg.height, msg.encoding, msg.step) == (640, 512, "bgr8", 640 * 3)
        assert msg.header.frame_id == "test_bgr"
        assert len(msg.data) == 640 * 512 * 3
        assert _sha(msg.data) == _sha(bgr)
        assert np.array_equal(image_to_numpy(msg), bgr)
    for msg in got_mono:
        assert (msg.width, msg.height, msg.encoding, msg.step) == (640, 512, "mono16", 640 * 2)
        assert msg.header.frame_id == "test_thermal"
        assert _sha(msg.data) == _sha(mono16)
        assert np.array_equal(image_to_numpy(msg), mono16)
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in got_bgr]
    assert len(set(stamps)) == 3, "three distinct frames, not one repeated"
    assert elapsed < 45.0


# A separate process: once the test's subscription is matched, publish N 640x512 bgr8 frames (frame_id = sequence
# number) at RATE Hz with the sensor-data QoS (best effort), then stay a moment so the last frames can be read.
# It waits with rclpy.ok() so that the SIGTERM of the teardown ends it cleanly: a process that sleeps through it is
# SIGKILLed and leaves its 32 MiB shared-memory segment behind in /dev/shm.
_BGR_STREAM = r"""
import sys, time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
n, rate, topic = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rclpy.init()
node = rclpy.create_node("egmt_test_bgr_stream")
pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
deadline = time.monotonic() + 30.0
while pub.get_subscription_count() < 1 and rclpy.ok():
    if time.monotonic() > deadline:
        print("no subscriber matched", flush=True)
        sys.exit(3)
    time.sleep(0.01)
time.sleep(0.5)  # the subscriber matches this writer at about the same time; give it a moment
data = np.random.default_rng(7).integers(0, 256, 640 * 512 * 3, dtype=np.uint8).tobytes()
msg = Image(height=512, width=640, encoding="bgr8", step=640 * 3, data=data)
t = time.monotonic()
for i in range(n):
    if not rclpy.ok():
        break
    msg.header.frame_id = str(i)
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)
    t += 1.0 / rate
    time.sleep(max(0.0, t - time.monotonic()))
print(f"sent {n} frames", flush=True)
end = time.monotonic() + 3.0
while rclpy.ok() and time.monotonic() < end:
    time.sleep(0.05)
node.destroy_node()
rclpy.try_shutdown()
"""


def test_best_effort_640x512_bgr8_stream_arrives_in_another_process(
        ros_domain: RosDomain, process_tracker: ProcessTracker, spawn, ros_node) -> None:
    """The camera-driver case: 20 Hz best-effort bgr8 frames (983 KB) from another process. With Fast DDS's default
    512 KiB shared-memory segment (or FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, which rmw_fastrtps ignores under
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) only a few of 60 frames arrive; config/fastdds_large_images.xml makes
    them arrive. Frames are counted by the sequence number in frame_id."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data

    n, rate, topic = 60, 20.0, "/egmt_test/bgr8_stream"
    seen: set[int] = set()
    sizes: set[int] = set()

    def on_msg(msg: Image) -> None:
        seen.add(int(msg.header.frame_id))
        sizes.add(len(msg.data))

    sub = ros_node.create_subscription(Image, topic, on_msg, qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    try:
        publisher = spawn([sys.executable, "-c", _BGR_STREAM, str(n), str(rate), topic], name="bgr_stream")
        t0 = time.monotonic()
        deadline, sent_at = t0 + 30.0, None
        while time.monotonic() < deadline and len(seen) < n:
            executor.spin_once(timeout_sec=0.05)
            if sent_at is None and "sent" in process_tracker.output(publisher):
                sent_at = time.monotonic()
            if sent_at is not None and time.monotonic() - sent_at > 1.5:
                break  # the publisher is done and the last frames had time to arrive
            if publisher.poll() not in (None, 0):
                break
    finally:
        executor.remove_node(ros_node)
        executor.shutdown()
        ros_node.destroy_subscription(sub)
    assert sent_at is not None or len(seen) == n, (
        f"the publisher did not finish within 30 s\n{ros_harness.describe_processes()}")
    assert sizes <= {640 * 512 * 3}
    assert len(seen) >= 0.9 * n, (
        f"only {len(seen)}/{n} best-effort 640x512 bgr8 frames arrived in another process "
        f"(FASTDDS_DEFAULT_PROFILES_FILE={os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE')}, "
        f"FASTDDS_BUILTIN_TRANSPORTS={os.environ.get('FASTDDS_BUILTIN_TRANSPORTS')}); missing "
        f"{sorted(set(range(n)) - seen)[:20]}...\n{ros_harness.describe_processes()}")


def test_fastdds_profile_has_large_shm_segment_and_udp() -> None:
    """The shipped profile is the default participant profile, with a large shared-memory segment and UDPv4 (for
    discovery and other hosts) and no built-in transports; every transport it names is defined."""
    import xml.etree.ElementTree as ET

    ns = {"f": "http://www.eprosima.com"}
    root = ET.parse(ros_harness.FASTDDS_PROFILE).getroot()
    assert root.tag == "{http://www.eprosima.com}dds"
    descriptors = {d.findtext("f:transport_id", namespaces=ns): d
                   for d in root.iterfind("f:profiles/f:transport_descriptors/f:transport_descriptor", ns)}
    participants = [p for p in root.iterfind("f:profiles/f:participant", ns)
                    if p.get("is_default_profile") == "true"]
    assert len(participants) == 1
    rtps = participants[0].find("f:rtps", ns)
    assert rtps.findtext("f:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in rtps.iterfind("f:userTransports/f:transport_id", ns)]
    assert set(used) <= set(descriptors)
    types = {descriptors[t].findtext("f:type", namespaces=ns): descriptors[t] for t in used}
    assert set(types) == {"SHM", "UDPv4"}
    assert int(types["SHM"].findtext("f:segment_size", namespaces=ns)) >= 8 * 1024 * 1024  # >= 2 LLVIP bgr8 frames


def test_domains_are_isolated(ros_domain: RosDomain, process_tracker: ProcessTracker, spawn, ros_node) -> None:
    """A publisher on another leased domain is heard there and not on the test's own domain."""
    with allocate_domain_id() as other:
        assert other.domain_id != ros_domain.domain_id
        spawn(python_cmd(HELPERS_DIR / "publish_images.py", "--seed", 1, "--rate", 20, "--duration", 60,
                         "--prefix", "/egmt_iso"), env=ros_harness.ros_env(other.domain_id))
        with ros_harness.rclpy_context(other.domain_id) as ctx:
            import rclpy

            other_node = rclpy.create_node("egmt_test_other_domain", context=ctx)
            try:
                assert wait_for_messages(other_node, "/egmt_iso/mono16", Image, count=1, timeout=30.0)
            finally:
                other_node.destroy_node()
        with pytest.raises(TimeoutError):
            wait_for_messages(ros_node, "/egmt_iso/mono16", Image, count=1, timeout=1.5)
        assert ros_node.count_publishers("/egmt_iso/mono16") == 0
        process_tracker.kill_all()  # before the other domain id is given back


def test_ros_domain_sets_and_restores_environment() -> None:
    before = {k: os.environ.get(k) for k in ros_harness.ROS_ENV_KEYS}
    with ros_harness.ros_domain_scope() as dom:
        assert ros_harness.DOMAIN_MIN <= dom.domain_id <= ros_harness.DOMAIN_MAX
        assert os.environ["ROS_DOMAIN_ID"] == str(dom.domain_id) == dom.env["ROS_DOMAIN_ID"]
        assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
        assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(ros_harness.FASTDDS_PROFILE)
        assert ros_harness.FASTDDS_PROFILE.is_file()
        assert "FASTDDS_BUILTIN_TRANSPORTS" not in dom.env  # ignored while the profile is in use
        assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in dom.env
        assert sys.prefix in os.environ["AMENT_PREFIX_PATH"].split(os.pathsep)
        assert "ROS_LOCALHOST_ONLY" not in dom.env
    assert {k: os.environ.get(k) for k in ros_harness.ROS_ENV_KEYS} == before


def test_domain_ids_are_unique_across_leases_and_processes(tmp_path: Path) -> None:
    leases = [allocate_domain_id(start=50, lock_dir=tmp_path) for _ in range(3)]
    ids = [lease.domain_id for lease in leases]
    assert ids == [50, 51, 52]  # held ids are skipped, in order
    # Another process asking for the held id 50 gets the next free one (53), not 50.
    code = (f"import sys; sys.path.insert(0, {str(TEST_DIR)!r}); import ros_harness, pathlib; "
            f"print(ros_harness.allocate_domain_id(start=50, lock_dir=pathlib.Path({str(tmp_path)!r})).domain_id)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    assert int(other.stdout.strip()) == 53
    leases[0].release()
    assert allocate_domain_id(start=50, lock_dir=tmp_path).domain_id == 50  # released ids come back
    for lease in leases:
        lease.release()
    # Wrap-around at DOMAIN_MAX.
    with allocate_domain_id(start=ros_harness.DOMAIN_MAX, lock_dir=tmp_path) as a, \
            allocate_domain_id(start=ros_harness.DOMAIN_MAX, lock_dir=tmp_path) as b:
        assert (a.domain_id, b.domain_id) == (ros_harness.DOMAIN_MAX, ros_harness.DOMAIN_MIN)


def _is_dead(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_dead(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_is_dead(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _wait_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.02)
    raise TimeoutError(f"{path} not written within {timeout} s")


# A child that ignores SIGTERM and leaves a grandchild behind: only a process-group SIGKILL gets both.
_STUBBORN = "trap '' TERM; sleep 300 & echo $! > {pidfile}; while true; do sleep 1; done"


def test_tracker_kills_whole_process_group(tmp_path: Path) -> None:
    tracker = ProcessTracker(tmp_path)
    pidfile = tmp_path / "grandchild.pid"
    proc = tracker.spawn(["sh", "-c", _STUBBORN.format(pidfile=pidfile)], name="stubborn")
    grandchild = int(_wait_file(pidfile))
    assert not _is_dead(proc.pid) and not _is_dead(grandchild)
    t0 = time.monotonic()
    tracker.kill_all(grace=0.5)
    assert proc.returncode is not None
    assert _wait_dead([proc.pid, grandchild])
    assert time.monotonic() - t0 < 5.0
    tracker.kill_all()  # idempotent


def test_spawned_process_dies_when_the_test_process_is_killed(tmp_path: Path) -> None:
    """No teardown runs when the test process is SIGKILLed (a CI timeout): the kernel must kill the child."""
    code = (f"import sys, time; sys.path.insert(0, {str(TEST_DIR)!r}); import ros_harness; "
            f"p = ros_harness.ProcessTracker({str(tmp_path)!r}).spawn(['sleep', '300']); "
            "print(p.pid, flush=True); time.sleep(300)")
    outer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(outer.stdout.readline())
        assert not _is_dead(child)
    finally:
        outer.kill()
        outer.wait()
        outer.stdout.close()
    assert _wait_dead([child], timeout=30.0), "the child outlived its killed parent"


def test_fixture_cleans_up_when_the_test_fails(tmp_path: Path) -> None:
    """Run an inner pytest session whose test spawns processes through the real fixtures and then fails; its
    processes must be dead, its domain id released and its environment restored afterwards."""
    inner = tmp_path / "inner"
    inner.mkdir()
    record = tmp_path / "record.txt"
    (inner / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TEST_DIR)!r})
        from ros_harness import process_tracker_fixture, ros_domain_fixture, spawn_fixture  # noqa: F401
    """))
    (inner / "test_inner.py").write_text(textwrap.dedent(f"""
        import os, time
        from pathlib import Path

        def test_a_fails(spawn, ros_domain):
            pidfile = Path({str(tmp_path / 'gc.pid')!r})
            proc = spawn(["sh", "-c", {_STUBBORN!r}.format(pidfile=pidfile)])
            sleeper = spawn(["sleep", "300"])
            while not pidfile.exists() or not pidfile.read_text().strip():
                time.sleep(0.02)
            Path({str(record)!r}).write_text(
                f"{{proc.pid}} {{sleeper.pid}} {{pidfile.read_text().strip()}} {{ros_domain.domain_id}}")
            assert False, "deliberate failure"

        def test_b_environment_restored():
            assert os.environ["ROS_DOMAIN_ID"] == "0"
            assert "FASTDDS_BUILTIN_TRANSPORTS" not in os.environ
    """))
    env = dict(os.environ, ROS_DOMAIN_ID="0", EGMT_TEST_KILL_GRACE="0.3")
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(inner)],
                         cwd=inner, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout, run.stdout
    assert "deliberate failure" in run.stdout
    leader, sleeper, grandchild, domain_id = map(int, record.read_text().split())
    assert _wait_dead([leader, sleeper, grandchild]), "a spawned process survived the failing test"
    # The inner session's lease is gone: the lock can be taken now.
    fd = os.open(ros_harness.LOCK_DIR / f"domain_{domain_id}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_timeout_message_names_topic_and_process_output(ros_domain: RosDomain, spawn, ros_node) -> None:
    spawn([sys.executable, "-c", "print('helper says hello', flush=True); import time; time.sleep(60)"],
          name="chatty")
    deadline = time.monotonic() + 20
    while "hello" not in ros_harness.describe_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(TimeoutError) as exc:
        wait_for_messages(ros_node, "/egmt_test/nothing_here", Image, count=1, timeout=0.3)
    text = str(exc.value)
    assert "0/1 Image messages on /egmt_test/nothing_here" in text
    assert "chatty" in text and "helper says hello" in text
