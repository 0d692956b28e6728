"""Test helper: publish a known vision_msgs/Detection2DArray with two detections, repeatedly.

    python test/helpers/publish_detections.py --topic /egmt_test/detections --rate 10 --duration 30

Reliable QoS, depth 10. The message is :func:`make_detections` (every field set to a distinct value), so a
receiver can compare it field by field. Needs vision_msgs (real, or the stand-in built by
scripts/build_test_interfaces.sh on PYTHONPATH / LD_LIBRARY_PATH, as test/ros_harness.ros_env sets them).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def make_detections() -> Any:
    """A Detection2DArray with two detections; every numeric and string field has a distinct non-default value."""
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose, Point2D, Pose2D)

    msg = Detection2DArray()
    msg.header.frame_id = "rgb_camera_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 123456789
    for i, (label, score) in enumerate([("person", 0.875), ("car", 0.5)]):
        det = Detection2D()
        det.header.frame_id = f"det{i}"
        det.header.stamp.sec, det.header.stamp.nanosec = 1700000000 + i, 1000 + i
        det.id = f"track-{i + 7}"
        det.bbox = BoundingBox2D(center=Pose2D(position=Point2D(x=100.25 + i, y=50.5 + i), theta=0.125 * (i + 1)),
                                 size_x=40.0 + i, size_y=80.0 + 2 * i)
        for j in range(i + 1):  # one hypothesis for the first detection, two for the second
            hyp = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=f"{label}{j}", score=score - 0.1 * j))
            hyp.pose.pose.position.x, hyp.pose.pose.position.y, hyp.pose.pose.position.z = 1.0 + i, 2.0 + j, 3.5
            hyp.pose.pose.orientation.w = 0.5
            hyp.pose.covariance[0], hyp.pose.covariance[35] = 0.01 * (i + 1), 0.02 * (j + 1)
            det.results.append(hyp)
        msg.detections.append(det)
    return msg


def main(argv: list[str] | None = None) -> int:
    """Publish :func:`make_detections` until the duration is over."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", default="/egmt_test/detections")
    parser.add_argument("--rate", type=float, default=10.0, help="Hz")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    args = parser.parse_args(argv)

    import rclpy
    from vision_msgs.msg import Detection2DArray

    rclpy.init()
    node = rclpy.create_node("egmt_test_detection_publisher")
    pub = node.create_publisher(Detection2DArray, args.topic, 10)
    msg = make_detections()
    print(f"publishing {len(msg.detections)} detections on {args.topic}", flush=True)
    end = time.monotonic() + args.duration
    try:
        while time.monotonic() < end and rclpy.ok():
            pub.publish(msg)
            time.sleep(1.0 / args.rate)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
