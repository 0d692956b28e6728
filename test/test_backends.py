"""Inference backends (egmt_ros.model.backends): parity with eager on a real image, caches, errors, and the
pipeline benchmark CLI."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from egmt_ros.core.images import list_pairs, load_pair, to_gray
from egmt_ros.fusion.methods import get_method
from egmt_ros.model.backends import BackendUnavailableError, model_hash, pad_entities, resolve_dtype
from egmt_ros.model.checkpoint import save_checkpoint
from egmt_ros.model.config import rt_config
from egmt_ros.model.export import export_onnx
from egmt_ros.model.method import EGMTFuser
from egmt_ros.model.network import EGMT
from egmt_ros.model.text import HashEncoder

D = 16
ENTITIES = ["person", "car", "tree"]


def tiny_rt(seed: int = 0, **overrides) -> EGMT:
    """A small random rt model whose output depends on every part (decoder's last conv randomised)."""
    torch.manual_seed(seed)
    m = EGMT(rt_config(channels=8, heads=2, window=4, scale=4, detail_channels=4, text_dim=D, num_classes=3,
                       max_entities=6, text_encoder="hash-16", class_names=["person", "car", "tree"], **overrides))
    torch.nn.init.normal_(m.recon.out.weight, std=0.1)
    torch.nn.init.normal_(m.recon.out.bias, std=0.05)
    return m.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("backends") / "tiny.pt", tiny_rt(), {"training_data": "test"})


@pytest.fixture(scope="module")
def pair(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real TNO42 crop, 97 x 131 (a multiple of nothing the model uses)."""
    _, ir_p, vi_p = list_pairs(data_root / "tno42")[0]
    ir, vi = load_pair(ir_p, vi_p)
    return np.ascontiguousarray(ir[100:197, 200:331]), np.ascontiguousarray(to_gray(vi)[100:197, 200:331])


@pytest.fixture(scope="module")
def eager(ckpt: Path, pair: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """torch eager fp32 outputs: with three entities, and with none."""
    f = EGMTFuser.from_checkpoint(ckpt, text_encoder=HashEncoder(D))
    f.set_entities(ENTITIES)
    with_ent = f.fuse(*pair)
    f.set_entities([])
    return {"ent": with_ent, "none": f.fuse(*pair)}


def _check_parity(fuser: EGMTFuser, pair: tuple[np.ndarray, np.ndarray], eager: dict[str, np.ndarray],
                  tol: float) -> None:
    fuser.set_entities(ENTITIES)
    y = fuser.fuse(*pair)
    assert y.shape == pair[0].shape and y.dtype == np.float32
    assert np.abs(y - eager["ent"]).max() <= tol
    fuser.set_entities([])
    y0 = fuser.fuse(*pair)
    assert np.abs(y0 - eager["none"]).max() <= tol
    assert np.abs(y - y0).max() > 1e-3  # the entity features really are an input of this backend
    fuser.set_entities(ENTITIES[:1])  # a new entity count: no error, still the eager result
    ref = EGMTFuser.from_checkpoint(fuser.checkpoint)
    ref.set_entity_features(fuser._ent)
    assert np.abs(fuser.fuse(*pair) - ref.fuse(*pair)).max() <= tol


def test_eager_is_unchanged_and_entities_matter(eager: dict[str, np.ndarray]) -> None:
    assert np.abs(eager["ent"] - eager["none"]).max() > 1e-3
    assert 0.0 <= eager["ent"].min() and eager["ent"].max() <= 1.0


def test_onnxruntime_agrees_with_eager_and_caches_the_export(ckpt: Path, pair, eager, tmp_path: Path) -> None:
    fuser = get_method("egmt", model=ckpt, backend="onnxruntime", cache_dir=tmp_path, threads=2)
    assert fuser.backend.name == "onnxruntime" and "export" in fuser.backend.setup_seconds
    onnx_files = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(onnx_files) == 1 and model_hash(fuser.model)[:16] in onnx_files[0].name
    _check_parity(fuser, pair, eager, 1e-3)
    again = EGMTFuser.from_checkpoint(ckpt, backend="ort", cache_dir=tmp_path)  # same weights: cache hit
    assert "export" not in again.backend.setup_seconds and again.backend.onnx_path == fuser.backend.onnx_path
    fixed = EGMTFuser.from_checkpoint(ckpt, backend="onnxruntime", cache_dir=tmp_path, entity_policy="fixed")
    assert fixed.backend.onnx_path != fuser.backend.onnx_path  # the entity policy is part of the key
    _check_parity(fixed, pair, eager, 1e-3)
    with pytest.raises(ValueError, match="entities"):
        fixed.set_entity_features(np.ones((7, D), np.float32))  # more than max_entities (6) in a fixed graph
    with pytest.raises(ValueError, match="float32"):
        EGMTFuser.from_checkpoint(ckpt, backend="onnxruntime", dtype="float16", cache_dir=tmp_path)


def test_openvino_agrees_with_eager_and_caches_per_size(ckpt: Path, pair, eager, tmp_path: Path) -> None:
    fuser = get_method("egmt", model=ckpt, backend="openvino", cache_dir=tmp_path, threads=2)
    _check_parity(fuser, pair, eager, 1e-3)
    b, (h, w) = fuser.backend, pair[0].shape
    assert b.name == "openvino" and b.precision == "fp32" and f"export {h}x{w}" in b.setup_seconds
    files = [p.name for p in (tmp_path / "openvino").glob("*.onnx")]
    assert files == [b.onnx_path(h, w).name] and model_hash(fuser.model)[:16] in files[0]
    again = EGMTFuser.from_checkpoint(ckpt, backend="ov", cache_dir=tmp_path)
    again.fuse(*pair)
    assert f"compile {h}x{w}" in again.backend.setup_seconds
    assert not any(k.startswith("export") for k in again.backend.setup_seconds)  # same weights and size: cache hit
    with pytest.raises(ValueError, match="runs on the CPU"):
        EGMTFuser.from_checkpoint(ckpt, backend="openvino", device="cuda", cache_dir=tmp_path)


def _pixel_shuffle_graph(mode: str, extra_user: bool):
    """ONNX graph: x [1, 16, 3, 5] -> DepthToSpace(2, mode) -> three channel slices (0:1, 1:2, 2:end) -> outputs."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("DepthToSpace", ["x"], ["y"], name="d2s", blocksize=2, mode=mode)]
    inits, outs = [], []
    for k, (a, b) in enumerate([(0, 1), (1, 2), (2, 2**63 - 1)]):
        names = [f"s{k}_{n}" for n in ("starts", "ends", "axes")]
        inits += [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in zip(names, (a, b, 1))]
        nodes.append(helper.make_node("Slice", ["y", *names], [f"o{k}"], name=f"slice{k}"))
        outs.append(helper.make_tensor_value_info(f"o{k}", TensorProto.FLOAT, list("bchw")))
    if extra_user:  # a user that is not a channel slice: the rewrite must leave the graph alone
        nodes.append(helper.make_node("Relu", ["y"], ["o3"], name="relu"))
        outs.append(helper.make_tensor_value_info("o3", TensorProto.FLOAT, list("bchw")))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 3, 5])],
                              outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("mode,extra_user,moved", [("CRD", False, 3), ("DCR", False, 0), ("CRD", True, 0)])
