"""Pairing thermal and RGB frames by header stamp (ROS-free).

Stamps are integer nanoseconds end to end (``sec * 10**9 + nanosec``), so the fused image carries its RGB frame's
stamp exactly. Semantics follow message_filters' ApproximateTimeSynchronizer for two inputs with a ``slop``, with
one difference that a robot needs: when the consumer (the fusion model) is slower than the cameras, only the newest
pair is kept. Older pairs are counted as ``dropped`` instead of queueing without bound, and frames that never found
a partner are counted as ``unmatched``. Memory is bounded by ``queue_size`` per input.

Time is allowed to misbehave (bag replays, ``--loop``, sim-time resets, a camera clock glitch):

- a frame at most ``reorder_window`` older than the newest pair still pairs (out-of-order delivery keeps its pairs);
- an older frame is ``stale``; ``JUMP_FRAMES`` stale frames in a row mean time jumped back (a replay or loop): the
  pairer resets (queues and newest-pair stamp cleared), counts it and pairs the new timeline at once. Stale frames
  interleaved with good ones (a second, old publisher) never reset it;
- a frame stamped more than ``max_future`` ahead of the caller's clock is rejected as ``future`` (never paired, so
  one stamp +1 day cannot make every later frame stale);
- :meth:`StampPairer.reset` is also what a node calls when its clock jumps back (sim-time reset).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

NS_PER_S = 1_000_000_000
#: Stale frames in a row that mean time jumped back (a replay restarted): reset and pair the new timeline.
JUMP_FRAMES = 3
#: Why a frame did not become a pair, as named by :func:`stall_reasons`.
REASONS = ("stale", "unmatched", "future")


def seconds_to_ns(seconds: float, name: str = "duration") -> int:
    """A finite, non-negative duration in seconds -> integer nanoseconds; ValueError naming ``name`` otherwise."""
    s = float(seconds)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"{name} must be a finite number >= 0 s, got {seconds!r}")
    return round(s * NS_PER_S)


class _Duration:
    """A duration attribute set in seconds (finite, >= 0, else ValueError naming it) and kept as integer ns in
    ``_<name>_ns``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj, f"_{self.name}_ns") / NS_PER_S

    def __set__(self, obj: Any, seconds: float) -> None:
        setattr(obj, f"_{self.name}_ns", seconds_to_ns(seconds, f"sync {self.name.replace('_', ' ')}"))


@dataclass
class Stamped(Generic[T]):
    """A payload with its header stamp (integer ns) and the local receive time (monotonic seconds)."""

    stamp: int
    data: T
    received: float = 0.0


@dataclass
class Pair:
    """A matched thermal/RGB pair. ``stamp`` is the RGB frame's stamp in ns (the fused image's stamp)."""

    thermal: Stamped[Any]
    rgb: Stamped[Any]

    @property
    def stamp(self) -> int:
        return self.rgb.stamp

    @property
    def skew(self) -> float:
        """Thermal stamp minus RGB stamp, seconds."""
        return (self.thermal.stamp - self.rgb.stamp) / NS_PER_S


@dataclass
class SyncCounters:
    """Running counts, for diagnostics (a consistent copy: :meth:`StampPairer.snapshot`)."""

    thermal_in: int = 0
    rgb_in: int = 0
    paired: int = 0
    dropped: int = 0      # pairs replaced by a newer pair before the consumer took them
    unmatched: int = 0    # frames discarded without a partner
    stale: int = 0        # frames older than the newest pair by more than the reorder window
    future: int = 0       # frames stamped more than max_future ahead of the clock
    resets: int = 0       # time jumped back: queues cleared, new timeline paired
    last_stale_age: float = 0.0
    last_future_lead: float = 0.0
    last_reset: str = ""


