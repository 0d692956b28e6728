"""TeRF-style effects, region masks and the command grammar."""

from __future__ import annotations

import numpy as np
import pytest

from egmt_ros.fusion.commands import CommandParser
from egmt_ros.fusion.terf import MAX_LEVEL, Detections, EffectStack, Region, box_mask, effect

CLASSES = ["person", "car", "truck", "bus", "bicycle", "motorcycle", "dog"]


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ir = np.full((60, 80), 0.2, np.float32)
    ir[20:40, 30:40] = 0.9                      # a hot person
    vi = np.clip(0.5 + 0.1 * rng.standard_normal((60, 80)), 0, 1).astype(np.float32)
    return ir, vi, ((ir + vi) / 2).astype(np.float32)


def test_box_mask_is_one_inside_zero_beyond_feather() -> None:
    m = box_mask((50, 60), [(20, 10, 30, 20)], feather=5)
    assert m[15, 25] == 1.0
    assert m[15, 33] == pytest.approx(1 - 3.5 / 5)    # pixel centre 33.5 is 3.5 px right of x2=30
    assert m[15, 36] == 0.0 and m[30, 25] == 0.0 and m[:4].max() == 0.0
    assert box_mask((10, 10), [], 5).max() == 0.0


def test_region_effect_changes_only_inside_feathered_mask() -> None:
    ir, vi, fused = _scene()
    stack = EffectStack(feather=4)
    stack.set_detections(Detections(stamp=1.0, boxes=[("person", (30, 20, 40, 40)), ("car", (0, 0, 10, 10))]))
    stack.apply_command("ir", Region("classes", ("person",)))
    out = stack(fused, ir, vi, stamp=1.0)
    mask = box_mask(fused.shape, [(30, 20, 40, 40)], 4)
    assert np.array_equal(out[mask == 0], fused[mask == 0])
    inside = mask == 1
    # the hot person moved toward IR (level 1 = 35 % of the way for the base)
    assert np.abs(out - ir)[inside].mean() < 0.8 * np.abs(fused - ir)[inside].mean()
    assert out[inside].mean() > fused[inside].mean() + 0.03


def test_background_is_the_complement_and_stale_detections_are_ignored() -> None:
    ir, vi, fused = _scene()
    stack = EffectStack(feather=2, max_detection_age=0.5)
    stack.set_detections(Detections(stamp=1.0, boxes=[("person", (30, 20, 40, 40))]))
    stack.apply_command("brighten", Region("background"))
    out = stack(fused, ir, vi, stamp=1.0)
    assert np.array_equal(out[25:35, 33:37], fused[25:35, 33:37])
    assert out[:10].mean() > fused[:10].mean()
    # person effect with detections 2 s old: nothing happens
    stack2 = EffectStack(max_detection_age=0.5)
    stack2.set_detections(Detections(stamp=1.0, boxes=[("person", (30, 20, 40, 40))]))
    stack2.apply_command("ir", Region("classes", ("person",)))
    assert np.array_equal(stack2(fused, ir, vi, stamp=3.0), fused)


def test_repetition_strengthens_up_to_bound_and_reset_clears() -> None:
    ir, vi, fused = _scene()
    stack = EffectStack()
    diffs = []
    for _ in range(MAX_LEVEL + 2):
        e = stack.apply_command("ir", Region("everything"))
        diffs.append(float(np.abs(stack(fused, ir, vi) - fused).mean()))
    assert e.level == MAX_LEVEL and len(stack.effects) == 1
    assert diffs[0] < diffs[1] < diffs[2] and diffs[-1] == diffs[-2]
    stack.apply_command("denoise", Region("background"))
    assert len(stack.effects) == 2 and stack.describe()[1].startswith("denoise")
    stack.reset()
    assert np.array_equal(stack(fused, ir, vi), fused)


def test_effect_directions_whole_frame() -> None:
    ir, vi, fused = _scene()
    assert effect("brighten", 1.0, fused, ir, vi).mean() > fused.mean()
    assert effect("darken", 1.0, fused, ir, vi).mean() < fused.mean()
    assert np.abs(effect("ir", 1.0, fused, ir, vi) - ir).mean() < np.abs(fused - ir).mean()
    assert np.abs(effect("vi", 1.0, fused, ir, vi) - vi).mean() < np.abs(fused - vi).mean()
    noisy = np.clip(fused + 0.05 * np.random.default_rng(1).standard_normal(fused.shape), 0, 1).astype(np.float32)
    assert np.abs(effect("denoise", 1.0, noisy, ir, vi) - fused).mean() < np.abs(noisy - fused).mean()
    with pytest.raises(ValueError, match="unknown effect"):
        effect("sharpen", 1.0, fused, ir, vi)


