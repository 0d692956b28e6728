"""StampPairer under replays, loops, time jumps, future stamps and reordering; integer stamps end to end."""

from __future__ import annotations

import math
import random

import pytest

from egmt_ros.fusion.sync import JUMP_FRAMES, NS_PER_S, StampPairer, Stamped, stall_reasons

PERIOD_NS = NS_PER_S // 30


def frames(start_ns: int, n: int, skew_ns: int = 3_000_000) -> list[tuple[str, int]]:
    """``n`` camera frame pairs at 30 Hz from ``start_ns``, thermal ``skew_ns`` after RGB, in arrival order."""
    out = []
    for i in range(n):
        t = start_ns + i * PERIOD_NS
        out += [("rgb", t), ("thermal", t + skew_ns)]
    return out


def feed(s: StampPairer, seq: list[tuple[str, int]], now_ns: int | None = None) -> list[int]:
    """Add every frame, taking pairs as a fast consumer would; returns the fused (RGB) stamps."""
    fused = []
    for side, stamp in seq:
        getattr(s, f"add_{side}")(Stamped(stamp, side), now_ns)
        pair = s.take()
        if pair is not None:
            fused.append(pair.stamp)
    return fused


def test_bag_played_twice_and_looped_three_times_keeps_pairing() -> None:
    s = StampPairer(slop=0.02)
    bag = frames(1_700_000_000 * NS_PER_S, 120)
    passes = [len(feed(s, bag)) for _ in range(3)]
    assert passes[0] == 120
    assert all(p >= 0.9 * passes[0] for p in passes[1:]), passes
    assert s.counters.resets == 2 and "jumped back" in s.counters.last_reset


def test_sim_time_reset_by_the_caller() -> None:
    s = StampPairer(slop=0.02)
    first = feed(s, frames(50 * NS_PER_S, 60), now_ns=52 * NS_PER_S)
    s.reset("clock jumped back")  # what the node's clock jump callback does
    second = feed(s, frames(0, 60), now_ns=2 * NS_PER_S)
    assert len(first) == len(second) == 60 and s.counters.stale == 0


def test_one_pair_a_day_ahead_then_good_pairs() -> None:
    now = 1_700_000_000 * NS_PER_S
    glitch = frames(now + 86_400 * NS_PER_S, 1)
    good = frames(now + PERIOD_NS, 40)
    with_clock = StampPairer(slop=0.02)
    assert feed(with_clock, glitch + good, now_ns=now) and len(feed(with_clock, [], now)) == 0
    assert with_clock.counters.future == 2 and with_clock.counters.paired == 40
    assert any(r.startswith("future: 2 frames") for r in stall_reasons(StampPairer().counters, with_clock.counters))
    no_clock = StampPairer(slop=0.02)  # no clock to compare with: the glitch pairs, then time "jumps back"
    fused = feed(no_clock, glitch + good)
    assert len(fused) - 1 >= 35 and no_clock.counters.resets == 1


def test_old_publisher_interleaved_never_resets() -> None:
    """Stale frames between good ones (a second, old source on the topic) are dropped, not a time jump."""
    s = StampPairer(slop=0.02)
    live, old = frames(1000 * NS_PER_S, 60), frames(10 * NS_PER_S, 60)
    mixed = [f for pair in zip(live, old) for f in pair]
    assert len(feed(s, mixed)) == 60 and s.counters.resets == 0
    assert s.counters.stale + s.counters.unmatched == 120  # the first old frame came before any pair


@pytest.mark.parametrize("seed", range(5))
def test_out_of_order_delivery_keeps_pairs(seed: int) -> None:
    rng = random.Random(seed)
    seq = frames(10 * NS_PER_S, 60)
    for i in range(0, len(seq), 6):  # scramble delivery within blocks of 3 pairs (100 ms)
        block = seq[i:i + 6]
        rng.shuffle(block)
        seq[i:i + 6] = block
    s = StampPairer(slop=0.02)
    fused = feed(s, seq)
    assert len(set(fused)) >= 57 and s.counters.resets == 0


@pytest.mark.parametrize("lag", [4, 8])
def test_one_camera_delivered_late_keeps_every_pair(lag: int) -> None:
    """The thermal stream arrives ``lag`` frames (133-267 ms, beyond slop + reorder window) behind the RGB stream,
    as after a backlog on one topic: every pair is kept while the lag fits in queue_size (message_filters
    semantics); before, each RGB frame expired its own queued predecessors and 16 of 30 pairs fused after a flood."""
    start = 1_700_000_000 * NS_PER_S
    rgb = [("rgb", start + i * PERIOD_NS) for i in range(40)]
    thermal = [("thermal", start + i * PERIOD_NS + 3_000_000) for i in range(40)]
    seq = rgb[:lag] + [f for i in range(40 - lag) for f in (rgb[lag + i], thermal[i])] + thermal[40 - lag:]
    s = StampPairer(slop=0.02, queue_size=10)
    assert len(feed(s, seq)) == 40
    assert s.snapshot().unmatched == 0
    # a lag beyond queue_size: the waiting frames are given up (counted as unmatched), memory stays bounded
    s = StampPairer(slop=0.02, queue_size=2)
    feed(s, seq)
    assert s.snapshot().unmatched >= 40 - 2 * 2 and s.pending() <= 2 * 2


def test_newest_pair_wins_over_a_late_one() -> None:
    s = StampPairer(slop=0.02)
    for side, t in frames(NS_PER_S, 2)[2:] + frames(NS_PER_S, 1):  # pair 2 completes before pair 1
        getattr(s, f"add_{side}")(Stamped(t, side))
    assert s.counters.paired == 2 and s.take().stamp == NS_PER_S + PERIOD_NS and s.take() is None


def test_random_stamps_are_carried_exactly() -> None:
    """10,000 random (sec, nanosec) stamps, nanosec 999999999 among them, through the pairer: exactly equal."""
    from egmt_ros.nodes.common import ns_to_stamp, stamp_to_ns

    rng = random.Random(1)
    stamps = sorted({(rng.randrange(0, 2**31), rng.choice([0, 999_999_999, rng.randrange(NS_PER_S)]))
                     for _ in range(10_000)})
    s = StampPairer(slop=0.0, reorder_window=0.0)
    for sec, nsec in stamps:
        src = ns_to_stamp(stamp_to_ns(_time(sec, nsec)))
        assert (src.sec, src.nanosec) == (sec, nsec)
        s.add_thermal(Stamped(stamp_to_ns(src), None))
        pair = s.add_rgb(Stamped(stamp_to_ns(src), None))
        out = ns_to_stamp(s.take().stamp)
        assert pair is not None and (out.sec, out.nanosec) == (sec, nsec)
    assert s.counters.paired == len(stamps) >= 9_990


def _time(sec: int, nsec: int):
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nsec)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.01])
def test_bad_durations_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="slop"):
        StampPairer(slop=bad)
    s = StampPairer()
    with pytest.raises(ValueError, match="reorder window"):
        s.reorder_window = bad
    assert s.slop == 0.02


def test_stall_reasons_name_what_grew() -> None:
    s = StampPairer(slop=0.01, queue_size=2)
    before = s.snapshot()
    feed(s, [("thermal", i * NS_PER_S) for i in range(5)])
    reasons = stall_reasons(before, s.snapshot(), rejected=3)
    assert [r.split(":")[0] for r in reasons] == ["unmatched", "rejected"]
    assert JUMP_FRAMES >= 2
