"""Record topics of a live ROS 2 graph into a rosbag2 bag with rclpy (a small ``ros2 bag record``).

    python -m rosbag_tools.record --topics T1 T2 ... --out BAG [--duration S] [--storage mcap|sqlite3]

Each topic is subscribed as soon as the graph shows its type (``get_topic_names_and_types``), with a *raw*
subscription: the serialized CDR is written to the bag untouched. The bag timestamp of a message is its
**receive time** (``MessageInfo['received_timestamp']``, system clock, ns), as rosbag2 does; evaluate uses it for
latency. QoS adapts to the publishers like rosbag2: reliable only if every publisher is reliable, transient local
only if every publisher is; the publishers' QoS is stored as the offered profile. Types must be known to
``rosbag_tools.types.typestore()`` (ROS 2 Kilted + vision_msgs) and importable in rclpy.

Stops after ``--duration`` seconds (counted from the start), or on SIGINT/SIGTERM; the bag is always closed
properly (metadata.yaml written). Prints ``recording: subscribed <topic>`` as each topic is subscribed.

Library form: ``record_topics(topics, out, duration=None, storage='mcap', node=None, stop=None)``; with ``node`` the
function spins that node itself (it must not be in another executor meanwhile).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from rosbag_tools.bagio import STORAGES, BagWriter
from rosbag_tools.live import from_rclpy_qos, message_class, ros_session
from rosbag_tools.types import typestore


@dataclass
class RecordResult:
    """What was recorded: messages per topic, topics never seen, whether it was interrupted."""

    path: str
    counts: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0


def subscription_qos(endpoints: Sequence[Any], depth: int = 100) -> QoSProfile:
    """The QoS a recorder should request given the publishers' endpoint infos (rosbag2's adaptive rule)."""
    profiles = [e.qos_profile for e in endpoints]
    reliable = bool(profiles) and all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
    latched = bool(profiles) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
    return QoSProfile(depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def record_topics(topics: Sequence[str], out: str | Path, duration: float | None = None, storage: str = "mcap",
                  node: Node | None = None, stop: threading.Event | None = None,
                  on_subscribed: Callable[[str], None] | None = None, progress: bool = True) -> RecordResult:
    """Record ``topics`` into a new bag ``out`` until ``duration`` seconds passed, ``stop`` is set, or SIGINT/SIGTERM.

    ``on_subscribed(topic)`` is called when a topic's subscription is made. Returns counts per topic; topics that
    never appeared are listed in ``missing`` (the bag then has no connection for them).
    """
    if not topics:
        raise ValueError("no topics to record")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if Path(out).exists():
        raise FileExistsError(f"{out} exists already; record never overwrites a bag")
    result = RecordResult(path=str(out), counts={t: 0 for t in topics})
    t_begin = time.monotonic()
    subs: dict[str, Any] = {}
    warned: set[str] = set()
    with ros_session(node, "egmt_bag_recorder") as n, BagWriter(out, storage) as bag:
        executor = SingleThreadedExecutor(context=n.context)
        executor.add_node(n)

        def make_callback(topic: str) -> Callable[[bytes, Any], None]:
            def on_message(data: bytes, info: Any) -> None:
                stamp = int(info.get("received_timestamp", 0)) if isinstance(info, dict) else 0
                bag.write(topic, stamp if stamp > 0 else time.time_ns(), data)
                result.counts[topic] += 1
            return on_message

        def discover() -> None:
            known = dict(n.get_topic_names_and_types())
            for topic in topics:
                if topic in subs or topic not in known or not known[topic]:
                    continue
                msgtype = known[topic][0]
                try:
                    cls = message_class(msgtype)
                    typestore().get_msgdef(msgtype)
                except Exception as exc:  # noqa: BLE001 - unknown to rclpy or to the typestore
                    if topic not in warned:
                        n.get_logger().warning(f"cannot record {topic} ({msgtype}): {exc}")
                        warned.add(topic)
                    continue
                endpoints = n.get_publishers_info_by_topic(topic)
                bag.add_topic(topic, msgtype, [from_rclpy_qos(e.qos_profile) for e in endpoints] or None)
                subs[topic] = n.create_subscription(cls, topic, make_callback(topic), subscription_qos(endpoints),
                                                    raw=True)
                result.types[topic] = msgtype
                print(f"recording: subscribed {topic} ({msgtype})", flush=True)
                if on_subscribed is not None:
                    on_subscribed(topic)

        last_discovery = 0.0
        last_report = time.monotonic()
        try:
            while not (stop is not None and stop.is_set()):
                now = time.monotonic()
                if duration is not None and now - t_begin >= duration:
                    break
                if len(subs) < len(topics) and now - last_discovery > 0.1:
                    discover()
                    last_discovery = now
                executor.spin_once(timeout_sec=0.02)
                if progress and now - last_report >= 2.0:
                    last_report = now
                    print("recording: " + ", ".join(f"{t} {c}" for t, c in result.counts.items()),
                          file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            executor.remove_node(n)
            executor.shutdown(timeout_sec=0.5)
            for s in subs.values():
                n.destroy_subscription(s)
    result.missing = [t for t in topics if t not in subs]
    result.wall_s = time.monotonic() - t_begin
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m rosbag_tools.record", description=__doc__.split("\n\n")[0])
    p.add_argument("--topics", nargs="+", required=True, help="topics to record")
    p.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until SIGINT)")
    p.add_argument("--storage", choices=STORAGES, default="mcap")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 when the bag was closed properly (end of duration or SIGINT/SIGTERM)."""
    args = build_parser().parse_args(argv)
    try:
        res = record_topics(args.topics, args.out, args.duration, args.storage, progress=not args.no_progress)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"recorded {sum(res.counts.values())} message(s) in {res.wall_s:.1f} s to {res.path}: "
          + ", ".join(f"{t} {c}" for t, c in res.counts.items())
          + (f"; never seen: {', '.join(res.missing)}" if res.missing else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
