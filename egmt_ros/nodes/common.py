"""Small ROS helpers shared by the egmt_ros nodes: QoS by name, stamps, parameters, diagnostics."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, Mapping

import rclpy

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

#: Diagnostic levels (bytes in rclpy; they compare in severity order).
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR

#: Latched QoS for slowly changing state such as /egmt/entities.
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_by_name(name: str, depth: int = 5) -> QoSProfile:
    """``sensor_data`` (best effort, the camera-driver default) or ``reliable``; ValueError otherwise."""
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":
        return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"unknown QoS profile {name!r}: use 'sensor_data' or 'reliable'")


def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    """Float seconds -> builtin_interfaces/Time (exact for stamps that came from a Time)."""
    sec = int(t // 1)
    nsec = int(round((t - sec) * 1e9))
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return Time(sec=sec, nanosec=nsec)


def declare_defaults(node: Node, defaults: Mapping[str, Any]) -> None:
    """Declare every parameter of ``defaults`` (the single source of the node's defaults)."""
    for name, value in defaults.items():
        node.declare_parameter(name, value)


def param(node: Node, name: str) -> Any:
    """The current value of a declared parameter."""
    return node.get_parameter(name).value


def diagnostic_array(node: Node, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    """A DiagnosticArray stamped now."""
    msg = DiagnosticArray()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.status = statuses
    return msg


def make_status(name: str, level: bytes, message: str, values: Mapping[str, Any], hardware_id: str = "egmt_ros"
                ) -> DiagnosticStatus:
    """A DiagnosticStatus with key/values rendered as strings (floats with 3 decimals)."""
    kv = [KeyValue(key=k, value=(f"{v:.3f}" if isinstance(v, float) else str(v))) for k, v in values.items()]
    return DiagnosticStatus(level=level, name=name,
                            message=message, hardware_id=hardware_id, values=kv)


#: Python's GIL switch interval in the node processes (default 0.005 s).
SWITCH_INTERVAL_S = float(os.environ.get("EGMT_SWITCH_INTERVAL_S", "0.0005"))


def run_node(*factories: Callable[[], Node], args: list[str] | None = None) -> None:
    """``rclpy.init``, build the nodes, spin them on one multi-threaded executor until Ctrl-C, clean up."""
    # The nodes' compute threads (torch, OpenVINO) release the GIL for every operation and must win it back from
    # the executor's threads: with Python's default 5 ms switch interval a torch eager model of a few hundred
    # operations ran ~10x slower under 30 Hz camera input (measured, docs/performance.md).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    rclpy.init(args=args)
    nodes: list[Node] = []
    try:
        nodes = [f() for f in factories]
        executor = MultiThreadedExecutor(num_threads=max(2, 2 * len(nodes)))
        for n in nodes:
            executor.add_node(n)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C in a terminal reaches every node of a launch twice (the terminal's group signal, then launch's):
        # the second must not interrupt the clean-up. rclpy.shutdown() restores its own handler, so set it again.
        quiet = threading.current_thread() is threading.main_thread()
        if quiet:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        if quiet:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class LatestSlot:
    """A one-item, newest-wins hand-over from callbacks to a worker thread (bounded memory by design)."""

    def __init__(self) -> None:
        self._item: Any = None
        self._cv = threading.Condition()
        self.replaced = 0  # items overwritten before the worker took them

    def put(self, item: Any) -> None:
        with self._cv:
            if self._item is not None:
                self.replaced += 1
            self._item = item
            self._cv.notify()

    def take(self, timeout: float = 0.1) -> Any:
        """The newest item (waits up to ``timeout`` s), or None."""
        with self._cv:
            if self._item is None:
                self._cv.wait(timeout)
            item, self._item = self._item, None
            return item

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


class EgmtNode(Node):
    """What every egmt_ros node shares: declared defaults, a /diagnostics timer publishing :meth:`status`,
    and one worker thread that runs :meth:`work_once` until the node is destroyed."""

    #: Suffix of the DiagnosticStatus name ("<node>: <label>").
    diag_label = "status"

    def __init__(self, name: str, defaults: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        declare_defaults(self, defaults)
        self._running = False
        self.worker: threading.Thread | None = None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def start(self) -> None:
        """Start the diagnostics timer and the worker (call at the end of the subclass constructor)."""
        self.create_timer(param(self, "diagnostics_period"), self.publish_diagnostics)
        self._running = True
        self.worker = threading.Thread(target=self._loop, name=f"egmt_{self.get_name()}_worker", daemon=True)
        self.worker.start()

    def _loop(self) -> None:
        while self._running:
            self.work_once()

    def work_once(self) -> None:
        """One step of the worker (wait for work with a short timeout, do it)."""
        raise NotImplementedError

    def wake_worker(self) -> None:
        """Unblock :meth:`work_once` (at shutdown)."""

    def status(self) -> tuple[bytes, str, dict[str, Any]]:
        """(level, message, values) of the node's health."""
        raise NotImplementedError

    def publish_diagnostics(self) -> None:
        level, message, values = self.status()
        self.diag_pub.publish(diagnostic_array(self, [make_status(f"{self.get_name()}: {self.diag_label}", level,
                                                                  message, values)]))

    def destroy_node(self) -> None:
        if self.worker is not None:
            self._running = False
            self.wake_worker()
            self.worker.join(timeout=2.0)
        super().destroy_node()
