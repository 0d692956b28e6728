"""Small ROS helpers shared by the egmt_ros nodes: QoS by name, stamps, parameters, diagnostics, Image messages."""

from __future__ import annotations

import functools
import math
import os
import re
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rcl_interfaces.msg import SetParametersResult
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from egmt_ros.core.codec import ImageConversionError, image_fields, image_to_numpy

#: Diagnostic levels (bytes in rclpy; they compare in severity order).
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR

#: Latched QoS for slowly changing state such as /egmt/entities.
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_by_name(name: str, depth: int = 5, publishers: Sequence[Any] = ()) -> QoSProfile:
    """``sensor_data`` (best effort, the camera-driver default), ``reliable``, or ``auto``: follow the publishers
    (``Node.get_publishers_info_by_topic``) as image_pipeline does: reliable when there are publishers and every one
    is reliable, else best effort (which matches any publisher). ValueError for another name."""
    if name == "auto":
        reliable = bool(publishers) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                            for p in publishers)
        name = "reliable" if reliable else "sensor_data"
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":
        return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"unknown QoS profile {name!r}: use 'auto', 'sensor_data' or 'reliable'")


def numpy_to_image(arr: np.ndarray, encoding: str, header: Header | None = None,
                   step: int | None = None) -> Image:
    """A sensor_msgs/Image holding ``arr`` (fields from :func:`egmt_ros.core.codec.image_fields`: one memory copy,
    native byte order, rows zero-padded to ``step``); ``header`` is used as given (not copied)."""
    msg = Image(**image_fields(arr, encoding, step))
    if header is not None:
        msg.header = header
    return msg


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact; stamps stay integers end to end)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time, exactly (``ns_to_stamp(stamp_to_ns(t)) == t``)."""
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


def sec_to_stamp(t: float) -> Time:
    """Float seconds -> builtin_interfaces/Time, to the nearest ns (for times given in seconds; never round-trip
    a received stamp through float seconds: use :func:`stamp_to_ns` / :func:`ns_to_stamp`)."""
    sec = math.floor(t)
    return ns_to_stamp(sec * 1_000_000_000 + round((t - sec) * 1e9))


def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds (for ages and durations only; carry stamps as :func:`stamp_to_ns`)."""
    return stamp_to_ns(stamp) * 1e-9


def declare_defaults(node: Node, defaults: Mapping[str, Any]) -> None:
    """Declare every parameter of ``defaults`` (the single source of the node's defaults)."""
    for name, value in defaults.items():
        node.declare_parameter(name, value)


#: Parameters rclpy itself declares or reads (never "unknown").
BUILTIN_PARAMS = ("use_sim_time", "start_type_description_service")


