"""Checkpoints + model cards, the FusionMethod wrapper, ONNX export parity, and the fuse CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from egmt_ros.core.images import list_pairs, load_image, load_pair, save_image
from egmt_ros.fusion.engine import fuse_images
from egmt_ros.fusion.methods import get_method
from egmt_ros.model.checkpoint import card_path, load_checkpoint, save_checkpoint
from egmt_ros.model.config import rt_config
from egmt_ros.model.method import EGMTFuser
from egmt_ros.model.network import EGMT
from egmt_ros.model.text import HashEncoder

D = 16


def tiny_rt(seed: int = 0) -> EGMT:
    """A small random rt model whose output depends on every part (decoder's last conv randomised)."""
    torch.manual_seed(seed)
    m = EGMT(rt_config(channels=8, heads=2, window=4, scale=4, detail_channels=4, text_dim=D, num_classes=3,
                       text_encoder="hash-16", class_names=["person", "car", "tree"]))
    torch.nn.init.normal_(m.recon.out.weight, std=0.1)
    torch.nn.init.normal_(m.recon.out.bias, std=0.05)
    return m.eval()


CARD = {"training_data": "unit test", "commit": "0000000", "validation": {"SSIM": 0.5},
        "training": {"command": "pytest", "time_s": 0, "hardware": "cpu"}}


@pytest.fixture()
def ckpt(tmp_path: Path) -> tuple[EGMT, Path]:
    m = tiny_rt()
    return m, save_checkpoint(tmp_path / "tiny.pt", m, CARD, optimizer_state={"step": 3})


def test_round_trip_identical_outputs_and_card(ckpt: tuple[EGMT, Path]) -> None:
    m, path = ckpt
    loaded, card = load_checkpoint(path)
    ir, vi = torch.rand(1, 1, 29, 41), torch.rand(1, 1, 29, 41)
    ent = torch.randn(1, 2, D)
    with torch.no_grad():
        assert torch.equal(loaded(ir, vi, ent)[0], m(ir, vi, ent)[0])
        assert torch.equal(loaded(ir, vi, ent)[1], m(ir, vi, ent)[1])
    assert loaded.config == m.config and not loaded.training
    on_disk = json.loads(card_path(path).read_text())
    assert card_path(path).name == "tiny.card.json"
    for c in (card, on_disk):
        assert c["text_encoder"] == {"id": "hash-16", "dim": D}
        assert c["config"]["variant"] == "rt" and c["classes"] == ["person", "car", "tree"]
        assert c["num_params"] == m.num_params() and c["validation"] == {"SSIM": 0.5}


def test_wrong_text_encoder_is_refused(ckpt: tuple[EGMT, Path]) -> None:
    _, path = ckpt
    with pytest.raises(ValueError, match="hash-16.*sentence-transformers/all-MiniLM-L6-v2"):
        load_checkpoint(path, expect_text_encoder="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="16-d.*384-d"):
        load_checkpoint(path, expect_text_dim=384)
    with pytest.raises(ValueError):
        EGMTFuser.from_checkpoint(path, text_encoder=HashEncoder(32))
    load_checkpoint(path, expect_text_encoder="hash-16", expect_text_dim=16)  # the right one loads


def test_missing_checkpoint_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt.*train"):
        load_checkpoint(missing)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        get_method("egmt", model=missing)
    import egmt_ros.model.method as method

    monkeypatch.setattr(method, "models_dir", lambda: tmp_path / "models")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "models" / "egmt_rt.pt")):
        get_method("egmt_rt")


def test_fuser_numpy_interface_entities_and_costs(ckpt: tuple[EGMT, Path], data_root: Path) -> None:
    _, path = ckpt
    fuser = get_method("egmt", model=path)
    _, ir_p, vi_p = list_pairs(data_root / "roadscene")[0]
    ir, vi = load_pair(ir_p, vi_p)
    ir, vi = ir[:50, :70], vi[:50, :70]
    y = fuser.fuse(ir, vi.mean(axis=2))
    assert y.shape == (50, 70) and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    fuser.set_entities(["person", "car"])
    assert fuser.entities == ["person", "car"] and fuser.text_encoder.cache_size == 2
    y_ent = fuser.fuse(ir, vi.mean(axis=2))
    assert np.abs(y_ent - y).max() > 1e-6
    fuser.set_entities([])
    assert np.array_equal(fuser.fuse(ir, vi.mean(axis=2)), y)
    rgb = fuse_images(fuser, ir, vi)  # the one fusion path: fused luma + visible chroma
    assert rgb.shape == (50, 70, 3) and not np.allclose(rgb[..., 0], rgb[..., 2])
    assert fuser.num_params() == tiny_rt().num_params()
    assert fuser.flops(64, 64) > 0 and fuser.flops(128, 128) > 3 * fuser.flops(64, 64)
    with pytest.raises(ValueError):
        fuser.fuse(ir, vi.mean(axis=2)[:10])


