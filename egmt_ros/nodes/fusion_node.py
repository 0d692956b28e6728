"""fusion_node: thermal + RGB -> /egmt/fused (EGMT or a classical rule), text-driven region effects, diagnostics.

Topics: /thermal/image_raw, /rgb/image_raw (in), /egmt/entities (latched vision_msgs/Classification, in),
/egmt/detections (vision_msgs/Detection2DArray: regions for text commands, in), /egmt/command (std_msgs/String, in),
/egmt/fused (out), /egmt/command/feedback (std_msgs/String, out), /diagnostics (out).
Service ~/command (diagnostic_msgs/srv/AddDiagnostics: its one request string is the command text; the response
says whether it was applied and what was understood). No new interface package is needed on a robot.

Subscriptions only convert and enqueue (newest pair wins); a worker thread fuses, so a slow model never
blocks the cameras' callbacks and memory stays bounded. All algorithmic work is in ``egmt_ros.fusion``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.srv import AddDiagnostics
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import ClockChange, JumpThreshold
from rclpy.duration import Duration
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import Image
from std_msgs.msg import String

from egmt_ros.entities.classes import DEFAULT_CLASSES
from egmt_ros.fusion.agc import ThermalAGC
from egmt_ros.fusion.commands import CommandParser
from egmt_ros.fusion.methods import get_method
from egmt_ros.fusion.pipeline import FusionPipeline
from egmt_ros.fusion.registration import parse_homography
from egmt_ros.fusion.stats import LatencyWindow, RateMeter
from egmt_ros.fusion.sync import StampPairer, Stamped, SyncCounters, stall_reasons
from egmt_ros.fusion.terf import Detections, EffectStack
from egmt_ros.nodes.common import (CALLBACK_ERROR, ERROR, LATCHED_QOS, OK, REJECTED, WARN, EgmtNode, ns_to_stamp, param, qos_by_name, run_node,
                                   stamp_to_ns, stamp_to_sec)
from egmt_ros.nodes.image_conv import numpy_to_image

#: Every parameter and its default (config/egmt.yaml repeats them; a test checks they agree).
DEFAULTS: dict[str, Any] = {
    "qos": "sensor_data",
    "qos_depth": 5,
    "sync.slop": 0.02,
    "sync.queue_size": 10,
    "sync.reorder_window": 0.1,
    "sync.max_future": 10.0,
    "homography": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    "agc.low_percentile": 1.0,
    "agc.high_percentile": 99.0,
    "agc.smoothing": 0.9,
    "model.method": "egmt_rt",
    "model.path": "",
    "model.device": "cpu",
    "model.backend": "torch",
    "model.dtype": "float32",
    "model.threads": 0,
    "input_timeout": 2.0,
    "max_stamp_lag": 5.0,
    "entities.max_age": 60.0,
    "diagnostics_period": 1.0,
    "effects.feather": 12.0,
    "effects.max_detection_age": 1.0,
    "command.use_text_encoder": True,
    "command.min_similarity": 0.5,
}

THERMAL_ENCODINGS = ("mono8", "mono16", "16UC1", "8UC1", "32FC1", "bgr8", "rgb8")
RGB_ENCODINGS = ("bgr8", "rgb8", "bgra8", "rgba8", "mono8")
#: Seconds without a fused image while frames arrive before /diagnostics says WARN and why.
STALL_S = 2.0
#: Parameters that may change while running (the rest need a restart).
DYNAMIC = ("sync.slop", "sync.reorder_window", "sync.max_future", "homography", "agc.low_percentile", "agc.high_percentile", "agc.smoothing",
           "input_timeout", "max_stamp_lag", "entities.max_age", "effects.feather", "effects.max_detection_age",
           "command.min_similarity")


class FusionNode(EgmtNode):
    """Pairs /thermal/image_raw with /rgb/image_raw by stamp and publishes /egmt/fused."""

    diag_label = "fusion"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fusion_node", DEFAULTS, **kwargs)
        self.pairer = StampPairer(param(self, "sync.slop"), param(self, "sync.queue_size"),
                                  param(self, "sync.reorder_window"), param(self, "sync.max_future"))
        self._stall: deque[tuple[float, SyncCounters, int]] = deque()  # (time, counters, rejected) per status
        self.method = self._load_method()
        self.effects = EffectStack(param(self, "effects.feather"), param(self, "effects.max_detection_age"))
        self._text_encoder = self._load_text_encoder()
        self.parser = CommandParser(DEFAULT_CLASSES, encoder=self._encode_words if param(
            self, "command.use_text_encoder") else None, min_similarity=param(self, "command.min_similarity"))
        self._seen_classes: set[str] = set(DEFAULT_CLASSES)
        self.pipeline = FusionPipeline(
            self.method,
            ThermalAGC(param(self, "agc.low_percentile"), param(self, "agc.high_percentile"),
                       param(self, "agc.smoothing")),
            parse_homography(param(self, "homography")),
            post=self._apply_effects)
        self.lat = {k: LatencyWindow() for k in ("preprocess", "fuse", "postprocess", "total", "receive_to_publish")}
        self.rates = {k: RateMeter() for k in ("thermal", "rgb", "fused")}
        self.detections_received = 0
        self.entities: list[str] = []
        self.entity_stamp: float | None = None
        self._entities_dirty = False
        self._lock = threading.Lock()

        qos = qos_by_name(param(self, "qos"), param(self, "qos_depth"))
        cameras = ReentrantCallbackGroup()  # the two camera callbacks may run at the same time
        self.thermal_topic = self.resolve_topic_name("/thermal/image_raw")
        self.rgb_topic = self.resolve_topic_name("/rgb/image_raw")
        self.create_subscription(Image, "/thermal/image_raw", self._on_thermal, qos, callback_group=cameras)
        self.create_subscription(Image, "/rgb/image_raw", self._on_rgb, qos, callback_group=cameras)
        self.create_subscription(_vision_type("Classification"), "/egmt/entities", self._on_entities, LATCHED_QOS)
        self.create_subscription(_vision_type("Detection2DArray"), "/egmt/detections", self._on_detections, 10)
        self.create_subscription(String, "/egmt/command", self._on_command, 10)
        self.feedback_pub = self.create_publisher(String, "/egmt/command/feedback", 10)
        self.create_service(AddDiagnostics, "~/command", self._on_command_service)
        self.pub = self.create_publisher(Image, "/egmt/fused", qos)
        self.add_on_set_parameters_callback(self._on_params)
        # like rclpy's clock jump callbacks in message_filters: time going back (sim-time reset, replay) resets the
        # pairer at once instead of after JUMP_FRAMES stale frames
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_clock_jump)
        self.start()
        self.get_logger().info(f"fusing {self.thermal_topic} + {self.rgb_topic} -> /egmt/fused with "
                               f"{param(self, 'model.method')}")

    # ---------------------------------------------------------------- set-up
    def _load_method(self):
        name = param(self, "model.method")
        kwargs: dict[str, Any] = {}
        if name.startswith("egmt"):
            kwargs = {"device": param(self, "model.device"), "backend": param(self, "model.backend"),
                      "dtype": param(self, "model.dtype")}
            kwargs["threads"] = param(self, "model.threads") or max(1, (os.cpu_count() or 2) // 2)
            if param(self, "model.path"):
                kwargs["model"] = param(self, "model.path")
        return get_method(name, **kwargs)

    def _on_params(self, params) -> SetParametersResult:
        """Dynamic reconfigure of the safe parameters; the rest are rejected with a reason."""
        for p in params:
            if p.name not in DYNAMIC:
                return SetParametersResult(successful=False, reason=f"{p.name} needs a node restart")
        try:
            for p in params:
                if p.name.startswith("sync."):
                    setattr(self.pairer, p.name[len("sync."):], p.value)  # validated by the pairer
                elif p.name == "homography":
                    self.pipeline.homography = parse_homography(p.value)
                elif p.name == "effects.feather":
                    self.effects.feather = float(p.value)
                elif p.name == "effects.max_detection_age":
                    self.effects.max_detection_age = float(p.value)
                elif p.name == "command.min_similarity":
                    self.parser.min_similarity = float(p.value)
                elif p.name.startswith("agc."):
                    agc = self.pipeline.agc
                    new = {"agc.low_percentile": agc.low_percentile, "agc.high_percentile": agc.high_percentile,
                           "agc.smoothing": agc.smoothing, p.name: float(p.value)}
                    self.pipeline.agc = ThermalAGC(new["agc.low_percentile"], new["agc.high_percentile"],
                                                   new["agc.smoothing"])
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- callbacks
    def _note_error(self, kind: str, message: str) -> None:
        """Count an input/processing problem; diagnostics report every distinct recent one."""
        self.errors.note(kind, message)
        self.get_logger().warn(message, throttle_duration_sec=2.0)

    def _on_clock_jump(self, jump) -> None:
        if jump.clock_change != ClockChange.ROS_TIME_NO_CHANGE or jump.delta.nanoseconds < -self.pairer.slop * 1e9:
            why = f"node clock jumped {jump.delta.nanoseconds * 1e-9:+.3f} s"
            self.pairer.reset(why)
            self.get_logger().warn(f"{why}: stamp pairer reset")

    def _check_lag(self, stamp: int, now: int, topic: str) -> None:
        lag = (now - stamp) * 1e-9
        if lag > param(self, "max_stamp_lag"):
            self._note_error(f"lag{topic}", f"stamp on {topic} is {lag:.1f} s in the past "
                                            "(camera clock or use_sim_time mismatch?)")

    def _on_thermal(self, msg: Image) -> None:
        self.rates["thermal"].tick()
        arr = self.image_or_none(msg, THERMAL_ENCODINGS, self.thermal_topic)
        if arr is not None:
            stamp, now = stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds
            self._check_lag(stamp, now, self.thermal_topic)
            self.pairer.add_thermal(Stamped(stamp, (arr, msg.encoding), time.monotonic()), now)

    def _on_rgb(self, msg: Image) -> None:
        self.rates["rgb"].tick()
        arr = self.image_or_none(msg, RGB_ENCODINGS, self.rgb_topic)
        if arr is not None:
            stamp, now = stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds
            self._check_lag(stamp, now, self.rgb_topic)
            self.pairer.add_rgb(Stamped(stamp, (arr, msg.encoding, msg.header.frame_id), time.monotonic()), now)

    def _on_entities(self, msg) -> None:
        labels = [r.class_id for r in msg.results if r.class_id]
        with self._lock:
            self.entities = labels
            self.entity_stamp = stamp_to_sec(msg.header.stamp)
            self._entities_dirty = True
            self.parser.set_vocabulary(sorted(self._seen_classes | set(labels)))

    def _on_detections(self, msg) -> None:
        boxes = []
        for d in msg.detections:
            if not d.results:
                continue
            cx, cy = d.bbox.center.position.x, d.bbox.center.position.y
            w, h = d.bbox.size_x, d.bbox.size_y
            boxes.append((d.results[0].hypothesis.class_id, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
        new = {c for c, _ in boxes} - self._seen_classes
        with self._lock:
            self.detections_received += 1
            self.effects.set_detections(Detections(stamp_to_sec(msg.header.stamp), boxes))
            if new:
                self._seen_classes |= new
                self.parser.set_vocabulary(sorted(self._seen_classes | set(self.entities)))

    # ---------------------------------------------------------------- text commands (TeRF)
    def _load_text_encoder(self):
        """The one text encoder of the node, loaded at start-up so that the first entities or command never stall
        the fused stream (MiniLM takes seconds to load): the model's own when it uses entities (EGMT), else
        MiniLM when text commands resolve unknown words by similarity (``command.use_text_encoder``), else None."""
        config = getattr(getattr(self.method, "model", None), "config", None)
        if config is not None and getattr(config, "uses_text", False) and hasattr(self.method, "text_encoder"):
            return self.method.text_encoder
        if param(self, "command.use_text_encoder"):
            from egmt_ros.model.text import MiniLMEncoder

            return MiniLMEncoder()
        return None

    def _encode_words(self, words):
        """Text features for synonym resolution (the node's text encoder)."""
        return self._text_encoder.encode(list(words))

    def handle_command(self, text: str) -> tuple[bool, str]:
        """Parse and apply one command; returns (applied, answer). Unparseable commands change nothing."""
        with self._lock:
            cmd = self.parser.parse(text)
            if cmd.ok:
                if cmd.task == "reset":
                    self.effects.reset()
                else:
                    self.effects.apply_command(cmd.task, cmd.region, cmd.steps)
            active = self.effects.describe()
        answer = f"{cmd.answer()} | active: {', '.join(active) if active else 'none'}"
        self.get_logger().info(f"command {text!r}: {answer}")
        self.feedback_pub.publish(String(data=answer))
        return cmd.ok, answer

    def _on_command(self, msg: String) -> None:
        self.handle_command(msg.data)

    def _on_command_service(self, request, response):
        """~/command: the request's string field carries the command text; the reply says what was understood."""
        response.success, response.message = self.handle_command(request.load_namespace)
        return response

    def _apply_effects(self, fused, ir, vi, stamp):
        with self._lock:
            if not self.effects.effects:
                return fused
            return self.effects(fused, ir, vi, stamp)

    # ---------------------------------------------------------------- worker
    def wake_worker(self) -> None:
        self.pairer.wake()

    def work_once(self) -> None:
        pair = self.pairer.take(timeout=0.1)
        if pair is None:
            return
        try:
            self._fuse_pair(pair)
        except Exception as exc:  # noqa: BLE001 - a bad frame must never kill the node
            self._note_error("fusion", f"fusion failed: {exc} (pair at {pair.stamp * 1e-9:.3f})")

    def _fuse_pair(self, pair) -> None:
        t0 = time.perf_counter()
        with self._lock:  # only the worker calls the method: encode the entities outside the lock
            entities = list(self.entities) if self._entities_dirty else None
            self._entities_dirty = False
        if entities is not None and hasattr(self.method, "set_entities"):
            self.method.set_entities(entities)
        thermal, _ = pair.thermal.data
        rgb, rgb_encoding, frame_id = pair.rgb.data
        rgb_enc = "bgr8" if rgb_encoding.startswith("bgr") else ("rgb8" if rgb.ndim == 3 else "mono8")
        result = self.pipeline.process(thermal, rgb, rgb_enc, pair.stamp * 1e-9)
        out = numpy_to_image(result.image, result.encoding)
        out.header.stamp = ns_to_stamp(pair.stamp)  # exactly the RGB frame's stamp
        out.header.frame_id = frame_id
        self.pub.publish(out)
        now = time.monotonic()
        self.rates["fused"].tick(now)
        for k, v in result.timings.items():
            self.lat[k].add(v)
        self.lat["total"].add(time.perf_counter() - t0)
        self.lat["receive_to_publish"].add(now - max(pair.thermal.received, pair.rgb.received))

    # ---------------------------------------------------------------- diagnostics
    def status(self) -> tuple[bytes, str, dict[str, Any]]:
        """Level, message and values of the node's health (also used by tests without ROS)."""
        now = time.monotonic()
        c = self.pairer.snapshot()
        values: dict[str, Any] = {
            "thermal_rate_hz": self.rates["thermal"].rate(now), "rgb_rate_hz": self.rates["rgb"].rate(now),
            "fused_rate_hz": self.rates["fused"].rate(now),
            "frames_in_thermal": c.thermal_in, "frames_in_rgb": c.rgb_in, "pairs_matched": c.paired,
            "frames_pending": self.pairer.pending(),
            "pairs_fused": c.paired - c.dropped, "pairs_dropped": c.dropped, "frames_unmatched": c.unmatched,
            "frames_stale": c.stale, "frames_future": c.future, "frames_rejected": self.errors.count(REJECTED),
            "sync_resets": c.resets, "last_sync_reset": c.last_reset or "none",
            "errors": self.errors.count(),
            "method": param(self, "model.method"), "backend": param(self, "model.backend"),
            "entities": ",".join(self.entities), "active_effects": "; ".join(self.effects.describe()),
            "detections_received": self.detections_received,
        }
        backend = getattr(self.method, "backend", None)
        if backend is not None and hasattr(backend, "info"):  # EGMT: threads, device, dtype, providers ...
            values.update({f"backend_{k}": v for k, v in backend.info().items() if k != "backend"})
        for k, w in self.lat.items():
            p50, p99 = w.percentiles_ms(50, 99)
            values[f"{k}_ms_p50"], values[f"{k}_ms_p99"] = p50, p99
        ent_age = None
        if self.entity_stamp is not None:
            ent_age = self.get_clock().now().nanoseconds * 1e-9 - self.entity_stamp  # since the keyframe
            values["entity_age_s"] = ent_age
        else:
            values["entity_age_s"] = "no entities yet (fusing with an empty entity set)"
        level, msgs = OK, []
        timeout = param(self, "input_timeout")
        for name, topic in (("thermal", self.thermal_topic), ("rgb", self.rgb_topic)):
            silence = self.rates[name].silence(now)
            if silence is None:
                level = max(level, WARN)
                msgs.append(f"no {name} image received yet on {topic}")
            elif silence > timeout:
                level = max(level, WARN)
                msgs.append(f"no {name} image for {silence:.1f} s on {topic}")
        stalled = self._stalled(now, c)
        if stalled:
            level = max(level, WARN)
            msgs.append(stalled)
        for kind, m in self.errors.recent(max(5.0, 2 * param(self, "diagnostics_period"))):
            if kind != CALLBACK_ERROR:  # those are the base class's (ERROR)
                level = max(level, ERROR if kind == "fusion" else WARN)
                msgs.append(m)
        if ent_age is not None and ent_age > param(self, "entities.max_age"):
            level = max(level, WARN)
            msgs.append(f"entities are {ent_age:.0f} s old: is entity_node running? (fusing with the last ones)")
        return level, "; ".join(msgs) if msgs else "fusing", values

    def _stalled(self, now: float, counters: SyncCounters) -> str:
        """A WARN message when frames arrived in the last STALL_S seconds but nothing was fused, naming why."""
        rejected = self.errors.count(REJECTED)
        self._stall.append((now, counters, rejected))
        while len(self._stall) > 1 and now - self._stall[1][0] >= STALL_S:
            self._stall.popleft()
        t_ref, ref, rejected_ref = self._stall[0]
        arrived = counters.thermal_in + counters.rgb_in - ref.thermal_in - ref.rgb_in + rejected - rejected_ref
        silence = self.rates["fused"].silence(now)
        if now - t_ref < STALL_S or not arrived or (silence is not None and silence <= STALL_S):
            return ""
        why = stall_reasons(ref, counters, rejected - rejected_ref) or [
            f"{self.pairer.pending()} frames waiting for a partner or for the fusion worker"]
        since = f"for {silence:.1f} s" if silence is not None else "yet"
        return f"nothing fused {since} while frames arrive: " + "; ".join(why)


def _vision_type(name: str):
    """A vision_msgs message class (from apt on a robot, from the test interface package in CI)."""
    import vision_msgs.msg

    return getattr(vision_msgs.msg, name)


def main(args: list[str] | None = None) -> None:
    """Run the node alone (``ros2 run egmt_ros fusion_node``)."""
    run_node(FusionNode, args=args)


if __name__ == "__main__":
    main()
