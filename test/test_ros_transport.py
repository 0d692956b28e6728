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
from egmt_ros.nodes.image_conv import image_to_numpy
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
        assert os.environ["FASTDDS_BUILTIN_TRANSPORTS"] == "LARGE_DATA"
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
    assert _wait_dead([child]), "the child outlived its killed parent"


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
