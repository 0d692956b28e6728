"""rclpy plumbing shared by ``play`` and ``record`` (the live parts of rosbag_tools; only they import rclpy).

- ``message_class('sensor_msgs/msg/Image')`` imports the rclpy message class of a type name, only for a message of
  an installed ROS interface package (``rosbag_tools.interfaces``: a type string from a bag or the graph never
  names an arbitrary module to import);
- ``to_rclpy_qos`` / ``from_rclpy_qos`` convert QoS between rosbags (bag metadata) and rclpy, keeping history,
  depth, reliability and durability (deadline, lifespan and liveliness are left at their defaults, as the bags
  written here carry none);
- ``ros_session`` initialises rclpy and makes a node when the caller did not bring one, without rclpy's signal
  handlers; SIGINT and SIGTERM are turned into ``KeyboardInterrupt`` so the tools can finish their files.
"""

from __future__ import annotations

import importlib
import signal
from contextlib import contextmanager
from typing import Any, Iterator

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosReliability

from rosbag_tools.interfaces import interface_type
from rosbag_tools.types import QOS_RELIABLE

#: ``--qos`` choices of play: the profile a player offers. ``reliable`` keeps the last 100 messages per topic
#: for retransmission (about 3 s of a 30 Hz camera), so a subscriber that falls behind for a moment loses nothing.
PLAY_QOS: dict[str, QoSProfile] = {
    "reliable": QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE),
    "sensor": qos_profile_sensor_data,
}


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name``.

    Raises ``interfaces.UnknownMessageType`` (a ValueError; nothing imported) unless the type is a message of an
    installed ROS interface package, ImportError/AttributeError when its Python module is missing.
    """
    pkg, name = interface_type(msgtype)
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def to_rclpy_qos(profiles: list[Qos] | None) -> QoSProfile:
    """The rclpy profile a player offers for a topic recorded with ``profiles`` (reliable when there are none).

    With several publishers the weakest guarantee wins: best effort if any was best effort, volatile if any was.
    """
    if not profiles:
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    best_effort = any(p.reliability == QosReliability.BEST_EFFORT for p in profiles)
    volatile = any(p.durability != QosDurability.TRANSIENT_LOCAL for p in profiles)
    keep_all = all(p.history == QosHistory.KEEP_ALL for p in profiles)
    depth = max(1, max(p.depth for p in profiles))
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE if volatile else DurabilityPolicy.TRANSIENT_LOCAL)


def from_rclpy_qos(profile: Any) -> Qos:
    """A rosbags ``Qos`` (for bag metadata) from an rclpy QoSProfile (history, depth, reliability, durability)."""
    def pick(enum: Any, value: Any, default: Any) -> Any:
        try:
            return enum(int(value))
        except (ValueError, TypeError):
            return default

    return QOS_RELIABLE._replace(
        history=pick(QosHistory, profile.history, QosHistory.KEEP_LAST),
        depth=int(profile.depth),
        reliability=pick(QosReliability, profile.reliability, QosReliability.RELIABLE),
        durability=pick(QosDurability, profile.durability, QosDurability.VOLATILE))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def ros_session(node: Node | None, name: str) -> Iterator[Node]:
    """Yield ``node``, or initialise rclpy (no rclpy signal handlers; SIGINT/SIGTERM -> KeyboardInterrupt while
    inside, when called from the main thread) and yield a new node called ``name``, destroyed and shut down on exit."""
    if node is not None:
        yield node
        return
    ctx = rclpy.Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    old: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell starts background jobs with it ignored
        try:
            old[sig] = signal.signal(sig, _raise_interrupt)
        except ValueError:  # not the main thread: leave signals alone
            break
    own = rclpy.create_node(name, context=ctx)
    try:
        yield own
    finally:
        own.destroy_node()
        ctx.try_shutdown()
        for sig, handler in old.items():
            signal.signal(sig, handler)
