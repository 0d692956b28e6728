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