def test_onnx_parity_on_a_real_image(tmp_path: Path, data_root: Path) -> None:
    from egmt_ros.model.export import OnnxFuser, export_onnx

    m = tiny_rt(seed=3)
    path = export_onnx(m, tmp_path / "tiny.onnx")
    _, ir_p, vi_p = list_pairs(data_root / "tno42")[0]
    ir, vi = load_pair(ir_p, vi_p)
    ir, vi = ir[100:261, 200:423], vi[100:261, 200:423]  # 161 x 223, not a multiple of anything
    t_ir, t_vi = torch.from_numpy(ir)[None, None], torch.from_numpy(np.ascontiguousarray(vi))[None, None]
    ent = torch.randn(1, 3, D)
    mask = torch.tensor([[True, False, True]])
    onnx = OnnxFuser(path)
    with torch.no_grad():
        for e, k in ((ent, mask), (None, None)):
            ref = m.fuse(t_ir, t_vi, e, k).numpy()
            got = onnx.run(t_ir.numpy(), t_vi.numpy(), None if e is None else e.numpy(),
                           None if k is None else k.numpy())
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() <= 1e-4
        small = m.fuse(t_ir[..., :3, :5], t_vi[..., :3, :5]).numpy()  # tiny size, N = 0
        assert np.abs(onnx.run(t_ir.numpy()[..., :3, :5], t_vi.numpy()[..., :3, :5]) - small).max() <= 1e-4


def test_fuse_cli_writes_same_size_colour_images(ckpt: tuple[EGMT, Path], tmp_path: Path,
                                                 data_root: Path) -> None:
    from egmt_ros.cli.fuse import main

    _, path = ckpt
    for stem, ir_p, vi_p in list_pairs(data_root / "roadscene")[:2]:
        ir, vi = load_pair(ir_p, vi_p)
        save_image(tmp_path / "ir" / f"{stem}.png", ir[:45, :61])
        save_image(tmp_path / "vi" / f"{stem}.png", vi[:45, :61])
    out = tmp_path / "out"
    rc = main(["--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--out", str(out),
               "--model", str(path), "--entities", "person,car"])
    assert rc == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.name for p in (tmp_path / "ir").iterdir())
    img = load_image(out / written[0])
    assert img.shape == (45, 61, 3)
    assert main(["--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--out", str(out),
                 "--model", str(tmp_path / "missing.pt")]) == 2


def test_fuse_cli_takes_every_method_and_a_backend(ckpt: tuple[EGMT, Path], tmp_path: Path, data_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``--method`` runs any registered method (a classical rule differs from EGMT) and ``--backend onnxruntime``
    gives the torch backend's images within 8-bit rounding; an unknown backend is a one-line error."""
    from egmt_ros.cli.fuse import main

    monkeypatch.setenv("EGMT_CACHE_DIR", str(tmp_path / "cache"))  # the ONNX export of the backend
    _, path = ckpt
    stem, ir_p, vi_p = list_pairs(data_root / "roadscene")[0]
    ir, vi = load_pair(ir_p, vi_p)
    save_image(tmp_path / "ir" / f"{stem}.png", ir[:40, :56])
    save_image(tmp_path / "vi" / f"{stem}.png", vi[:40, :56])
    common = ["--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--model", str(path), "--method", "egmt"]
    out = {}
    for name, extra in (("torch", []), ("ort", ["--backend", "onnxruntime"]), ("lp", ["--method", "lp"])):
        assert main(common + extra + ["--out", str(tmp_path / name)]) == 0, name
        out[name] = cv2.imread(str(tmp_path / name / f"{stem}.png")).astype(int)
    assert np.abs(out["torch"] - out["ort"]).max() <= 1
    assert np.abs(out["torch"] - out["lp"]).max() > 10
    assert main(common + ["--backend", "tflite", "--out", str(tmp_path / "x")]) == 2
