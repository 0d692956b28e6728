"""Pairing by stamp, thermal AGC, registration and the shared fusion path."""

from __future__ import annotations

import numpy as np
import pytest

from egmt_ros.core.images import list_pairs, load_pair, to_uint8
from egmt_ros.core.methods import FunctionMethod
from egmt_ros.fusion.agc import ThermalAGC
from egmt_ros.fusion.engine import FusionEngine, fuse_images
from egmt_ros.fusion.registration import parse_homography, warp_thermal
from egmt_ros.fusion.sync import NS_PER_S, StampPairer, Stamped


def ns(seconds: float) -> int:
    """Integer nanoseconds of a stamp given in seconds (the pairer works in ns)."""
    return round(seconds * NS_PER_S)


AVG = FunctionMethod("avg", lambda a, b: (a + b) / 2)


def test_pairs_within_slop_and_counts_unmatched() -> None:
    s = StampPairer(slop=0.01, queue_size=5, reorder_window=0.0)  # no reorder window: orphans go at once
    assert s.add_thermal(Stamped(ns(1.000), "t1")) is None
    p = s.add_rgb(Stamped(ns(1.004), "r1"))
    assert p is not None and (p.thermal.data, p.rgb.data) == ("t1", "r1")
    assert p.stamp == ns(1.004) and p.skew == pytest.approx(-0.004)
    # a thermal frame with no RGB partner, then the next pair: the orphan is unmatched
    s.add_thermal(Stamped(ns(1.033), "t2"))
    s.add_thermal(Stamped(ns(1.066), "t3"))
    p2 = s.add_rgb(Stamped(ns(1.070), "r3"))
    assert p2.thermal.data == "t3"
    assert s.counters.unmatched == 1 and s.counters.paired == 2
    assert s.counters.dropped == 1  # p was never taken before p2 replaced it
    assert s.take().rgb.data == "r3" and s.take() is None


def test_closest_partner_wins_and_out_of_slop_does_not_pair() -> None:
    s = StampPairer(slop=0.02)
    s.add_rgb(Stamped(ns(2.00), "r0"))
    s.add_rgb(Stamped(ns(2.03), "r1"))
    p = s.add_thermal(Stamped(ns(2.025), "t"))
    assert p.rgb.data == "r1"
    assert s.add_thermal(Stamped(ns(3.0), "far")) is None and s.pending() == 1


def test_stale_frames_are_counted_not_paired() -> None:
    s = StampPairer(slop=0.01)
    s.add_thermal(Stamped(ns(20.0), "t"))
    s.add_rgb(Stamped(ns(20.0), "r"))
    assert s.add_thermal(Stamped(ns(10.0), "old")) is None
    assert s.counters.stale == 1 and s.counters.last_stale_age == pytest.approx(10.0)


def test_memory_is_bounded_when_one_camera_is_silent() -> None:
    s = StampPairer(slop=0.01, queue_size=4)
    for i in range(100):
        s.add_thermal(Stamped(i * 0.033, i))
    assert s.pending() == 4 and s.counters.unmatched == 96


def test_agc_maps_percentiles_and_smooths() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(7000, 9000, size=(64, 80)).astype(np.uint16)
    agc = ThermalAGC(low_percentile=1, high_percentile=99, smoothing=0.9, subsample=1)
    out = agc(frame)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert 0.4 < out.mean() < 0.6
    lo0, hi0 = agc.current_range
    agc(frame + 1000)  # a sudden offset moves the range only 10 % of the way
    lo1, hi1 = agc.current_range
    assert lo1 == pytest.approx(lo0 + 100, abs=5) and hi1 == pytest.approx(hi0 + 100, abs=5)
    assert np.array_equal(ThermalAGC()(np.full((4, 4), 255, np.uint8)), np.ones((4, 4), np.float32))


def test_agc_nan_frame() -> None:
    agc = ThermalAGC()
    f = np.full((8, 8), np.nan, np.float32)
    with pytest.raises(ValueError, match="no finite"):
        agc(f)
    f[0, 0] = 3.0
    f[1, 1] = 5.0
    assert np.isfinite(agc(f)).all()


def test_homography_identity_and_translation() -> None:
    assert parse_homography([1, 0, 0, 0, 1, 0, 0, 0, 1]) is None
    with pytest.raises(ValueError, match="9 numbers"):
        parse_homography([1, 0, 0])
    h = parse_homography([1, 0, 2, 0, 1, 1, 0, 0, 1])
    img = np.zeros((10, 12), np.float32)
    img[3, 4] = 1.0
    out = warp_thermal(img, h, (12, 10))
    assert out[4, 6] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="size mismatch: thermal is 12x10, RGB is 8x8"):
        warp_thermal(img, None, (8, 8))


def test_pipeline_matches_file_path_on_real_pair(data_root) -> None:
    name, ir_p, vi_p = list_pairs(data_root / "roadscene")[0]
    ir, vi = load_pair(ir_p, vi_p)
    expected = to_uint8(fuse_images(AVG, ir, vi))
    bgr = np.ascontiguousarray(to_uint8(vi)[:, :, ::-1])
    res = FusionEngine(AVG).process(to_uint8(ir), bgr, "bgr8")
    assert res.encoding == "bgr8" and res.image.shape == bgr.shape
    assert np.array_equal(res.image[:, :, ::-1], expected)
    assert set(res.timings) == {"preprocess", "fuse", "postprocess"}
    with pytest.raises(ValueError, match="empty image"):
        FusionEngine(AVG).process(np.zeros((0, 0), np.uint8), bgr)


