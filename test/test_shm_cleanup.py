"""A test run leaves no Fast DDS shared-memory files in /dev/shm: a ROS process killed with SIGKILL (as the process
tracker does with one that ignores SIGTERM) leaves its 32 MiB segment and its ports behind, and test/conftest.py
removes them at the end of the pytest session (ros_harness.clean_fastdds_shm)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ros_harness

# A ROS process that prints the /dev/shm files it holds (open lock files and mapped segments), then sleeps.
_HOLDER = r"""
import json, os, time
import rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("egmt_test_shm_holder")
pub = node.create_publisher(String, "/egmt_test_shm", 10)
held = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith("/dev/shm/fastdds_"):
        held.add(target[len("/dev/shm/"):])
held |= {line.split("/dev/shm/")[1].strip() for line in open("/proc/self/maps") if "/dev/shm/fastdds_" in line}
print(json.dumps(sorted(held)), flush=True)
time.sleep(300)
"""

# The inner pytest session: one test that starts the holder, notes its files and SIGKILLs it.
_INNER_TEST = r"""
import json, os, subprocess, sys
from pathlib import Path

def test_kill_a_ros_process(ros_domain):
    proc = subprocess.Popen([sys.executable, "-c", os.environ["EGMT_SHM_HOLDER"]], env=ros_domain.env,
                            stdout=subprocess.PIPE, text=True)
    held = json.loads(proc.stdout.readline())
    proc.kill()
    proc.wait()
    Path(os.environ["EGMT_SHM_LIST"]).write_text(json.dumps(held))
    assert [n for n in held if not (Path("/dev/shm") / n).exists()] == [], "SIGKILL leaves the files behind"
"""


def test_session_end_removes_segments_of_killed_processes(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(_INNER_TEST)
    listing = tmp_path / "held.json"
    env = dict(os.environ, EGMT_SHM_HOLDER=_HOLDER, EGMT_SHM_LIST=str(listing),
               PYTHONPATH=os.pathsep.join([str(ros_harness.TEST_DIR), os.environ.get("PYTHONPATH", "")]))
    # -p conftest: the project's test/conftest.py (fixtures and the session-end clean-up) as a plugin
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "test_inner.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    held = json.loads(listing.read_text())
    segments = [n for n in held if not n.startswith("fastdds_port")]
    assert segments, f"the holder had a shared-memory segment: {held}"
    left = [n for n in held if (ros_harness.SHM_DIR / n).exists()]
    # a port (unlike a segment) is shared: one that another live process on the machine uses stays, rightly
    assert [n for n in left if not n.startswith("fastdds_port") or in_use(n.removesuffix("_el").removesuffix("_sl"))
            is False] == []


def in_use(base: str) -> bool:
    """Whether a live process holds a lock on the Fast DDS segment or port ``base``."""
    locks = [ros_harness.SHM_DIR / f"{base}{s}" for s in ("_el", "_sl")]
    return not all(ros_harness._lock_is_free(p) for p in locks if p.exists())


def test_files_in_use_are_kept(ros_node) -> None:
    """The clean-up never removes a live process's files: this test process's node holds a segment and ports."""
    held = {os.readlink(f"/proc/self/fd/{fd}").removeprefix("/dev/shm/") for fd in os.listdir("/proc/self/fd")
            if os.path.realpath(f"/proc/self/fd/{fd}").startswith("/dev/shm/fastdds_")}
    assert held, "this process's node holds Fast DDS lock files in /dev/shm"
    others = ros_harness.shm_files() - held  # only this process's files are candidates
    assert ros_harness.clean_fastdds_shm(others) == []
    assert all((ros_harness.SHM_DIR / n).exists() for n in held)
