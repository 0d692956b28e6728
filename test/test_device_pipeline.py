"""The torch device-resident fusion path (egmt_ros.fusion.device) on the CPU: each step equals the numpy/OpenCV one,
the whole pipeline equals FusionEngine.process, and a batch of N pairs equals N single calls."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from egmt_ros.core.images import list_pairs, load_pair, to_uint8
from egmt_ros.fusion.agc import ThermalAGC
from egmt_ros.core.color import merge_luma, split_luma
from egmt_ros.fusion.device import (DeviceFusionPipeline, agc_map, rgb_to_ycrcb, to_uint8 as to_uint8_t, warp,
                                    warp_grid, ycrcb_to_bgr)
from egmt_ros.fusion.methods import get_method
from egmt_ros.fusion.engine import FusionEngine
from egmt_ros.fusion.registration import warp_thermal
from egmt_ros.model.method import EGMTFuser
from egmt_ros.model.text import HashEncoder
from test_backends import D, ENTITIES, tiny_rt

#: a homography with scale, shear, translation and perspective: every part of the warp is exercised
HOMOGRAPHY = np.array([[1.03, 0.02, -6.0], [-0.015, 0.98, 4.5], [2e-5, -1e-5, 1.0]])


@pytest.fixture(scope="module")
def frames(data_root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three real TNO42 pairs as camera frames, 96 x 128: mono16 thermal counts (1000 + 30000 x grey), bgr8."""
    out = []
    for _, ir_p, vi_p in list_pairs(data_root / "tno42")[:3]:
        ir, vi = load_pair(ir_p, vi_p)
        ir = cv2.resize(ir, (128, 96), interpolation=cv2.INTER_AREA)
        vi8 = to_uint8(cv2.resize(vi, (128, 96), interpolation=cv2.INTER_AREA))
        bgr = np.repeat(vi8[:, :, None], 3, 2) if vi8.ndim == 2 else vi8[:, :, ::-1]
        tint = np.array([1.0, 0.9, 0.75], np.float32)  # TNO visible images are grey: give them colour
        out.append(((1000 + 30000 * ir).astype(np.uint16), np.ascontiguousarray((bgr * tint).astype(np.uint8))))
    return out


@pytest.fixture(scope="module")
def fuser() -> EGMTFuser:
    # without the info prior and the shifted windows: these tests check that the torch pre/postprocessing is
    # bit-identical to the numpy one, and with those two the network rounds differently when the same inputs come in
    # another memory layout (1 level in a few pixels: test_pipeline_with_the_info_prior_within_one_level), as does
    # the quarter-resolution decoder (rt_config's default; that test covers it): the half-resolution one here
    f = EGMTFuser(tiny_rt(info_prior=False, shift_windows=False, detail_scale=2), text_encoder=HashEncoder(D))
    f.set_entities(ENTITIES)
    return f


def test_agc_mapping_equals_thermal_agc(frames) -> None:
    counts = frames[0][0].astype(np.float32)
    counts[5:9, :] = np.nan
    counts[20, 3] = np.inf
    for frame in (frames[0][0], counts):
        ref_agc, dev_agc = ThermalAGC(), ThermalAGC()
        for _ in range(3):  # the running range evolves alike
            ref = ref_agc(frame)
            offset, span = dev_agc.update(frame)
            got = agc_map(torch.from_numpy(frame)[None], torch.tensor([offset]), torch.tensor([span]))[0].numpy()
            assert np.abs(got - ref).max() <= 1e-6


def test_warp_equals_cv2_within_its_interpolation_grid(frames) -> None:
    ir = ThermalAGC()(frames[0][0])
    ref = warp_thermal(ir, HOMOGRAPHY, (140, 100))
    got = warp(torch.from_numpy(ir)[None, None], warp_grid(HOMOGRAPHY, ir.shape, (100, 140)))[0, 0].numpy()
    assert got.shape == ref.shape == (100, 140)
    # cv2 quantises source positions to 1/32 pixel: the difference is bounded by 1/64 pixel times the local slope
    slope = np.abs(np.gradient(ref)).sum(axis=0)
    diff = np.abs(got - ref)
    assert np.all(diff <= slope / 32 + 2e-3)
    assert diff.mean() < 2e-3


