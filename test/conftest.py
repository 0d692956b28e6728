"""Shared pytest fixtures for egmt_ros."""

from __future__ import annotations

from pathlib import Path

import pytest

from egmt_ros.paths import data_root as _data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data root (``$EGMT_DATA`` or ``../shared/data``); the tests need it and fail clearly without it."""
    return _data_root(must_exist=True)


# ROS tests: real middleware in separate processes, one leased ROS domain per test (see test/ros_harness.py).
import ros_harness  # noqa: E402  (test/ is on sys.path: pytest puts a conftest's folder there)
from ros_harness import (  # noqa: E402,F401  (fixtures: ros_domain, process_tracker, spawn, ros_context, ros_node)
    process_tracker_fixture,
    ros_context_fixture,
    ros_domain_fixture,
    ros_node_fixture,
    spawn_fixture,
)

# vision_msgs stand-in built by scripts/build_test_interfaces.sh: importable here and in spawned processes.
ros_harness.use_test_interfaces()

# Fast DDS shared-memory files in /dev/shm: the ones this run's processes left behind (SIGKILLed at a test's teardown,
# or crashed) are removed at the end of the session; files that were there before or are still in use stay.
_shm_before: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note the Fast DDS files in /dev/shm before the first test."""
    _shm_before.update(ros_harness.shm_files())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the Fast DDS segments and ports of this run whose processes are gone."""
    ros_harness.clean_fastdds_shm(_shm_before, wait=5.0)
