"""Pairing thermal and RGB frames by header stamp (ROS-free).

Semantics follow message_filters' ApproximateTimeSynchronizer for two inputs with a ``slop``, with one
difference that a robot needs: when the consumer (the fusion model) is slower than the cameras, only the
newest pair is kept. Older pairs are counted as ``dropped`` instead of queueing without bound, and frames
that never found a partner are counted as ``unmatched``. Memory is bounded by ``queue_size`` per input.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Stamped(Generic[T]):
    """A payload with its header stamp in seconds and the local receive time (monotonic seconds)."""

    stamp: float
    data: T
    received: float = 0.0


@dataclass
class Pair:
    """A matched thermal/RGB pair. ``stamp`` is the RGB frame's stamp (the fused image's stamp)."""

    thermal: Stamped[Any]
    rgb: Stamped[Any]

    @property
    def stamp(self) -> float:
        return self.rgb.stamp

    @property
    def skew(self) -> float:
        """Thermal stamp minus RGB stamp, seconds."""
        return self.thermal.stamp - self.rgb.stamp


@dataclass
class SyncCounters:
    """Running counts, for diagnostics."""

    thermal_in: int = 0
    rgb_in: int = 0
    paired: int = 0
    dropped: int = 0      # pairs replaced by a newer pair before the consumer took them
    unmatched: int = 0    # frames discarded without a partner
    stale: int = 0        # frames older than the last pair (late or out-of-order stamps)
    last_stale_age: float = 0.0
    extra: dict = field(default_factory=dict)


class StampPairer:
    """Thread-safe newest-pair-wins stamp synchroniser for two streams.

    ``add_thermal``/``add_rgb`` are called from subscription callbacks; ``take`` from the worker.
    A frame pairs with the partner frame closest in stamp if ``|dt| <= slop``. When it pairs, both frames
    and every older frame in either queue are removed (older ones count as unmatched).
    """

    def __init__(self, slop: float = 0.02, queue_size: int = 10) -> None:
        if slop < 0:
            raise ValueError(f"sync slop must be >= 0 s, got {slop}")
        if queue_size < 1:
            raise ValueError(f"sync queue_size must be >= 1, got {queue_size}")
        self.slop = slop
        self.queue_size = queue_size
        self._q: dict[str, deque[Stamped[Any]]] = {"thermal": deque(), "rgb": deque()}
        self._slot: Pair | None = None
        self._last_pair_stamp: float | None = None
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.counters = SyncCounters()

    def add_thermal(self, item: Stamped[Any]) -> Pair | None:
        """Add a thermal frame; returns the pair it completed, if any."""
        return self._add("thermal", "rgb", item)

    def add_rgb(self, item: Stamped[Any]) -> Pair | None:
        """Add an RGB frame; returns the pair it completed, if any."""
        return self._add("rgb", "thermal", item)

    def _add(self, side: str, other: str, item: Stamped[Any]) -> Pair | None:
        with self._lock:
            c = self.counters
            if side == "thermal":
                c.thermal_in += 1
            else:
                c.rgb_in += 1
            if self._last_pair_stamp is not None and item.stamp < self._last_pair_stamp - self.slop:
                c.stale += 1
                c.last_stale_age = self._last_pair_stamp - item.stamp
                return None
            partners = self._q[other]
            best = min(partners, key=lambda p: abs(p.stamp - item.stamp), default=None)
            if best is None or abs(best.stamp - item.stamp) > self.slop:
                q = self._q[side]
                q.append(item)
                while len(q) > self.queue_size:
                    q.popleft()
                    c.unmatched += 1
                return None
            pair = Pair(thermal=item, rgb=best) if side == "thermal" else Pair(thermal=best, rgb=item)
            cut = max(best.stamp, item.stamp)
            for name in ("thermal", "rgb"):
                q = self._q[name]
                kept = deque(x for x in q if x is not best and x.stamp > cut)
                c.unmatched += len(q) - len(kept) - (1 if best in q else 0)
                self._q[name] = kept
            c.paired += 1
            if self._slot is not None:
                c.dropped += 1
            self._slot = pair
            self._last_pair_stamp = pair.stamp
            self._ready.notify_all()
            return pair

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

    def wake(self) -> None:
        """Wake a worker blocked in :meth:`take` (used at shutdown)."""
        with self._lock:
            self._ready.notify_all()
