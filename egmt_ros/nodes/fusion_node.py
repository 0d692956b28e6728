"""fusion_node: thermal + RGB -> /egmt/fused (EGMT or a classical rule), text-driven region effects, diagnostics.

Topics: /thermal/image_raw, /rgb/image_raw (in), /egmt/entities (latched vision_msgs/Classification, in),
/egmt/detections (vision_msgs/Detection2DArray: regions for text commands, in), /egmt/command (std_msgs/String, in),
/egmt/fused (out), /egmt/command/feedback (std_msgs/String, out), /diagnostics (out).
Text commands also come as the ``command`` parameter (``ros2 param set /fusion_node command "brighten the road"``:
refused with the parser's reason when not understood, else answered on the feedback topic). The node is parameters,
subscriptions, publishing and diagnostics; the work (a worker thread fusing the newest pair) is
:class:`egmt_ros.fusion.engine.FusionEngine`'s.
"""

from __future__ import annotations

import time
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import ClockChange, JumpThreshold
from rclpy.duration import Duration
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import Image
from std_msgs.msg import String

from egmt_ros.core.codec import detections_to_boxes, xyxy_boxes
from egmt_ros.fusion.engine import RECONFIGURABLE, SETTINGS, FusionEngine
from egmt_ros.fusion.stats import RateMeter
from egmt_ros.nodes.common import (CALLBACK_ERROR, ERROR, LATCHED_QOS, OK, REJECTED, WARN, EgmtNode, ns_to_stamp,
                                   numpy_to_image, param, qos_by_name, run_node, stamp_to_ns, stamp_to_sec)

#: Every parameter and its default (config/egmt.yaml repeats them; a test checks they agree).
DEFAULTS: dict[str, Any] = {"qos": "auto", "qos_depth": 5, **SETTINGS, "input_timeout": 2.0, "max_stamp_lag": 5.0,
                            "entities.max_age": 60.0, "diagnostics_period": 1.0, "command": ""}

ENCODINGS = {"thermal": ("mono8", "mono16", "16UC1", "8UC1", "32FC1", "bgr8", "rgb8"),
             "rgb": ("bgr8", "rgb8", "bgra8", "rgba8", "mono8")}
#: Parameters that may change while running (the rest need a restart).
DYNAMIC = (*RECONFIGURABLE, "input_timeout", "max_stamp_lag", "entities.max_age", "command")