class StampPairer:
    """Thread-safe newest-pair-wins stamp synchroniser for two streams.

    ``add_thermal``/``add_rgb`` are called from subscription callbacks; ``take`` from the worker.
    A frame pairs with the partner frame closest in stamp if ``|dt| <= slop``. When it pairs, both frames are
    removed, and every frame older than the pair by more than ``reorder_window`` (counted as unmatched).
    Durations are given in seconds; ``max_future`` <= 0 turns the future check off.
    """

    def __init__(self, slop: float = 0.02, queue_size: int = 10, reorder_window: float = 0.1,
                 max_future: float = 10.0) -> None:
        if queue_size < 1:
            raise ValueError(f"sync queue_size must be >= 1, got {queue_size}")
        self.slop = slop
        self.reorder_window = reorder_window
        self.max_future = max_future
        self.queue_size = queue_size
        self._q: dict[str, deque[Stamped[Any]]] = {"thermal": deque(), "rgb": deque()}
        self._slot: Pair | None = None
        self._last_pair_stamp: int | None = None
        self._stale_run = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.counters = SyncCounters()

    slop = _Duration()
    reorder_window = _Duration()

    @property
    def max_future(self) -> float:
        return self._future_ns / NS_PER_S

    @max_future.setter
    def max_future(self, seconds: float) -> None:
        s = float(seconds)
        if math.isnan(s):
            raise ValueError(f"sync max_future must be a number (<= 0: off), got {seconds!r}")
        self._future_ns = 0 if s <= 0 else seconds_to_ns(min(s, 1e9), "sync max_future")

    def add_thermal(self, item: Stamped[Any], now_ns: int | None = None) -> Pair | None:
        """Add a thermal frame (``now_ns``: the clock stamps are compared with); returns the pair it completed."""
        return self._add("thermal", "rgb", item, now_ns)

    def add_rgb(self, item: Stamped[Any], now_ns: int | None = None) -> Pair | None:
        """Add an RGB frame (``now_ns``: the clock stamps are compared with); returns the pair it completed."""
        return self._add("rgb", "thermal", item, now_ns)

    def reset(self, why: str) -> None:
        """Forget the queues and the newest pair stamp (time jumped back); counted with its reason."""
        with self._lock:
            self._reset(why)

    def _reset(self, why: str) -> None:
        c = self.counters
        c.unmatched += len(self._q["thermal"]) + len(self._q["rgb"])
        self._q = {"thermal": deque(), "rgb": deque()}
        self._last_pair_stamp = None
        self._stale_run = 0
        c.resets += 1
        c.last_reset = why

    def _add(self, side: str, other: str, item: Stamped[Any], now_ns: int | None) -> Pair | None:
        with self._lock:
            c = self.counters
            if side == "thermal":
                c.thermal_in += 1
            else:
                c.rgb_in += 1
            if self._future_ns and now_ns is not None and item.stamp - now_ns > self._future_ns:
                c.future += 1
                c.last_future_lead = (item.stamp - now_ns) / NS_PER_S
                return None
            last = self._last_pair_stamp
            if last is not None and item.stamp < last - max(self._slop_ns, self._reorder_window_ns):
                c.stale += 1
                c.last_stale_age = (last - item.stamp) / NS_PER_S
                self._stale_run += 1
                if self._stale_run < JUMP_FRAMES:
                    return None
                self._reset(f"time jumped back {c.last_stale_age:.3f} s ({JUMP_FRAMES} stale frames in a row)")
            else:
                self._stale_run = 0
            partners = self._q[other]
            best = min(partners, key=lambda p: abs(p.stamp - item.stamp), default=None)
            if best is None or abs(best.stamp - item.stamp) > self._slop_ns:
                # the other side's frames this side has passed (in-order delivery brings them no partner); this
                # side's own queue waits for a lagging other side, bounded by queue_size (as message_filters)
                self._expire(item.stamp - self._slop_ns - self._reorder_window_ns, (other,))
                q = self._q[side]
                q.append(item)
                while len(q) > self.queue_size:
                    q.popleft()
                    c.unmatched += 1
                return None
            pair = Pair(thermal=item, rgb=best) if side == "thermal" else Pair(thermal=best, rgb=item)
            partners.remove(best)
            newest = pair.stamp if last is None else max(last, pair.stamp)
            self._expire(newest - self._reorder_window_ns)
            c.paired += 1
            self._last_pair_stamp = newest
            if self._slot is not None:
                c.dropped += 1
                if self._slot.stamp > pair.stamp:  # a late (reordered) pair never replaces a newer one
                    return pair
            self._slot = pair
            self._ready.notify_all()
            return pair

    def _expire(self, cut: int, sides: tuple[str, ...] = ("thermal", "rgb")) -> None:
        """Drop queued frames of ``sides`` stamped before ``cut`` (counted as unmatched)."""
        for name in sides:
            q = self._q[name]
            if q and min(x.stamp for x in q) < cut:
                kept = deque(x for x in q if x.stamp >= cut)
                self.counters.unmatched += len(q) - len(kept)
                self._q[name] = kept

    def take(self, timeout: float | None = None) -> Pair | None:
        """The newest pair not yet taken (waits up to ``timeout`` s; None if there is none)."""
        with self._lock:
            if self._slot is None and timeout:
                self._ready.wait(timeout)
            pair, self._slot = self._slot, None
            return pair

    def pending(self) -> int:
        """Frames waiting for a partner (bounded by 2 x queue_size)."""
        with self._lock:
            return len(self._q["thermal"]) + len(self._q["rgb"])

    def snapshot(self) -> SyncCounters:
        """A consistent copy of the counters."""
        with self._lock:
            return dataclasses.replace(self.counters)

    def wake(self) -> None:
        """Wake a worker blocked in :meth:`take` (used at shutdown)."""
        with self._lock:
            self._ready.notify_all()


def stall_reasons(before: SyncCounters, after: SyncCounters, rejected: int = 0) -> list[str]:
    """Why frames that arrived between two snapshots did not become fused pairs: each of ``stale``,
    ``unmatched``, ``future`` (pairer counts) and ``rejected`` (frames the caller refused: bad encoding or image)
    that grew, with how many and a hint."""
    out = []
    if after.stale > before.stale:
        out.append(f"stale: {after.stale - before.stale} frames up to {after.last_stale_age:.1f} s older than the "
                   "newest pair")
    if after.unmatched > before.unmatched:
        out.append(f"unmatched: {after.unmatched - before.unmatched} frames without a partner within the slop "
                   f"(thermal and RGB stamps apart?)")
    if after.future > before.future:
        out.append(f"future: {after.future - before.future} frames stamped up to {after.last_future_lead:.1f} s "
                   "ahead of the node clock (camera clock or use_sim_time mismatch?)")
    if rejected:
        out.append(f"rejected: {rejected} frames with a bad encoding or image")
    return out