def test_pipeline_with_the_info_prior_within_one_level(frames) -> None:
    fuser = EGMTFuser(tiny_rt(), text_encoder=HashEncoder(D))
    ref_pipe, dev_pipe = FusionEngine(fuser), DeviceFusionPipeline(fuser)
    for thermal, bgr in frames:
        diff = np.abs(dev_pipe.process(thermal, bgr, "bgr8").image.astype(int) - ref_pipe.process(thermal, bgr, "bgr8").image)
        assert diff.max() <= 1 and diff.mean() < 1e-3, (diff.max(), diff.mean())


def test_colour_conversion_and_uint8_pack_equal_opencv(frames) -> None:
    rgb = frames[1][1][:, :, ::-1].astype(np.float32) / 255
    y, crcb = split_luma(rgb)
    ty, tcr, tcb = rgb_to_ycrcb(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None])
    assert np.abs(ty[0, 0].numpy() - y).max() <= 1e-6
    assert np.abs(tcr[0, 0].numpy() - crcb[..., 0]).max() <= 1e-6
    assert np.abs(tcb[0, 0].numpy() - crcb[..., 1]).max() <= 1e-6
    fused_y = np.clip(y * 0.7 + 0.2, 0, 1).astype(np.float32)
    ref = to_uint8(merge_luma(fused_y, crcb))[:, :, ::-1]  # BGR
    got = to_uint8_t(ycrcb_to_bgr(torch.from_numpy(fused_y)[None, None], tcr, tcb))[0].permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - ref).max() <= 1  # float rounding at .5 boundaries only
    assert (got == ref).mean() > 0.999


def test_pipeline_equals_the_numpy_pipeline(frames, fuser: EGMTFuser) -> None:
    for homography in (None, HOMOGRAPHY):
        ref_pipe = FusionEngine(fuser, homography=homography)
        dev_pipe = DeviceFusionPipeline(fuser, homography=homography)
        for thermal, bgr in frames:  # three frames: the AGC's running range evolves alike
            ref, got = ref_pipe.process(thermal, bgr, "bgr8"), dev_pipe.process(thermal, bgr, "bgr8")
            assert got.encoding == ref.encoding == "bgr8" and got.image.shape == ref.image.shape == bgr.shape
            diff = np.abs(got.image.astype(int) - ref.image)
            if homography is None:  # measured: bit-identical
                assert diff.max() == 0
            else:  # the warp's sub-pixel positions (above): measured max 1 level in 1 of 18,000 pixels
                assert diff.max() <= 1 and diff.mean() < 1e-3, (diff.max(), diff.mean())
            assert set(got.timings) == {"preprocess", "fuse", "postprocess"}
    grey = frames[0][1][:, :, 0]
    ref_g = FusionEngine(fuser).process(frames[0][0], grey, "mono8")
    got_g = DeviceFusionPipeline(fuser).process(frames[0][0], grey, "mono8")
    assert got_g.encoding == "mono8" and np.abs(got_g.image.astype(int) - ref_g.image).max() <= 1


def test_a_batch_equals_single_calls(frames, fuser: EGMTFuser) -> None:
    thermals, bgrs = [t for t, _ in frames], [b for _, b in frames]
    batch = DeviceFusionPipeline(fuser, homography=HOMOGRAPHY).process_batch(thermals, bgrs)
    for i, (thermal, bgr) in enumerate(frames):  # camera i of the batch = a pipeline of its own
        single = DeviceFusionPipeline(fuser, homography=HOMOGRAPHY).process(thermal, bgr)
        assert np.abs(batch[i].image.astype(int) - single.image).max() <= 1
        assert (batch[i].image == single.image).mean() > 0.999
    assert np.abs(batch[0].image.astype(int) - batch[1].image).max() > 10  # the pairs really differ


def test_bad_batches_and_methods_are_clear_errors(frames, fuser: EGMTFuser) -> None:
    pipe = DeviceFusionPipeline(fuser)
    with pytest.raises(ValueError, match="one shape"):
        pipe.process_batch([frames[0][0], frames[0][0][:50]], [frames[0][1], frames[0][1]])
    with pytest.raises(ValueError, match="as many"):
        pipe.process_batch([frames[0][0]], [])
    with pytest.raises(ValueError, match="size mismatch"):
        pipe.process(frames[0][0][:50], frames[0][1])
    with pytest.raises(ValueError, match="backend 'torch' or 'compile'"):
        DeviceFusionPipeline(get_method("lp"))


