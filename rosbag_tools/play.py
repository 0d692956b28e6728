"""Play a rosbag2 bag into a live ROS 2 graph with rclpy (a small ``ros2 bag play`` for machines without rosbag2).

    python -m rosbag_tools.play BAG [--rate X] [--loop] [--start S] [--duration S] [--topics T ...] [--clock]
        [--qos bag|reliable|sensor] [--wait-for-subscribers S] [--wait-for TOPIC[:NODE] ...]

Messages go out in bag-time order, each at ``first wall time + (bag time - first bag time) / rate``; their raw
CDR bytes are handed to ``Publisher.publish`` unchanged (rclpy publishes ``bytes`` as a serialized message), so
header stamps are the recorded ones. ``--clock`` also publishes rosgraph_msgs/Clock on ``/clock`` with the bag
time (before a message and while waiting, at most ``clock_hz`` times a second), for nodes with ``use_sim_time``. ``--qos bag``
(default) offers the QoS recorded in the bag (reliable when the bag has none). Topics whose message package is
not installed are skipped with a warning. Ends at the end of the bag (after reliable publishers' data is
acknowledged, up to ``--ack-timeout`` s, default 5, and ``--linger`` s, default 1, with best-effort publishers:
a subscriber drops what it has not yet taken from a publisher that leaves), or on SIGINT/SIGTERM, both with exit
status 0; a file that is not a bag, or a bag with nothing to play, ends with a one-line error and exit status 1.

Library form: ``play_bag(path, rate=1.0, ..., node=None)``; with ``node`` the publishers are made on it (rclpy
already initialised by the caller), otherwise a private context and node are used.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSCompatibility, QoSProfile, ReliabilityPolicy, qos_check_compatible
from tqdm import tqdm

from rosbag_tools.bagio import BagCorruptError, BagReader
from rosbag_tools.live import PLAY_QOS, message_class, ros_session, to_rclpy_qos
from rosbag_tools.types import CLOCK, make_clock, serialize


#: Time limit of ``--wait-for`` when ``--wait-for-subscribers`` is not given (s).
WAIT_FOR_DEFAULT_S = 120.0


@dataclass
class PlayResult:
    """What was played: messages per topic, loops completed, whether it was interrupted, damage found."""

    published: dict[str, int] = field(default_factory=dict)
    loops: int = 0
    interrupted: bool = False
    skipped_topics: list[str] = field(default_factory=list)
    error: str | None = None
    wall_s: float = 0.0

    @property
    def total(self) -> int:
        """Messages published in all."""
        return sum(self.published.values())


def _sleep_until(target: float, stop: threading.Event | None, tick: Any | None, tick_period: float) -> bool:
    """Sleep until monotonic ``target`` in short slices, calling ``tick()`` every ``tick_period``; False if stopped."""
    while True:
        if stop is not None and stop.is_set():
            return False
        now = time.monotonic()
        if now >= target:
            return True
        if tick is not None:
            tick()
        time.sleep(min(target - now, tick_period, 0.05))


def play_bag(path: str | Path, rate: float = 1.0, loop: bool = False, start: float = 0.0,
             duration: float | None = None, topics: Sequence[str] | None = None, clock: bool = False,
             qos: str = "bag", node: Node | None = None, wait_for_subscribers: float = 0.0, delay: float = 0.0,
             ack_timeout: float = 5.0, linger: float = 1.0, clock_hz: float = 40.0, progress: bool = True,
             stop: threading.Event | None = None, wait_for: Sequence[str] = ()) -> PlayResult:
    """Publish the messages of the bag ``path`` with its timing (see the module docstring).

    ``start``/``duration`` are seconds of bag time from the bag's first message; ``topics`` limits the topics.
    ``wait_for_subscribers`` waits up to that many seconds for every publisher to be matched before the first
    message (with every subscription the graph shows that can match it, and at least one: a subscriber that the
    graph already shows, such as a recorder that subscribes once it sees the player's topics, gets the first
    message too; one of another type or with an incompatible QoS is not waited for), then ``delay`` seconds more
    (time for the transports to connect). ``wait_for`` (``TOPIC`` or
    ``TOPIC:NODE`` items) first waits, within the same time limit, until each TOPIC has a subscription (of node
    NODE when given) in the ROS graph: a graph that is still starting (nodes load their models before they
    subscribe) gets the bag from its first message. With ``wait_for``, only the publishers of the topics it names
    or that have a subscription in the graph must then be matched (a bag topic nobody reads, such as camera_info,
    does not hold playback to the limit).
    What is still missing at the limit is logged, and playback starts anyway. At the end, reliable publishers
    get up to ``ack_timeout`` seconds for their subscribers to acknowledge everything; best-effort ones, which get
    no acknowledgement, stay ``linger`` seconds (a subscriber drops the messages of a publisher that left which it
    has not taken yet: a loaded recorder lost the last frame of a 20-pair bag in 1 of 12 runs). ``stop`` (an Event) ends
    playback early; SIGINT/SIGTERM (KeyboardInterrupt) end it too; both are reported as ``interrupted``. A damaged
    bag plays every readable message and reports the damage in ``error``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if qos not in ("bag", *PLAY_QOS):
        raise ValueError(f"qos must be 'bag', 'reliable' or 'sensor', got {qos!r}")
    reader = BagReader(path)
    if not reader.topics:
        raise ValueError(f"{path}: not a readable bag ({reader.damaged or 'it has no topics'})")
    wanted = [t for t in reader.topics if not topics or t in topics]
    missing = [t for t in (topics or []) if t not in reader.topics]
    if missing:
        raise ValueError(f"{path}: topic(s) not in the bag: {', '.join(missing)} (it has {', '.join(reader.topics)})")
    result = PlayResult()
    t_begin = time.monotonic()
    with ros_session(node, "egmt_bag_player") as n:
        pubs: dict[str, Any] = {}
        for topic in wanted:
            try:
                cls = message_class(reader.topics[topic])
            except (ImportError, AttributeError, ValueError):
                n.get_logger().warning(f"skipping {topic}: message type {reader.topics[topic]} is not installed")
                result.skipped_topics.append(topic)
                continue
            profile = to_rclpy_qos(reader.qos.get(topic)) if qos == "bag" else PLAY_QOS[qos]
            pubs[topic] = n.create_publisher(cls, topic, profile)
        if not pubs:
            n.get_logger().error(f"{path}: nothing to play (no topic with an installed message type)")
            result.wall_s = time.monotonic() - t_begin
            return result
        clock_pub = None
        if clock:
            clock_pub = n.create_publisher(message_class(CLOCK), "/clock",
                                           QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        try:
            if wait_for_subscribers > 0 and pubs:
                deadline = time.monotonic() + wait_for_subscribers
                stopped = lambda: stop is not None and stop.is_set()  # noqa: E731
                while _missing_subscribers(n, wait_for) and time.monotonic() < deadline and not stopped():
                    time.sleep(0.05)
                if _missing_subscribers(n, wait_for):
                    n.get_logger().warning(f"playing anyway: after {wait_for_subscribers:g} s still no subscription "
                                           f"for {', '.join(_missing_subscribers(n, wait_for))}")
                named = {item.partition(":")[0] for item in wait_for}

                def unmatched() -> list[str]:
                    must = [t for t in pubs if not wait_for or t in named or n.count_subscribers(t) > 0]
                    return _unmatched(n, pubs, must, reader.topics)

                while unmatched() and time.monotonic() < deadline and not stopped():
                    time.sleep(0.02)
                missing = unmatched()
                if missing and not stopped():
                    n.get_logger().warning(f"playing anyway: after {wait_for_subscribers:g} s not every publisher is "
                                           f"matched: {'; '.join(missing)}")
            if delay > 0:
                _sleep_until(time.monotonic() + delay, stop, None, 0.05)
            total = sum(reader.counts.get(t, 0) for t in pubs) if reader.damaged is None else None
            while True:
                _play_once(reader, pubs, clock_pub, rate, start, duration, clock_hz, progress, stop, result, total)
                if stop is not None and stop.is_set():
                    result.interrupted = True
                if result.error or result.interrupted or not loop:
                    break
            for p in pubs.values():
                if p.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                    p.wait_for_all_acked(Duration(seconds=ack_timeout))
            if not result.interrupted and any(p.qos_profile.reliability != ReliabilityPolicy.RELIABLE
                                              for p in pubs.values()):
                _sleep_until(time.monotonic() + linger, stop, None, 0.05)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            for p in list(pubs.values()) + ([clock_pub] if clock_pub is not None else []):
                n.destroy_publisher(p)
    result.wall_s = time.monotonic() - t_begin
    return result


def _missing_subscribers(node: Node, wait_for: Sequence[str]) -> list[str]:
    """The ``TOPIC`` / ``TOPIC:NODE`` items of ``wait_for`` that have no such subscription in the graph yet."""
    missing = []
    for item in wait_for:
        topic, _, name = item.partition(":")
        if not any(not name or info.node_name == name for info in node.get_subscriptions_info_by_topic(topic)):
            missing.append(item)
    return missing


def _unmatched(node: Node, pubs: dict[str, Any], topics: Sequence[str], types: dict[str, str]) -> list[str]:
    """The publishers of ``topics`` not yet matched with every subscription of the graph that can match them (at
    least one), each as ``TOPIC: m of n matched (node, ...)``. A subscription of another type, or whose QoS is
    incompatible with the publisher's (a reliable one for a best-effort publisher), never matches: it is named as
    ignored, not waited for."""
    out = []
    for topic in topics:
        pub = pubs[topic]
        can, cannot = [], []
        for info in node.get_subscriptions_info_by_topic(topic):
            compat, why = qos_check_compatible(pub.qos_profile, info.qos_profile)
            if info.topic_type != types[topic]:
                cannot.append(f"{info.node_name}: type {info.topic_type}")
            elif compat == QoSCompatibility.ERROR:
                cannot.append(f"{info.node_name}: {why.removeprefix('ERROR: ').rstrip(';')}")
            else:
                can.append(info.node_name)
        matched = pub.get_subscription_count()
        if matched < max(1, len(can)):
            out.append(f"{topic}: {matched} of {max(1, len(can))} subscriptions matched ({', '.join(can) or 'none'})"
                       + (f", ignored as they cannot match: {', '.join(cannot)}" if cannot else ""))
    return out


def _play_once(reader: BagReader, pubs: dict[str, Any], clock_pub: Any | None, rate: float, start: float,
               duration: float | None, clock_hz: float, progress: bool, stop: threading.Event | None,
               result: PlayResult, total: int | None) -> None:
    """One pass over the bag (updates ``result``)."""
    base = reader.start_ns if reader.damaged is None else None
    lo = None if base is None else base + int(start * 1e9)
    hi = None if base is None or duration is None else lo + int(duration * 1e9)  # type: ignore[operator]
    t0_bag: int | None = None
    t0_wall = 0.0
    clock_sent = -math.inf  # monotonic time of the last /clock message

    def publish_clock(bag_ns: int | None = None) -> None:
        """/clock with the bag time, at most ``clock_hz`` times a second (each one costs every use_sim_time node a
        callback: at one per message, 1.1 s of CPU per 10 s of a 22 Hz camera pair in a node that does nothing
        else)."""
        nonlocal clock_sent
        if clock_pub is None or t0_bag is None or time.monotonic() - clock_sent < 1.0 / clock_hz:
            return
        clock_sent = time.monotonic()
        now_ns = bag_ns if bag_ns is not None else t0_bag + int((clock_sent - t0_wall) * rate * 1e9)
        clock_pub.publish(serialize(make_clock(now_ns), CLOCK))

    bar = tqdm(total=total, desc="play", unit="msg", disable=not progress, file=sys.stderr)
    try:
        for m in reader.messages(list(pubs), start_ns=lo, stop_ns=hi):
            if base is None:  # salvage: no index, count from the first message read
                base = m.timestamp
                lo = base + int(start * 1e9)
                hi = None if duration is None else lo + int(duration * 1e9)
            if m.timestamp < lo or (hi is not None and m.timestamp >= hi):  # type: ignore[operator]
                continue
            if t0_bag is None:
                t0_bag, t0_wall = m.timestamp, time.monotonic()
            target = t0_wall + (m.timestamp - t0_bag) / 1e9 / rate
            tick = publish_clock if clock_pub is not None else None
            if not _sleep_until(target, stop, tick, 1.0 / clock_hz):
                return
            publish_clock(m.timestamp)
            pubs[m.topic].publish(m.data)
            result.published[m.topic] = result.published.get(m.topic, 0) + 1
            bar.update(1)
        result.loops += 1
    except BagCorruptError as exc:
        result.error = str(exc)
    finally:
        bar.close()


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m rosbag_tools.play", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="bag directory or .mcap/.db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    p.add_argument("--loop", action="store_true", help="play again and again until interrupted")
    p.add_argument("--start", type=float, default=0.0, help="seconds into the bag to start at")
    p.add_argument("--duration", type=float, default=None, help="seconds of bag time to play")
    p.add_argument("--topics", nargs="+", default=None, help="only these topics")
    p.add_argument("--clock", action="store_true", help="publish /clock (rosgraph_msgs/Clock) with bag time")
    p.add_argument("--clock-hz", type=float, default=40.0, help="/clock messages per second at most (default 40, as ros2 bag play)")
    p.add_argument("--qos", choices=("bag", *PLAY_QOS), default="bag",
                   help="offered QoS: as recorded in the bag (default), reliable (keep last 100), or sensor data "
                        "(best effort, keep last 5)")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a subscriber on every topic before playing")
    p.add_argument("--wait-for", action="append", default=[], metavar="TOPIC[:NODE]",
                   help="(repeatable) before playing, wait until TOPIC has a subscription (of node NODE) in the "
                        "graph, e.g. /rgb/image_raw:fusion_node; time limit --wait-for-subscribers (default then "
                        f"{WAIT_FOR_DEFAULT_S:g} s)")
    p.add_argument("--delay", type=float, default=0.0, metavar="S",
                   help="wait S seconds more before the first message (after --wait-for-subscribers)")
    p.add_argument("--ack-timeout", type=float, default=5.0, metavar="S",
                   help="at the end, wait up to S seconds for reliable subscribers to acknowledge every message")
    p.add_argument("--linger", type=float, default=1.0, metavar="S",
                   help="at the end, keep best-effort publishers S seconds more (a subscriber drops what it has not "
                        "yet taken from a publisher that leaves)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 at the end of the bag or on SIGINT/SIGTERM, 3 for a damaged bag, 1 for bad input or when
    nothing could be played (not a bag, no installed message type, an empty range)."""
    args = build_parser().parse_args(argv)
    try:
        res = play_bag(args.bag, rate=args.rate, loop=args.loop, start=args.start, duration=args.duration,
                       topics=args.topics, clock=args.clock, qos=args.qos, clock_hz=args.clock_hz,
                       wait_for_subscribers=args.wait_for_subscribers or (WAIT_FOR_DEFAULT_S if args.wait_for
                                                                          else 0.0),
                       wait_for=args.wait_for, delay=args.delay,
                       ack_timeout=args.ack_timeout, linger=args.linger, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 0
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = "interrupted" if res.interrupted else "done"
    print(f"{state}: published {res.total} message(s) in {res.wall_s:.2f} s "
          f"({', '.join(f'{t} {c}' for t, c in res.published.items())}), loops {res.loops}", flush=True)
    if res.error:
        print(f"error: {res.error}", file=sys.stderr)
        return 3
    if not res.published and not res.interrupted:
        why = (f"no message type installed for {', '.join(res.skipped_topics)}" if res.skipped_topics
               else "no message in the selected range")
        print(f"error: {args.bag}: nothing played: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
