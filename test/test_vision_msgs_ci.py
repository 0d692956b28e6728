"""vision_msgs for CI: the stand-in from test/interfaces (built by scripts/build_test_interfaces.sh) works across
processes, has vision_msgs 4.x's field layout, and stays invisible to a workspace `colcon build`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy

import ros_harness
from ros_harness import HELPERS_DIR, REPO_ROOT, RosDomain, python_cmd, wait_for_messages

try:
    from vision_msgs.msg import (BoundingBox2D, Classification, Detection2D, Detection2DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose, Point2D, Pose2D)
except ImportError as exc:  # a clear failure, not a skip: CI must have it
    pytest.fail(f"vision_msgs is not importable ({exc}): run `bash scripts/build_test_interfaces.sh` "
                "(`make test` does) or install vision_msgs", pytrace=False)

from helpers.publish_detections import make_detections  # noqa: E402

# vision_msgs 4.x (ros-perception/vision_msgs, ROS 2): field name -> type, as rosidl reports it.
EXPECTED_FIELDS = {
    Detection2DArray: {"header": "std_msgs/Header", "detections": "sequence<vision_msgs/Detection2D>"},
    Detection2D: {"header": "std_msgs/Header", "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
                  "bbox": "vision_msgs/BoundingBox2D", "id": "string"},
    BoundingBox2D: {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    Pose2D: {"position": "vision_msgs/Point2D", "theta": "double"},
    Point2D: {"x": "double", "y": "double"},
    ObjectHypothesis: {"class_id": "string", "score": "double"},
    ObjectHypothesisWithPose: {"hypothesis": "vision_msgs/ObjectHypothesis",
                               "pose": "geometry_msgs/PoseWithCovariance"},
    Classification: {"header": "std_msgs/Header", "results": "sequence<vision_msgs/ObjectHypothesis>"},
}


def test_field_layout_matches_vision_msgs_4() -> None:
    for cls, fields in EXPECTED_FIELDS.items():
        assert cls.get_fields_and_field_types() == fields, cls.__name__


def test_built_stand_in_is_used_here_and_in_spawned_processes() -> None:
    """When install_interfaces/ is built, this process imports vision_msgs from it and spawned processes get its
    paths; without it (a machine with the real vision_msgs) the environment is left alone."""
    import vision_msgs

    install = ros_harness.INTERFACES_INSTALL
    env = ros_harness.ros_env(42)
    built = (install / "lib").is_dir()
    assert (str(install) in vision_msgs.__file__) == built
    assert (str(install / "lib") in env["LD_LIBRARY_PATH"].split(os.pathsep)) == built
    assert (str(install) in env["AMENT_PREFIX_PATH"].split(os.pathsep)) == built
    assert any(p.startswith(str(install)) for p in env["PYTHONPATH"].split(os.pathsep)) == built


def test_detection2darray_crosses_processes_field_exact(ros_domain: RosDomain, spawn, ros_node) -> None:
    spawn(python_cmd(HELPERS_DIR / "publish_detections.py", "--rate", 10, "--duration", 60))
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    got = wait_for_messages(ros_node, "/egmt_test/detections", Detection2DArray, count=2, timeout=30.0, qos=qos)
    expected = make_detections()
    for msg in got:
        assert len(msg.detections) == 2
        assert [len(d.results) for d in msg.detections] == [1, 2]
        assert msg == expected  # generated __eq__ compares every field, nested
        d1 = msg.detections[1]
        assert (d1.id, d1.bbox.center.position.x, d1.bbox.size_y) == ("track-8", 101.25, 82.0)
        assert (d1.results[1].hypothesis.class_id, d1.results[1].hypothesis.score) == ("car1", 0.4)
        assert d1.results[1].pose.covariance[35] == 0.04
    expected.detections[1].results[1].hypothesis.score = 0.41
    assert got[0] != expected  # the comparison would notice a change


def test_colcon_does_not_see_the_test_interfaces() -> None:
    """A user's `colcon build` at the repository root must not pick up test/interfaces/vision_msgs."""
    colcon = os.path.join(os.path.dirname(sys.executable), "colcon")
    out = subprocess.run([colcon, "list", "--names-only", "--base-paths", str(REPO_ROOT)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    assert "vision_msgs" not in names
    assert "egmt_ros" in names