def invalid_value(value: Any) -> str:
    """Why a parameter value is never acceptable (a NaN or infinite number, also inside an array), or ''."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return "must be a finite number"
    return ""


def checked_parameters(params: list[Any], known: Mapping[str, Any]) -> SetParametersResult:
    """The verdict on a parameter change: unknown names and non-finite numbers rejected with a reason."""
    for p in params:
        if p.name not in known and p.name not in BUILTIN_PARAMS:
            return SetParametersResult(successful=False, reason=f"unknown parameter {p.name!r}")
        why = invalid_value(p.value)
        if why:
            return SetParametersResult(successful=False, reason=f"{p.name}={p.value!r} rejected: {why}")
    return SetParametersResult(successful=True)


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


class ErrorLog:
    """A node's recent distinct problems, thread-safe (callbacks of a multi-threaded executor report at once).

    ``note(kind, message)`` keeps the newest message per kind and text shape (digits folded, so the same problem
    with other numbers is one entry), at most ``keep`` entries, and counts every note per kind.
    """

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._recent: dict[str, tuple[float, str, str]] = {}   # key -> (monotonic time, kind, message)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def note(self, kind: str, message: str) -> None:
        key = f"{kind}:{re.sub(r'[0-9.]+', '#', message)[:80]}"
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._recent.pop(key, None)
            self._recent[key] = (time.monotonic(), kind, message)
            while len(self._recent) > self.keep:
                self._recent.pop(next(iter(self._recent)))

    def recent(self, within_s: float) -> list[tuple[str, str]]:
        """(kind, message) of every entry noted in the last ``within_s`` seconds, oldest first."""
        now = time.monotonic()
        with self._lock:
            return [(k, m) for t, k, m in self._recent.values() if now - t < within_s]

    def count(self, *kinds: str) -> int:
        """Notes of these kinds so far (all kinds when none is given)."""
        with self._lock:
            return sum(n for k, n in self._counts.items() if not kinds or k in kinds)


#: ErrorLog kind of an exception that escaped a callback (ERROR on /diagnostics).
CALLBACK_ERROR = "callback"
#: ErrorLog kind of an image refused for its encoding or layout (counted as ``rejected``).
REJECTED = "rejected"


class EgmtNode(Node):
    """What every egmt_ros node shares: declared defaults, a /diagnostics timer publishing :meth:`status`,
    one worker thread that runs :meth:`work_once` until the node is destroyed, and an exception boundary:
    an exception in any subscription, service or timer callback, or in the worker, becomes an ERROR on
    /diagnostics and a rate-limited log line, and the node keeps running."""

    #: Suffix of the DiagnosticStatus name ("<node>: <label>").
    diag_label = "status"
    #: Seconds a callback error stays on /diagnostics.
    error_hold_s = 10.0

    def __init__(self, name: str, defaults: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.errors = ErrorLog()
        declare_defaults(self, defaults)
        self.defaults = dict(defaults)
        self.parameter_problems = self._reject_bad_overrides(defaults)
        self._running = False
        self.worker: threading.Thread | None = None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _reject_bad_overrides(self, defaults: Mapping[str, Any]) -> list[str]:
        """Start-up parameters: unknown names are reported and ignored, non-finite numbers replaced by the default
        (each a one-line ERROR log and a WARN on /diagnostics for the node's lifetime)."""
        problems = [f"unknown parameter {name!r} ignored (known: {', '.join(defaults)})"
                    for name in sorted(self._parameter_overrides)
                    if name not in defaults and name not in BUILTIN_PARAMS and not name.startswith("qos_overrides.")]
        for name, default in defaults.items():
            why = invalid_value(param(self, name))
            if why:
                problems.append(f"parameter {name}={param(self, name)!r} rejected ({why}); using {default!r}")
                self.set_parameters([Parameter(name, value=default)])
        for p in problems:
            self.get_logger().error(p)
        return problems

    # ------------------------------------------------------------ the exception boundary
    def report_exception(self, where: str, exc: BaseException) -> None:
        """Note an exception that escaped ``where`` (ERROR on /diagnostics) and log it, at most every 5 s."""
        message = f"{where} failed: {type(exc).__name__}: {str(exc)[:200]}"
        self.errors.note(CALLBACK_ERROR, message)
        self.get_logger().error(message, throttle_duration_sec=5.0)

    def _guard(self, where: str, callback: Callable[..., Any], service: bool = False) -> Callable[..., Any]:
        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the boundary: report, never end the process
                self.report_exception(where, exc)
                return args[1] if service else None  # a service still answers (with the empty response)
        return guarded

    def create_subscription(self, msg_type, topic, callback, *args: Any, **kwargs: Any):  # noqa: D102
        return super().create_subscription(msg_type, topic, self._guard(f"callback of {topic}", callback),
                                           *args, **kwargs)

    def create_service(self, srv_type, srv_name, callback, *args: Any, **kwargs: Any):  # noqa: D102
        return super().create_service(srv_type, srv_name, self._guard(f"service {srv_name}", callback, True),
                                      *args, **kwargs)

    def create_timer(self, timer_period_sec, callback, *args: Any, **kwargs: Any):  # noqa: D102
        return super().create_timer(timer_period_sec, self._guard("timer", callback), *args, **kwargs)

    def image_or_none(self, msg: Any, allowed: tuple[str, ...], topic: str) -> Any:
        """The numpy image of ``msg`` if its encoding is one of ``allowed`` and it converts; else None, with the
        problem noted (``rejected``: WARN on /diagnostics, a throttled log line)."""
        if msg.encoding not in allowed:
            problem = f"unsupported encoding {msg.encoding[:32]!r} on {topic}; expected one of {', '.join(allowed)}"
        else:
            try:
                return image_to_numpy(msg)
            except ImageConversionError as exc:
                problem = f"bad image on {topic}: {exc}"
        self.errors.note(REJECTED, problem)
        self.get_logger().warning(problem, throttle_duration_sec=2.0)
        return None

    # ------------------------------------------------------------ worker and diagnostics
    def start(self) -> None:
        """Start the diagnostics timer and the worker (call at the end of the subclass constructor)."""
        # registered last, so rclpy asks it first: a change it rejects never reaches the node's own callback
        self.add_on_set_parameters_callback(lambda params: checked_parameters(params, self.defaults))
        # on the steady clock: under use_sim_time a paused or not yet started bag stops ROS time, and the status must
        # still come (a stalled graph is exactly when it is needed)
        self.create_timer(param(self, "diagnostics_period"), self.publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._running = True
        self.worker = threading.Thread(target=self._loop, name=f"egmt_{self.get_name()}_worker", daemon=True)
        self.worker.start()

    def _loop(self) -> None:
        while self._running:
            try:
                self.work_once()
            except Exception as exc:  # noqa: BLE001 - the worker outlives a bad item
                self.report_exception("worker", exc)
                time.sleep(0.01)

    def work_once(self) -> None:
        """One step of the worker (wait for work with a short timeout, do it)."""
        raise NotImplementedError

    def wake_worker(self) -> None:
        """Unblock :meth:`work_once` (at shutdown)."""

    def status(self) -> tuple[bytes, str, dict[str, Any]]:
        """(level, message, values) of the node's health."""
        raise NotImplementedError

    def full_status(self) -> tuple[bytes, str, dict[str, Any]]:
        """:meth:`status` with the boundary's callback errors added (ERROR while recent)."""
        try:
            level, message, values = self.status()
        except Exception as exc:  # noqa: BLE001
            self.report_exception("status", exc)
            level, message, values = ERROR, "", {}
        recent = [m for k, m in self.errors.recent(self.error_hold_s) if k == CALLBACK_ERROR]
        values = {**values, "callback_errors": self.errors.count(CALLBACK_ERROR)}
        if self.parameter_problems:
            level = max(level, WARN)
            message = "; ".join(([message] if message else []) + self.parameter_problems)
        if recent:
            level = ERROR
            message = "; ".join(([message] if message else []) + recent[-3:])
        return level, message, values

    def publish_diagnostics(self) -> None:
        level, message, values = self.full_status()
        self.diag_pub.publish(diagnostic_array(self, [make_status(f"{self.get_name()}: {self.diag_label}", level,
                                                                  message, values)]))

    def destroy_node(self) -> None:
        if self.worker is not None:
            self._running = False
            self.wake_worker()
            self.worker.join(timeout=2.0)
        super().destroy_node()
