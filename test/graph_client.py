"""Test-side client of the egmt_ros graph: publishes camera frames and commands, collects what the nodes publish.

It spins its node in a background thread, so a test can publish at a camera rate and read what arrived.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from egmt_ros.nodes.common import ns_to_stamp, numpy_to_image, qos_by_name, sec_to_stamp


class GraphClient:
    """Publishers for /thermal/image_raw, /rgb/image_raw, /egmt/command; collectors for outputs."""

    def __init__(self, node: Any, qos: str = "sensor_data") -> None:
        """``qos`` must match the fusion node's ``qos`` parameter (``sensor_data`` or ``reliable``)."""
        self.node = node
        self.qos = qos_by_name(qos, depth=50)
        self.thermal = node.create_publisher(Image, "/thermal/image_raw", self.qos)
        self.rgb = node.create_publisher(Image, "/rgb/image_raw", self.qos)
        self.command = node.create_publisher(String, "/egmt/command", 10)
        self.received: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self.collect("/egmt/fused", Image)
        self.collect("/diagnostics", DiagnosticArray, qos=10)
        self.collect("/egmt/command/feedback", String, qos=10)
        self._exec = SingleThreadedExecutor(context=node.context)
        self._exec.add_node(node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def collect(self, topic: str, msg_type: type, qos: Any = None) -> None:
        """Start keeping every message of ``topic`` in ``received[topic]``."""
        self.received.setdefault(topic, [])

        def cb(msg: Any, topic: str = topic) -> None:
            with self._lock:
                self.received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, cb, self.qos if qos is None else qos)

    def _spin(self) -> None:
        while self._running:
            self._exec.spin_once(timeout_sec=0.02)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        self._exec.remove_node(self.node)
        self._exec.shutdown()

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.received[topic])

    def publish_thermal(self, arr: np.ndarray, encoding: str, stamp: float | int,
                        frame_id: str = "thermal_camera") -> None:
        """Publish a thermal frame stamped ``stamp`` (float seconds, or int nanoseconds: exact)."""
        self.thermal.publish(numpy_to_image(arr, encoding, Header(stamp=_stamp(stamp), frame_id=frame_id)))

    def publish_rgb(self, arr: np.ndarray, encoding: str, stamp: float | int, frame_id: str = "rgb_camera") -> None:
        """Publish an RGB frame stamped ``stamp`` (float seconds, or int nanoseconds: exact)."""
        self.rgb.publish(numpy_to_image(arr, encoding, Header(stamp=_stamp(stamp), frame_id=frame_id)))

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def wait_until(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``cond`` until true; TimeoutError naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    def wait_for_subscribers(self, timeout: float = 60.0) -> None:
        """Wait until the fusion node subscribes to both camera topics."""
        self.wait_until(lambda: self.thermal.get_subscription_count() > 0 and self.rgb.get_subscription_count() > 0,
                        timeout, "fusion_node to subscribe to the camera topics")

    def diagnostics(self, name_contains: str) -> list[tuple[bytes, str, dict[str, str]]]:
        """(level, message, values) of every received status whose name contains ``name_contains``."""
        out = []
        for arr in self.messages("/diagnostics"):
            for s in arr.status:
                if name_contains in s.name:
                    out.append((s.level, s.message, {kv.key: kv.value for kv in s.values}))
        return out



def _stamp(stamp: float | int):
    """int: nanoseconds, exactly; float: seconds."""
    return ns_to_stamp(stamp) if isinstance(stamp, int) else sec_to_stamp(stamp)