def test_bench_gpu_runs_on_the_cpu(ckpt_path: Path, tmp_path: Path, capsys) -> None:
    """The GPU benchmark command end to end with --device cpu on a tiny input: every row, parity, detection at
    batch 1 (the fused frame handed over as a tensor); --device cuda without CUDA is a one-line error."""
    import csv

    from egmt_ros.cli.bench_gpu import main

    out = tmp_path / "bg"
    assert main(["--device", "cpu", "--model", str(ckpt_path), "--size", "64x48", "--frames", "2", "--warmup", "1",
                 "--modes", "eager", "--dtypes", "float32,bfloat16", "--batches", "1,3", "--pairs", "3",
                 "--detector", "yolov5", "--weights-trust-pickle", "--parity-bound", "0.1", "--out", str(out)]) == 0
    with (out / "bench_gpu.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["dtype"], r["batch"]) for r in rows] == [("float32", "1"), ("float32", "3"), ("bfloat16", "1"),
                                                         ("bfloat16", "3")]
    assert all(float(r["pairs_per_s"]) > 0 and float(r["p99_ms"]) >= float(r["p50_ms"]) > 0 for r in rows)
    assert float(rows[0]["parity"]) == 0.0 and 0.0 < float(rows[2]["parity"]) < 0.1  # fp32 = the reference itself
    assert float(rows[0]["det_fps"]) > 0 and rows[1]["det_fps"] == "nan"
    assert "| eager | bfloat16 | 3 |" in (out / "bench_gpu.md").read_text()
    # the parity check decides the exit code: bfloat16 is above a bound of 1e-9, float32 (the reference) is not
    capsys.readouterr()
    assert main(["--device", "cpu", "--model", str(ckpt_path), "--size", "64x48", "--frames", "1", "--warmup", "0",
                 "--modes", "eager", "--dtypes", "float32,bfloat16", "--batches", "1", "--pairs", "1",
                 "--detector", "none", "--parity-bound", "1e-9", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "parity check failed: eager bfloat16" in err and "failed: eager float32" not in err
    if not torch.cuda.is_available():
        capsys.readouterr()
        assert main(["--device", "cuda", "--out", str(out)]) == 2
        assert "no CUDA device" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from egmt_ros.model.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("bg") / "tiny.pt", tiny_rt(), {"training_data": "test"})


def test_engine_runs_the_device_path_and_falls_back_for_effects(frames, fuser: EGMTFuser) -> None:
    """FusionEngine(device_path=True) (automatic for EGMT on CUDA): bit-identical to the numpy engine without a
    homography (the engine's AGC and its running range used), its entity words applied, and the numpy path while a
    TeRF effect is active (effects run on the fused numpy luma)."""
    from egmt_ros.fusion.terf import Region

    ref, dev = FusionEngine(fuser), FusionEngine(fuser, device_path=True)
    assert not FusionEngine(fuser)._device_path  # CPU backend: numpy path unless asked
    for thermal, bgr in frames:
        a, b = ref.process(thermal, bgr, "bgr8", stamp=7, frame_id="rgb"), dev.process(thermal, bgr, "bgr8", 7, "rgb")
        assert np.array_equal(a.image, b.image) and (b.stamp, b.frame_id, b.encoding) == (7, "rgb", "bgr8")
    assert dev._device is not None and dev._device.agcs == [dev.agc]
    assert dev.agc.current_range == ref.agc.current_range
    assert dev.status_values()["total_ms_p50"] > 0
    dev.set_entities(["car"])
    dev.process(*frames[0])
    assert fuser.entities == ["car"]
    fuser.set_entities(ENTITIES)
    ref.process(*frames[0])  # the same AGC history on both
    for e in (ref, dev):
        e.effects.apply_command("brighten", Region("everything"))
    a, b = ref.process(*frames[1]), dev.process(*frames[1])
    assert np.array_equal(a.image, b.image)