class FusionNode(EgmtNode):
    """Pairs /thermal/image_raw with /rgb/image_raw by stamp and publishes /egmt/fused."""

    diag_label = "fusion"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fusion_node", DEFAULTS, **kwargs)
        self.engine = FusionEngine.from_settings({k: param(self, k) for k in SETTINGS})
        self.rates = {k: RateMeter() for k in ("thermal", "rgb", "fused")}
        self.entity_stamp: float | None = None
        self.topics = {k: self.resolve_topic_name(f"/{k}/image_raw") for k in ("thermal", "rgb")}
        self.qos = qos_by_name(param(self, "qos"), param(self, "qos_depth"),
                               [p for t in self.topics.values() for p in self.get_publishers_info_by_topic(t)])
        import vision_msgs.msg as vm  # from apt on a robot, from the test interface package in CI
        cameras = ReentrantCallbackGroup()  # the two camera callbacks may run at the same time
        for name in self.topics:
            self.create_subscription(Image, f"/{name}/image_raw", lambda m, k=name: self._on_camera(k, m), self.qos,
                                     callback_group=cameras)
        self.create_subscription(vm.Classification, "/egmt/entities", self._on_entities, LATCHED_QOS)
        self.create_subscription(vm.Detection2DArray, "/egmt/detections", self._on_detections, 10)
        self.create_subscription(String, "/egmt/command", lambda msg: self.handle_command(msg.data), 10)
        self.feedback_pub = self.create_publisher(String, "/egmt/command/feedback", 10)
        self.pub = self.create_publisher(Image, "/egmt/fused", self.qos)
        self.add_on_set_parameters_callback(self._on_params)
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_clock_jump)
        self.start()
        self.get_logger().info(f"fusing {' + '.join(self.topics.values())} -> /egmt/fused with "
                               f"{param(self, 'model.method')} ({self.qos.reliability.name.lower()})")

    def _on_params(self, params) -> SetParametersResult:
        """Dynamic reconfigure of the safe parameters and the ``command`` parameter; the rest are refused with a
        reason, and so is a command the gate or the parser refuses, or the effect limit (the reason is the answer)."""
        command = None
        for p in params:
            if p.name not in DYNAMIC:
                return SetParametersResult(successful=False, reason=f"{p.name} needs a node restart")
            if p.name == "command":
                refused = self.engine.gate.admit(p.value)
                command = None if refused else self.engine.parse(p.value)
                if refused or not command.ok:
                    return SetParametersResult(successful=False, reason=refused or command.answer())
        try:
            for p in params:
                if p.name in RECONFIGURABLE:
                    self.engine.reconfigure(p.name, p.value)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        answer = self._answer(self.engine.apply(command)) if command is not None else ""
        return SetParametersResult(successful=command is None or command.ok, reason=answer)

    def _on_clock_jump(self, jump) -> None:
        self.engine.clock_jumped(jump.delta.nanoseconds, jump.clock_change != ClockChange.ROS_TIME_NO_CHANGE)
        self._log_resets()

    def _log_resets(self) -> None:
        """One log line per pairer reset (a replay restarting, a clock jump), whoever noticed it."""
        news = self.engine.reset_news()
        if news:
            self.get_logger().warning(news)

    def _warn(self, kind: str, message: str) -> None:
        """Note a problem (diagnostics report every distinct recent one) and log it, throttled."""
        self.errors.note(kind, message)
        self.get_logger().warning(message, throttle_duration_sec=2.0)

    def _frame(self, msg: Image, allowed: tuple[str, ...], topic: str) -> tuple[Any, int, int] | None:
        """(pixels, stamp ns, clock ns) of a camera frame, its stamp's lag checked; None if refused."""
        arr = self.image_or_none(msg, allowed, topic)
        if arr is None:
            return None
        stamp, now = stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds
        if (now - stamp) * 1e-9 > param(self, "max_stamp_lag"):
            self._warn(f"lag{topic}", f"stamp on {topic} is {(now - stamp) * 1e-9:.1f} s in the past "
                                      "(camera clock or use_sim_time mismatch?)")
        return arr, stamp, now

    def _on_camera(self, name: str, msg: Image) -> None:
        self.rates[name].tick()
        frame = self._frame(msg, ENCODINGS[name], self.topics[name])
        if frame is None:
            return
        if name == "thermal":
            self.engine.add_thermal(frame[0], msg.encoding, frame[1], time.monotonic(), frame[2])
        else:
            self.engine.add_rgb(frame[0], msg.encoding, frame[1], msg.header.frame_id, time.monotonic(), frame[2])

    def _on_entities(self, msg) -> None:
        self.entity_stamp = stamp_to_sec(msg.header.stamp)
        self.engine.set_entities([r.class_id for r in msg.results if r.class_id])

    def _on_detections(self, msg) -> None:
        self.engine.set_detections(stamp_to_ns(msg.header.stamp), xyxy_boxes(detections_to_boxes(msg)))

    def handle_command(self, text: str) -> tuple[bool, str]:
        """One command of /egmt/command (the engine caps length and rate); returns (applied, answer)."""
        ok, answer = self.engine.command(text)
        return ok, self._answer(answer) if answer else answer

    def _answer(self, answer: str) -> str:
        """Log and publish an answer (it quotes at most a short prefix of the command)."""
        self.get_logger().info(f"command: {answer}")
        self.feedback_pub.publish(String(data=answer))
        return answer

    def wake_worker(self) -> None:
        self.engine.pairer.wake()

    def work_once(self) -> None:
        pair = self.engine.take(timeout=0.1)
        if pair is None:
            return
        try:
            result = self.engine.fuse_pair(pair)
        except Exception as exc:  # noqa: BLE001 - a bad frame must never kill the node
            self._warn("fusion", f"fusion failed: {exc} (pair at {pair.stamp * 1e-9:.3f})")
            return
        out = numpy_to_image(result.image, result.encoding)
        out.header.stamp = ns_to_stamp(result.stamp)  # exactly the RGB frame's stamp
        out.header.frame_id = result.frame_id
        self.pub.publish(out)
        now = time.monotonic()
        self.rates["fused"].tick(now)
        self.engine.lat["receive_to_publish"].add(now - max(pair.thermal.received, pair.rgb.received))

    def status(self) -> tuple[bytes, str, dict[str, Any]]:
        """Level, message and values of the node's health."""
        now = time.monotonic()
        values: dict[str, Any] = {**{f"{k}_rate_hz": r.rate(now) for k, r in self.rates.items()},
                                  **self.engine.status_values()}
        values.update({"frames_rejected": self.errors.count(REJECTED), "errors": self.errors.count(),
                       "backend": param(self, "model.backend"), "qos": self.qos.reliability.name.lower()})
        ent_age = None if self.entity_stamp is None else self.get_clock().now().nanoseconds * 1e-9 - self.entity_stamp
        values["entity_age_s"] = "no entities yet (fusing with an empty entity set)" if ent_age is None else ent_age
        msgs = []
        for name, topic in self.topics.items():
            silence = self.rates[name].silence(now)
            if silence is None or silence > param(self, "input_timeout"):
                msgs.append(f"no {name} image received yet on {topic}" if silence is None else
                            f"no {name} image for {silence:.1f} s on {topic}")
        self._log_resets()
        msgs.append(self.engine.stall_message(now, self.rates["fused"].silence(now), self.errors.count(REJECTED)))
        if ent_age is not None and ent_age > param(self, "entities.max_age"):
            msgs.append(f"entities are {ent_age:.0f} s old: is entity_node running? (fusing with the last ones)")
        errors = [(k, m) for k, m in self.errors.recent(max(5.0, 2 * param(self, "diagnostics_period")))
                  if k != CALLBACK_ERROR]  # those are the base class's (ERROR)
        msgs = [m for m in msgs if m] + [m for _, m in errors]
        level = ERROR if any(k == "fusion" for k, _ in errors) else WARN if msgs else OK
        return level, "; ".join(msgs) if msgs else "fusing", values


def main(args: list[str] | None = None) -> None:
    """Run the node alone (``ros2 run egmt_ros fusion_node``)."""
    run_node(FusionNode, args=args)


if __name__ == "__main__":
    main()