@pytest.mark.parametrize("text,task,region,steps", [
    ("more infrared on the people", "ir", "person", 1),
    ("make the people stand out more", "ir", "person", 1),
    ("Brighten the background!", "brighten", "background", 1),
    ("remove the noise on the road", "denoise", "background", 1),
    ("much more visible for the vehicles", "vi", "bus,car,motorcycle,truck", 2),
    ("darken everything", "darken", "everything", 1),
    ("denoise", "denoise", "everything", 1),
    ("highlight the pedestrians a lot", "ir", "person", 2),
])
def test_grammar(text: str, task: str, region: str, steps: int) -> None:
    cmd = CommandParser(CLASSES).parse(text)
    assert cmd.ok, cmd.answer()
    assert (cmd.task, cmd.region.key(), cmd.steps) == (task, region, steps)


def test_reset_and_unparseable_are_answered() -> None:
    p = CommandParser(CLASSES)
    assert p.parse("reset").ok and p.parse("reset").task == "reset"
    bad = p.parse("sing me a song")
    assert not bad.ok and "no known task" in bad.answer() and bad.answer().startswith("not applied")
    unknown = p.parse("more infrared on the zebras")
    assert not unknown.ok and "unknown target" in unknown.answer()


def test_synonyms_through_a_text_encoder() -> None:
    vocab = {"person": [1, 0, 0], "car": [0, 1, 0], "tractor": [0.1, 0.9, 0.1]}

    def enc(words):
        return np.array([vocab.get(w, [0, 0, 1]) for w in words], np.float32)

    p = CommandParser(["person", "car"], encoder=enc)
    cmd = p.parse("brighten the tractor")
    assert cmd.ok and cmd.region.classes == ("car",) and "text similarity" in cmd.answer()


def test_commands_are_capped_and_never_echoed_whole() -> None:
    from egmt_ros.fusion.commands import ECHO_CHARS, MAX_ENCODED_WORDS, CommandGate, echo
    from egmt_ros.fusion.terf import MAX_EFFECTS, EffectLimitError, EffectStack, Region

    calls: list[int] = []

    def enc(words):
        calls.append(len(words))
        return np.eye(len(words), 8, dtype=np.float32)

    p = CommandParser(["person", "car"], encoder=enc)
    huge = "more infrared on " + " ".join(f"w{i}" for i in range(3000))  # ~18 KB of unknown words
    cmd = p.parse(huge)
    assert not cmd.ok and not calls and "too long" in cmd.answer() and len(cmd.answer()) < 300
    cmd = p.parse("more infrared on the zebra yak gnu okapi tapir")
    assert not cmd.ok and calls == [MAX_ENCODED_WORDS + 2]  # one encoder call, 3 unknown words + 2 classes
    assert len(echo(huge)) < ECHO_CHARS + 30 and str(len(huge)) in echo(huge)

    gate = CommandGate(rate_hz=5.0, burst=5)
    gate.admit("", now=100.0 - 60)  # a minute of quiet: a full bucket
    verdicts = [gate.admit("brighten", now=100.0 + i / 1000) for i in range(1000)]  # 1000 commands in 1 s
    assert verdicts.count("") == 5 + 4 and gate.refused == 991  # the burst, then 5 per second
    assert "too many commands" in verdicts[-1] and "too long" in gate.admit(huge, now=200.0)

    stack = EffectStack()
    for i in range(MAX_EFFECTS):
        stack.apply_command("ir", Region("classes", (f"c{i}",)))
    with pytest.raises(EffectLimitError, match="reset"):
        stack.apply_command("ir", Region("classes", ("one_more",)))
    assert stack.apply_command("ir", Region("classes", ("c0",))).level == 2  # strengthening still works


def test_text_encoder_cache_is_bounded() -> None:
    from egmt_ros.model.text import HashEncoder

    enc = HashEncoder(dim=16)
    enc.max_cache = 50
    first = enc.encode(["person"])
    for i in range(500):
        enc.encode([f"word{i}", "person"])
    assert enc.cache_size == 50 and np.array_equal(enc.encode(["person"]), first)
