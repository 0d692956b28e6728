"""Keyframe policy on synthetic sequences."""

from __future__ import annotations

import numpy as np
import pytest

from egmt_ros.entities.keyframes import KeyframePolicy


def _scene(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth random grey scene (distinct seeds give distinct histograms and structure)."""
    rng = np.random.default_rng(seed)
    base = rng.random((6, 8)).astype(np.float32)
    import cv2

    return np.clip(cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC) * (0.3 + 0.7 * (seed % 3) / 2), 0, 1)


def _run(policy: KeyframePolicy, frames: list[np.ndarray], stamps: list[float]) -> list[tuple[float, str]]:
    out = []
    for f, t in zip(frames, stamps):
        ok, reason = policy.should_process(f, t)
        if ok:
            out.append((round(t, 3), reason))
    return out


@pytest.mark.parametrize("method", ["hist", "ssim"])
def test_static_scene_only_first_and_forced_refresh(method: str) -> None:
    pol = KeyframePolicy(min_interval_s=1.0, max_rate_hz=1.0, scene_change_threshold=0.2, method=method,
                         max_interval_s=10.0)
    frame = _scene(1)
    stamps = [i * 0.1 for i in range(251)]  # 25 s at 10 Hz
    rng = np.random.default_rng(0)
    frames = [np.clip(frame + rng.normal(0, 0.005, frame.shape).astype(np.float32), 0, 1) for _ in stamps]
    assert _run(pol, frames, stamps) == [(0.0, "first"), (10.0, "max_interval"), (20.0, "max_interval")]


@pytest.mark.parametrize("method", ["hist", "ssim"])
def test_scene_cut_triggers_after_min_interval(method: str) -> None:
    pol = KeyframePolicy(min_interval_s=2.0, max_rate_hz=1.0, scene_change_threshold=0.2, method=method,
                         max_interval_s=30.0)
    a, b = _scene(1), _scene(2)
    assert pol.distance(a) == 0.0
    stamps = [i * 0.5 for i in range(20)]
    frames = [a if t < 1.0 else b for t in stamps]  # cut at t = 1.0 s, before the 2 s minimum interval
    assert _run(pol, frames, stamps) == [(0.0, "first"), (2.0, "scene_change")]
    assert pol.last_stamp == 2.0
    assert pol.distance(b) < 0.05 < pol.distance(a)  # the reference is now the new scene


def test_rate_cap_holds_with_constant_scene_cuts() -> None:
    pol = KeyframePolicy(min_interval_s=0.2, max_rate_hz=0.5, scene_change_threshold=0.2, max_interval_s=60.0,
                         burst=3)
    scenes = [_scene(s) for s in range(2)]
    stamps = [i * 0.1 for i in range(600)]  # 60 s at 10 Hz, the scene flips every frame
    kept = _run(pol, [scenes[i % 2] for i in range(len(stamps))], stamps)
    times = [t for t, _ in kept]
    assert len(kept) <= 60.0 * 0.5 + 3 and len(kept) >= 60.0 * 0.5 - 1
    assert min(np.diff(times)) >= 0.2 - 1e-9
    assert max(np.diff(times[5:])) <= 2.0 + 0.1 + 1e-9  # steady state: one keyframe per 1/max_rate
    reasons = [pol.should_process(scenes[1], 1000.0), pol.should_process(scenes[1], 1000.05)]
    assert reasons[1] == (False, "min_interval")


def test_clock_reset_and_uint8_input() -> None:
    pol = KeyframePolicy(min_interval_s=1.0, max_interval_s=5.0)
    img = (_scene(3) * 255).astype(np.uint8)
    assert pol.should_process(img, 100.0) == (True, "first")
    assert pol.should_process(img, 100.5) == (False, "min_interval")
    assert pol.should_process(img, 102.0) == (False, "no_change")
    assert pol.should_process(img, 3.0) == (True, "clock_reset")  # a bag restarted


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        KeyframePolicy(method="orb")
    with pytest.raises(ValueError):
        KeyframePolicy(max_rate_hz=0)