def test_depth_to_space_slices_move_in_front_with_the_same_values(mode: str, extra_user: bool, moved: int) -> None:
    """The OpenVINO export's rewrite: channel slices of a PixelShuffle (CRD) output taken before it give the same
    values (checked with ONNX Runtime); other modes or other users leave the graph as it was."""
    import onnx
    import onnxruntime as ort

    from egmt_ros.model.backends.openvino import commute_depth_to_space_slices

    x = np.random.default_rng(0).standard_normal((1, 16, 3, 5)).astype(np.float32)
    model = _pixel_shuffle_graph(mode, extra_user)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    before = run(model)
    assert commute_depth_to_space_slices(model.graph) == moved
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node].count("DepthToSpace") == max(1, moved)
    after = run(model)
    assert [o.shape for o in after] == [o.shape for o in before] == [(1, 1, 6, 10)] * 2 + [(1, 2, 6, 10)] + (
        [(1, 4, 6, 10)] if extra_user else [])
    assert all(np.array_equal(a, b) for a, b in zip(after, before))


def test_openvino_bf16_agrees_with_eager_on_the_shipped_model(pair, tmp_path: Path) -> None:
    """bfloat16 (where the CPU has it; else fp32 with a warning) within the fp16 tolerance 1e-2 of float32 eager on
    the shipped egmt_rt and a real image (measured: 3.0e-3 on 640x480 RoadScene frames, bench_pipeline)."""
    import warnings

    feats = np.random.default_rng(0).standard_normal((4, 384)).astype(np.float32)
    ref = get_method("egmt_rt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bf = get_method("egmt_rt", backend="openvino", dtype="bfloat16", cache_dir=tmp_path)
    for f in (ref, bf):
        f.set_entity_features(feats / np.linalg.norm(feats, axis=1, keepdims=True))
    diff = np.abs(bf.fuse(*pair) - ref.fuse(*pair)).max()
    print(f"\nopenvino {bf.backend.precision} vs torch eager float32: max diff {diff:.2e}")
    assert diff <= 1e-2
    # the fusion node's default dtype "auto" is this bfloat16 for openvino, float32 for every other backend
    assert (resolve_dtype("auto", "ov"), resolve_dtype("auto", "torch"), resolve_dtype("float16", "openvino")) == (
        "bfloat16", "float32", "float16")


def test_openvino_bf16_runs_the_rt_decoder_glue_in_float32(ckpt: Path, tmp_path: Path) -> None:
    """For bf16 the information prior of the rt decoder is marked to keep float32
    (OpenVINO's ``precise`` attribute, set through its IR), and where the CPU has bf16 they run so: the prior's box
    means (Pooling) are all bf16 without the mark, all float32 with it."""
    import openvino as ov

    from egmt_ros.model.backends.openvino import float32_node, read_model_with_float32_nodes

    path = export_onnx(EGMTFuser.from_checkpoint(ckpt).model, tmp_path / "m.onnx", entities=6, static_hw=(64, 96))
    core = ov.Core()
    marked_model, marked = read_model_with_float32_nodes(core, path, float32_node)
    names = [op.get_friendly_name() for op in marked_model.get_ops()]
    assert marked == sum(map(float32_node, names)) > 20 and "/recon/prior/Log" in names
    assert any(n.startswith("/recon/phases/") for n in names) and float32_node("/recon/phases/Concat")
    assert float32_node("/recon/prior/Log") and not float32_node("/recon/Sigmoid")
    assert not float32_node("/recon/blocks/blocks.0/conv1/Conv") and not float32_node("/blocks.0/ta_ir/Add")
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bfloat16: OpenVINO runs float32 anyway")
    for model, want in ((core.read_model(str(path)), "bf16"), (marked_model, "f32")):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        pools = [op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
                 if op.get_rt_info()["layerType"].astype(str) == "Pooling" and float32_node(op.get_friendly_name())]
        assert len(pools) >= 6 and set(pools) == {want}  # the prior's box means (8 in the quarter decoder)


def test_compile_agrees_with_eager_without_recompiling_for_new_entities(ckpt: Path, pair, eager) -> None:
    fuser = get_method("egmt", model=ckpt, backend="compile")
    _check_parity(fuser, pair, eager, 1e-3)
    info = fuser.backend.info()
    assert info["compiled_sizes"] == [pair[0].shape]  # one size compiled once, whatever the entities
    assert list(fuser.backend.setup_seconds) == [f"compile {pair[0].shape[0]}x{pair[0].shape[1]}"]


def test_torch_backend_by_name_and_unknown_backend(ckpt: Path, pair, eager) -> None:
    fuser = get_method("egmt", model=ckpt, backend="torch", device="cpu", dtype="float32")  # the node's kwargs
    _check_parity(fuser, pair, eager, 0.0)
    with pytest.raises(ValueError, match="unknown backend 'tflite'.*onnxruntime"):
        get_method("egmt", model=ckpt, backend="tflite")


def test_tensorrt_gives_a_clear_error_or_agrees(ckpt: Path, pair, eager, tmp_path: Path) -> None:
    """Without the tensorrt package: an ImportError naming it. With it and a GPU: fp32 and fp16 parity."""
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(ImportError, match=r"'tensorrt'.*pip install tensorrt") as err:
            get_method("egmt", model=ckpt, backend="tensorrt", device="cuda", cache_dir=tmp_path)
        assert isinstance(err.value, BackendUnavailableError)
        return
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            get_method("egmt", model=ckpt, backend="tensorrt", device="cuda", cache_dir=tmp_path)
        return
    fp32 = get_method("egmt", model=ckpt, backend="tensorrt", device="cuda", cache_dir=tmp_path)
    _check_parity(fp32, pair, eager, 1e-3)
    fp16 = get_method("egmt", model=ckpt, backend="tensorrt", device="cuda", dtype="float16", cache_dir=tmp_path)
    fp16.set_entities(ENTITIES)
    assert np.abs(fp16.fuse(*pair) - eager["ent"]).max() <= 1e-2
    assert len(list((tmp_path / "tensorrt").glob("*.engine"))) == 2


def test_the_tensorrt_graph_agrees_with_eager_in_onnxruntime(ckpt: Path, pair, eager, tmp_path: Path) -> None:
    """What TensorRT is given (static H x W, fixed N, float mask) is checked here with ONNX Runtime."""
    import onnxruntime as ort

    fuser = EGMTFuser.from_checkpoint(ckpt)
    h, w = pair[0].shape
    path = export_onnx(fuser.model, tmp_path / "trt.onnx", entities=6, static_hw=(h, w), float_mask=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [tuple(i.shape) for i in sess.get_inputs()] == [(1, 1, h, w), (1, 1, h, w), (1, 6, D), (1, 6)]
    for labels, key in ((ENTITIES, "ent"), ([], "none")):
        ent, mask = pad_entities(HashEncoder(D).encode(labels) if labels else None, 6, D)
        out = sess.run(None, {"ir": pair[0][None, None], "vi": pair[1][None, None], "ent": ent,
                              "ent_mask": mask.astype(np.float32)})[0]
        assert np.abs(np.clip(out[0, 0], 0, 1) - eager[key]).max() <= 1e-3


def test_model_hash_follows_the_weights() -> None:
    a, b = tiny_rt(0), tiny_rt(0)
    assert model_hash(a) == model_hash(b)
    with torch.no_grad():
        b.recon.out.bias[0] += 1e-3
    assert model_hash(a) != model_hash(b)


def test_model_hash_follows_the_graph_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same weights under changed graph code (an upgrade) give another cache key: a stale export is never reused."""
    import egmt_ros.model.backends.base as base

    a = tiny_rt(0)
    before = model_hash(a)
    monkeypatch.setattr(base, "GRAPH_MODULES", base.GRAPH_MODULES[:-1])  # one module's source no longer counted
    assert model_hash(a) != before


def test_bench_pipeline_writes_markdown_and_csv(ckpt: Path, tmp_path: Path, data_root: Path) -> None:
    from egmt_ros.cli.bench_pipeline import CSV_COLUMNS, main

    out = tmp_path / "bench"
    rc = main(["--methods", "lp,egmt", "--model", str(ckpt), "--backend", "torch,onnxruntime", "--size", "96x64",
               "--seconds", "0.3", "--warmup", "1", "--threads", "1", "--data", str(data_root / "tno42"),
               "--pairs", "2", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    with (out / "bench_pipeline.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    got = {(r["method"], r["backend"], r["mode"]) for r in rows}
    assert got == {(m, b, mode) for m, b in (("egmt", "torch"), ("egmt", "onnxruntime"), ("lp", "-"))
                   for mode in ("fusion", "fusion+detection")}
    for r in rows:
        assert int(r["frames"]) >= 3 and float(r["fps"]) > 0 and r["width"] == "96" and r["height"] == "64"
        assert float(r["fuse_p50_ms"]) > 0 and float(r["total_p99_ms"]) >= float(r["total_p50_ms"])
        assert (r["detect_p50_ms"] != "nan") == (r["mode"] == "fusion+detection")
        lp = next(x for x in rows if x["method"] == "lp" and x["mode"] == r["mode"])  # issue 18's yardstick
        for stage in ("total", "fuse"):
            assert float(r[f"{stage}_p50_vs_lp"]) == pytest.approx(
                float(r[f"{stage}_p50_ms"]) / float(lp[f"{stage}_p50_ms"]), rel=1e-9)
    md = (out / "bench_pipeline.md").read_text()
    assert "python -m egmt_ros.cli.bench_pipeline --methods lp,egmt" in md
    assert "load average" in md and "nproc" in md
    assert "| method | weights | backend | threads | mode | frames | fps | preprocess | fuse |" in md
    assert md.count("| egmt |") == 4 and md.count("| lp |") == 2
    if not torch.cuda.is_available():
        assert "GPU: not measured: no device in this session" in md
    assert main(["--methods", "egmt", "--size", "96x64", "--out", str(out)]) == 2  # egmt without --model
    rc = main(["--methods", "lp,average", "--size", "96x64", "--seconds", "0.2", "--modes", "fusion",
               "--interleave", "--data", str(data_root / "tno42"), "--pairs", "1", "--out", str(tmp_path / "il")])
    assert rc == 0
    with (tmp_path / "il" / "bench_pipeline.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["lp", "average"]
    assert rows[0]["frames"] == rows[1]["frames"]  # round-robin: one frame each in turn


def test_bench_pipeline_backend_with_its_own_dtype(ckpt: Path, tmp_path: Path, data_root: Path) -> None:
    """``--backend openvino,openvino:bfloat16``: one interleaved run, each row with its dtype and max diff."""
    from egmt_ros.cli.bench_pipeline import main

    rc = main(["--methods", "egmt", "--model", str(ckpt), "--backend", "ov,openvino:bfloat16", "--size", "96x64",
               "--seconds", "0.2", "--warmup", "1", "--threads", "1", "--modes", "fusion", "--interleave",
               "--data", str(data_root / "tno42"), "--pairs", "1", "--cache-dir", str(tmp_path / "cache"),
               "--out", str(tmp_path / "dt")])
    assert rc == 0
    with (tmp_path / "dt" / "bench_pipeline.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["backend"], r["dtype"]) for r in rows] == [("openvino", "float32"), ("openvino:bfloat16", "bfloat16")]
    assert float(rows[0]["max_abs_diff_vs_eager"]) <= 1e-3 and rows[0]["frames"] == rows[1]["frames"]
