"""Test helper: publish a 640x512 bgr8 and a 640x512 mono16 image of known random content, repeatedly.

    python test/helpers/publish_images.py --seed 1234 --rate 20 --duration 30

Topics ``<prefix>/bgr8`` and ``<prefix>/mono16`` (default prefix ``/egmt_test``), sensor-data QoS, frame ids
``test_bgr`` / ``test_thermal``. Runs until ``--duration`` seconds passed or it is killed. The content is
:func:`make_images` (``numpy.random.default_rng(seed)``), so a receiver can rebuild and compare it byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import numpy as np


def make_images(seed: int, width: int = 640, height: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The (bgr8 ``H x W x 3`` uint8, mono16 ``H x W`` uint16) pair published for ``seed``; full value range."""
    rng = np.random.default_rng(seed)
    bgr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mono16 = rng.integers(0, 65536, size=(height, width), dtype=np.uint16)
    return bgr, mono16


def main(argv: list[str] | None = None) -> int:
    """Publish until the duration is over; prints one line with the SHA-256 of both images first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--rate", type=float, default=20.0, help="Hz")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--prefix", default="/egmt_test")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from egmt_ros.nodes.common import numpy_to_image

    bgr, mono16 = make_images(args.seed, args.width, args.height)
    print(f"bgr8 sha256 {hashlib.sha256(bgr.tobytes()).hexdigest()} "
          f"mono16 sha256 {hashlib.sha256(mono16.tobytes()).hexdigest()}", flush=True)
    rclpy.init()
    node = rclpy.create_node("egmt_test_image_publisher")
    pub_bgr = node.create_publisher(Image, f"{args.prefix}/bgr8", qos_profile_sensor_data)
    pub_mono = node.create_publisher(Image, f"{args.prefix}/mono16", qos_profile_sensor_data)
    end = time.monotonic() + args.duration
    sent = 0
    try:
        while time.monotonic() < end and rclpy.ok():
            stamp = node.get_clock().now().to_msg()
            pub_bgr.publish(numpy_to_image(bgr, "bgr8", Header(stamp=stamp, frame_id="test_bgr")))
            pub_mono.publish(numpy_to_image(mono16, "mono16", Header(stamp=stamp, frame_id="test_thermal")))
            sent += 1
            time.sleep(1.0 / args.rate)
    except KeyboardInterrupt:
        pass
    finally:
        print(f"sent {sent} pairs", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
