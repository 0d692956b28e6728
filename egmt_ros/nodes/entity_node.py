"""entity_node: scene entities from keyframes, published latched on /egmt/entities (vision_msgs/Classification).

The slow part of EGMT runs here, never in the fused stream: keyframes (minimum interval, scene change, maximum
rate; ``egmt_ros.entities.keyframes``) are handed to a worker thread, newest keyframe wins, and the subscriptions
never wait for it. Sources (``source`` parameter):
  ``detections`` (default, offline): the class names the detection node reports around the keyframe + ``vocabulary``;
  ``caption``: BLIP-2 captions of the thermal and RGB keyframe + an entity extractor (Flan-T5, or the rule-based
               one when ``extractor.model`` is empty) — the paper's pipeline; needs local weights;
  ``vocabulary``: only the fixed ``vocabulary`` words.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from egmt_ros.core.codec import detections_to_boxes
from egmt_ros.entities.detections import DetectionsEntitySource
from egmt_ros.entities.keyframes import KeyframePolicy
from egmt_ros.entities.sources import EntitySet, VocabularyEntitySource
from egmt_ros.fusion.stats import LatencyWindow
from egmt_ros.nodes.common import (ERROR, LATCHED_QOS, OK, REJECTED, WARN, EgmtNode, LatestSlot, ns_to_stamp, param,
                                   qos_by_name, run_node, stamp_to_ns, stamp_to_sec)

#: Encodings of /egmt/fused this node's keyframe code takes (what fusion_node publishes).
FUSED_ENCODINGS = ("bgr8", "rgb8", "mono8")
#: Camera encodings the captioner takes (source ``caption``).
CAMERA_ENCODINGS = ("mono8", "mono16", "16UC1", "8UC1", "bgr8", "rgb8")

DEFAULTS: dict[str, Any] = {
    "qos": "sensor_data",
    "source": "detections",
    "vocabulary": "",
    "vocabulary_score": 1.0,
    "max_entities": 8,
    "detections.window": 1.0,
    "detections.min_score": 0.3,
    "keyframe.min_interval": 1.0,
    "keyframe.max_interval": 10.0,
    "keyframe.max_rate": 0.5,
    "keyframe.scene_change_threshold": 0.2,
    "keyframe.method": "hist",
    "captioner.model": "",
    "captioner.prompt": "",
    "extractor.model": "",
    "device": "cpu",
    "diagnostics_period": 1.0,
}


class EntityNode(EgmtNode):
    """Keyframes -> entities -> /egmt/entities."""

    diag_label = "entities"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("entity_node", DEFAULTS, **kwargs)
        self.source_name = param(self, "source")
        self.source = self._make_source()
        self.policy = KeyframePolicy(min_interval_s=param(self, "keyframe.min_interval"),
                                     max_rate_hz=param(self, "keyframe.max_rate"),
                                     scene_change_threshold=param(self, "keyframe.scene_change_threshold"),
                                     method=param(self, "keyframe.method"),
                                     max_interval_s=param(self, "keyframe.max_interval"))
        qos = qos_by_name(param(self, "qos"))
        import vision_msgs.msg as vm

        self._vm = vm
        self.pub = self.create_publisher(vm.Classification, "/egmt/entities", LATCHED_QOS)
        self.create_subscription(Image, "/egmt/fused", self._on_fused, qos)
        self.create_subscription(vm.Detection2DArray, "/egmt/detections", self._on_detections, 10)
        self.latest: dict[str, np.ndarray] = {}
        if self.source_name == "caption":
            self.create_subscription(Image, "/thermal/image_raw", lambda m: self._keep("ir", m, "thermal"), qos)
            self.create_subscription(Image, "/rgb/image_raw", lambda m: self._keep("vi", m, "rgb"), qos)
        self.lat = LatencyWindow(50)
        self.keyframes = 0
        self.published = 0
        self.last: EntitySet | None = None
        self.error: tuple[float, str] | None = None
        self.jobs = LatestSlot()  # newest keyframe wins
        self.start()
        self.get_logger().info(f"entity source: {self.source_name}")

    def _make_source(self):
        vocab = param(self, "vocabulary")
        if self.source_name == "detections":
            return DetectionsEntitySource(vocab, param(self, "vocabulary_score"), param(self, "detections.window"),
                                          param(self, "detections.min_score"), param(self, "max_entities"))
        if self.source_name == "vocabulary":
            return VocabularyEntitySource(vocab, param(self, "vocabulary_score"))
        if self.source_name == "caption":
            from egmt_ros.entities.captioner import Blip2Captioner
            from egmt_ros.entities.extractor import get_extractor
            from egmt_ros.entities.sources import CaptionEntitySource

            if not param(self, "captioner.model"):
                raise ValueError("source 'caption' needs the parameter captioner.model (a BLIP-2 id or local folder)")
            kw = {"device": param(self, "device")}
            if param(self, "captioner.prompt"):
                kw["prompt"] = param(self, "captioner.prompt")
            captioner = Blip2Captioner(param(self, "captioner.model"), **kw)
            extractor = get_extractor(param(self, "extractor.model") or None)
            return CaptionEntitySource(captioner, extractor, param(self, "max_entities"), vocab,
                                       param(self, "vocabulary_score"))
        raise ValueError(f"unknown entity source {self.source_name!r}: use detections, caption or vocabulary")

    # ---------------------------------------------------------------- callbacks (cheap, never block)
    def _keep(self, key: str, msg: Image, topic: str) -> None:
        img = self.image_or_none(msg, CAMERA_ENCODINGS, topic)
        if img is not None:
            self.latest[key] = img.copy()

    def _on_detections(self, msg) -> None:
        if isinstance(self.source, DetectionsEntitySource):
            dets = [(c, score) for c, score, *_ in detections_to_boxes(msg) if c]
            self.source.add(stamp_to_sec(msg.header.stamp), dets)

    def _on_fused(self, msg: Image) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        img = self.image_or_none(msg, FUSED_ENCODINGS, "/egmt/fused")
        if img is None:
            return
        ok, _reason = self.policy.should_process(img[::4, ::4], stamp * 1e-9)
        if not ok:
            return
        self.keyframes += 1
        images = {"fused": img.copy()} | dict(self.latest)  # one atomic copy: callbacks may add meanwhile
        self.jobs.put((stamp, images))

    # ---------------------------------------------------------------- worker
    def wake_worker(self) -> None:
        self.jobs.wake()

    def work_once(self) -> None:
        job = self.jobs.take()
        if job is None:
            return
        stamp, images = job
        t0 = time.perf_counter()
        try:
            ents = self.source.extract(images.get("ir"), images.get("vi"), stamp * 1e-9, fused=images.get("fused"))
        except Exception as exc:  # noqa: BLE001 - report, keep the last entities, keep running
            self.error = (time.monotonic(), f"entity extraction failed: {exc}")
            self.get_logger().error(self.error[1], throttle_duration_sec=5.0)
            return
        self.lat.add(time.perf_counter() - t0)
        self.publish(ents, stamp)

    def publish(self, ents: EntitySet, stamp_ns: int) -> None:
        """Publish an entity set latched, stamped exactly with its keyframe's stamp (integer ns)."""
        msg = self._vm.Classification()
        msg.header.stamp = ns_to_stamp(stamp_ns)
        for e in ents.entities:
            h = self._vm.ObjectHypothesis()
            h.class_id, h.score = e.text, float(e.score)
            msg.results.append(h)
        self.pub.publish(msg)
        self.last = ents
        self.published += 1

    # ---------------------------------------------------------------- diagnostics
    def status(self) -> tuple[bytes, str, dict[str, Any]]:
        now = self.get_clock().now().nanoseconds * 1e-9
        p50, p99 = self.lat.percentiles_ms(50, 99)
        values: dict[str, Any] = {"source": self.source_name, "keyframes": self.keyframes,
                                  "published": self.published, "extract_ms_p50": p50, "extract_ms_p99": p99,
                                  "entities": ",".join(self.last.texts) if self.last else "",
                                  "entity_age_s": self.last.age(now) if self.last else "none yet"}
        level, msgs = OK, []
        if self.keyframes == 0:
            level, msgs = WARN, ["no keyframe yet: is /egmt/fused being published?"]
        if self.error is not None and time.monotonic() - self.error[0] < 10.0:
            level = ERROR
            msgs.append(self.error[1])
        rejected = [m for kind, m in self.errors.recent(self.error_hold_s) if kind == REJECTED]
        if rejected:  # a bad image on an input topic: reported as ERROR, the node keeps running
            level = ERROR
            msgs += rejected[-3:]
        return level, "; ".join(msgs) if msgs else "ok", values


def main(args: list[str] | None = None) -> None:
    """Run the node alone (``ros2 run egmt_ros entity_node``)."""
    run_node(EntityNode, args=args)


if __name__ == "__main__":
    main()