def test_every_colour_encoding_gives_the_same_fused_image(data_root) -> None:
    """rgb8, bgra8 and rgba8 frames of the same picture fuse to the bytes of its bgr8 frame (the engine swaps
    channels in 8 bits and merges colour straight into BGR order); a grey frame gives mono8."""
    _, ir_p, vi_p = list_pairs(data_root / "roadscene")[1]
    ir, vi = load_pair(ir_p, vi_p)
    rgb = to_uint8(vi)
    alpha = np.full(rgb.shape[:2] + (1,), 7, np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    frames = {"bgr8": bgr, "rgb8": rgb, "bgra8": np.dstack([bgr, alpha]), "rgba8": np.dstack([rgb, alpha])}
    out = {enc: FusionEngine(AVG).process(to_uint8(ir), f, enc) for enc, f in frames.items()}
    assert all(r.encoding == "bgr8" and np.array_equal(r.image, out["bgr8"].image) for r in out.values())
    assert np.array_equal(out["bgr8"].image[:, :, ::-1], to_uint8(fuse_images(AVG, ir, vi)))
    grey = FusionEngine(AVG).process(to_uint8(ir), rgb[:, :, 1].copy(), "mono8")
    assert grey.encoding == "mono8" and grey.image.shape == rgb.shape[:2]


def test_agc_outlier_frame_does_not_poison_the_range() -> None:
    """After a 32FC1 frame of +-3e38 the next good frame is mapped exactly as without that frame."""
    rng = np.random.default_rng(1)
    good = [rng.normal(300.0, 5.0, size=(64, 80)).astype(np.float32) for _ in range(12)]
    glitch = np.where(rng.random((64, 80)) < 0.5, 3e38, -3e38).astype(np.float32)
    with_glitch, without = ThermalAGC(), ThermalAGC()
    for f in good[:10]:
        with_glitch(f), without(f)
    with_glitch(glitch)
    for f in good[10:]:
        assert np.array_equal(with_glitch(f), without(f))
    assert with_glitch.outliers == 1 and with_glitch.current_range == without.current_range
    # the same change persisting is real (a new gain or unit): taken in after outlier_frames frames
    agc = ThermalAGC(outlier_frames=3)
    for f in good[:5]:
        agc(f)
    for _ in range(3):
        agc(good[5] * 100)
    assert agc.outliers == 2 and agc.current_range[1] > 1000


def test_agc_nan_rows_do_not_hide_valid_values() -> None:
    frame = np.full((64, 64), np.nan, np.float32)
    frame[1::4] = np.linspace(0, 1000, 64, dtype=np.float32)  # only rows the 4x subsample grid skips are valid
    out = ThermalAGC(subsample=4)(frame)
    assert out.max() == 1.0 and out[1].min() == 0.0


def test_fuse_cli_bench_and_engine_give_the_same_bytes(data_root, tmp_path) -> None:
    """One pair, the callers of the one fusion path: the fuse CLI's file, the engine's frame (what fusion_node
    publishes, test_fusion_node checks that, and what bench_pipeline times) and the bench's scored image are the
    same bytes, in colour and in grey."""
    import cv2

    from egmt_ros.cli.bench import PairJob, score_pair
    from egmt_ros.cli.fuse import main as fuse_main
    from egmt_ros.core.images import to_gray
    from egmt_ros.fusion.methods import get_method
    from egmt_ros.metrics import fusion as fm

    _, ir_p, vi_p = list_pairs(data_root / "roadscene")[3]
    ir, vi = load_pair(ir_p, vi_p)
    thermal = to_uint8(ir)
    frames = {"colour": np.ascontiguousarray(to_uint8(vi)[:, :, ::-1]), "grey": to_uint8(to_gray(vi))}
    for kind, rgb in frames.items():
        for sub, img in (("ir", thermal), ("vi", rgb)):
            (tmp_path / kind / sub).mkdir(parents=True)
            assert cv2.imwrite(str(tmp_path / kind / sub / "pair.png"), img)
        assert fuse_main(["--ir", str(tmp_path / kind / "ir"), "--vi", str(tmp_path / kind / "vi"), "--out",
                          str(tmp_path / kind / "out"), "--method", "average"]) == 0
        cli = cv2.imread(str(tmp_path / kind / "out" / "pair.png"), cv2.IMREAD_UNCHANGED)
        engine = FusionEngine(get_method("average")).process(thermal, rgb, "bgr8")
        assert engine.encoding == ("bgr8" if kind == "colour" else "mono8")
        assert np.array_equal(cli, engine.image), kind
    job = PairJob(0, "pair", tmp_path / "grey" / "ir" / "pair.png", tmp_path / "grey" / "vi" / "pair.png",
                  [("average", "run")], {}, True)
    bench = score_pair(job, {"average": get_method("average")}, fm, ["EN"]).images[2]
    assert np.array_equal(bench, cli)
