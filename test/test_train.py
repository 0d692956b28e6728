"""Training data (datasets, annotations, video frames, splits, autolabel) and the training CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from egmt_ros.cli import train
from egmt_ros.data import datasets as ds
from egmt_ros.model.checkpoint import read_checkpoint
from egmt_ros.model.config import paper_config
from egmt_ros.model.losses import EGMTLoss
from egmt_ros.model.network import EGMT
from egmt_ros.model.text import HashEncoder

PAIRS = ("00001D", "00881N")
CLASSES = ["person", "car", "bicycle"]


@pytest.fixture()
def two_pairs(tmp_path: Path, data_root: Path) -> Path:
    """A pair folder ``msrs2`` with two MSRS pairs (symlinks into the data root)."""
    root = tmp_path / "msrs2"
    for sub in ("ir", "vi"):
        (root / sub).mkdir(parents=True)
        for stem in PAIRS:
            (root / sub / f"{stem}.png").symlink_to(data_root / "msrs_train5" / sub / f"{stem}.png")
    return root


def _write_annotations(path: Path, dataset: str = "msrs2", classes: list[str] = CLASSES) -> Path:
    recs = [
        {"name": "00001D", "dataset": dataset, "ir": "ir/00001D.png", "vi": "vi/00001D.png",
         "captions": {"ir": None, "vi": "a person and a car on a road"},
         "entities": [{"text": "person", "source": "caption", "score": 0.9},
                      {"text": "car", "source": "detector", "score": 0.8},
                      {"text": "Person", "source": "detector", "score": 0.5},  # duplicate (case-insensitive)
                      {"text": "road", "source": "vocabulary", "score": 1.0}],
         "labels": [int(c in ("person", "car")) for c in classes]},
        {"name": "00881N", "dataset": dataset, "ir": "ir/00881N.png", "vi": "vi/00881N.png",
         "captions": {"ir": None, "vi": None},
         "entities": [{"text": "bicycle", "source": "detector", "score": 0.7}],
         "labels": [int(c == "bicycle") for c in classes]},
    ]
    path.write_text(json.dumps({"version": 1, "classes": classes, "text_encoder": "hash-384", "records": recs}))
    return path


def test_annotations_round_trip_to_items(two_pairs: Path, tmp_path: Path) -> None:
    ann = _write_annotations(tmp_path / "ann.json")
    classes, records, enc_id = ds.load_annotations([ann])
    assert classes == CLASSES and enc_id == "hash-384"
    samples = ds.collect_samples([two_pairs])
    assert [s.key for s in samples] == [("msrs2", "00001D"), ("msrs2", "00881N")]
    enc = HashEncoder(384)
    data = ds.PairFolderDataset(samples, crop=48, mode="random", classes=classes, records=records,
                                text_features=ds.TextFeatureCache(enc), text_dim=384)
    a, b = data[0], data[1]
    assert a["labels"].tolist() == [1.0, 1.0, 0.0] and b["labels"].tolist() == [0.0, 0.0, 1.0]
    assert a["ent"].shape == (3, 384) and b["ent"].shape == (1, 384)  # person, road, car (dedup) / bicycle
    assert torch.allclose(a["ent"][0], torch.from_numpy(enc.encode(["road"])[0]))  # best score first
    assert a["ir"].shape == (1, 48, 48) and a["vi_y"].shape == (1, 48, 48)
    assert 0.0 <= float(a["ir"].min()) and float(a["ir"].max()) <= 1.0
    batch = ds.collate_pairs([a, b])
    assert batch["ent"].shape == (2, 3, 384)
    assert batch["ent_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert float(batch["ent"][1, 1:].abs().sum()) == 0.0
    # a second file with another class order is remapped by name
    other = _write_annotations(tmp_path / "other.json", classes=["bicycle", "person", "car"])
    _, rec2, _ = ds.load_annotations([ann, other])
    assert rec2[("msrs2", "00881N")]["labels"] == [0, 0, 1]


def test_patches_padding_split_and_exclusions(two_pairs: Path, data_root: Path) -> None:
    small = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    padded = ds.pad_to(small, 32, 32)
    assert padded.shape == (32, 32) and np.array_equal(padded[:20, :30], small)
    assert np.array_equal(padded[20, :30], small[18])  # reflection, edge not repeated
    wins = ds.sliding_windows(100, 70, 32, 32)
    assert {y for y, _ in wins} == {0, 32, 64, 68} and {x for _, x in wins} == {0, 32, 38}
    slid = ds.PairFolderDataset(ds.collect_samples([two_pairs]), crop=448, mode="sliding", stride=64)
    assert len(slid) == 2 * len(ds.sliding_windows(480, 640, 448, 64))
    # deterministic split, whole scenes (sequences) on one side
    seq = ds.collect_samples([data_root / "m3svd_val"])
    tr1, va1 = ds.split_samples(seq, 0.3)
    tr2, va2 = ds.split_samples(seq, 0.3)
    assert va1 == va2 and tr1 == tr2 and va1 and tr1
    assert not {s.scene for s in va1} & {s.scene for s in tr1}
    with pytest.raises(ValueError, match="test set"):
        ds.collect_samples([data_root / "tno42"])
    with pytest.raises(ValueError, match="LLVIP"):
        ds.collect_samples([data_root / "llvip_subset" / "train"])


def test_video_frames_are_sampled_and_cached(tmp_path: Path, data_root: Path) -> None:
    m2 = data_root / "m2vd"
    got = ds.extract_video_frames(m2 / "infrared" / "0111_1716.mp4", m2 / "visible" / "0111_1716.mp4",
                                  every=50, cache_dir=tmp_path, dataset="m2vd")
    assert [s.name for s in got] == ["0111_1716/f000000", "0111_1716/f000050", "0111_1716/f000100",
                                     "0111_1716/f000150"]  # 151 frames
    assert all(s.scene == "0111_1716" for s in got)
    from egmt_ros.core.images import load_image

    ir, vi = load_image(got[1].ir), load_image(got[1].vi)
    assert ir.shape == (480, 640) and vi.shape == (480, 640, 3)
    got[1].ir.unlink()  # a cached run does not decode again
    again = ds.extract_video_frames(m2 / "infrared" / "0111_1716.mp4", m2 / "visible" / "0111_1716.mp4",
                                    every=50, cache_dir=tmp_path, dataset="m2vd")
    assert again == got and not got[1].ir.exists()


def test_tiny_run_writes_card_and_resume_continues(two_pairs: Path, tmp_path: Path) -> None:
    ann = _write_annotations(tmp_path / "ann.json")
    out = tmp_path / "run"
    common = ["--config", "rt", "--data", str(two_pairs), "--entities", str(ann), "--crop", "32", "--batch", "1",
              "--set", "channels=8", "--set", "text_encoder=hash-384", "--val-fraction", "0.5",
              "--val-size", "48", "--val-images", "1", "--out", str(out), "--no-progress", "--threads", "1"]
    assert train.main(common + ["--steps", "2"]) == 0
    card = json.loads((out / "last.card.json").read_text())
    assert card["config"]["channels"] == 8 and card["config"]["crop"] == 32
    assert card["text_encoder"] == {"id": "hash-384", "dim": 384}
    assert card["classes"] == CLASSES
    assert card["training_data"][0]["pairs"] == 2 and card["commit"]
    assert card["training"]["step"] == 2 and "--steps 2" in card["training"]["command"]
    assert card["training"]["wall_time_s"] > 0 and "CPU" in card["training"]["hardware"]
    assert {"loss", "PSNR", "MI"} <= set(card["validation"]["metrics"])
    assert (out / "best.pt").is_file() and (out / "best.card.json").is_file()
    first = read_checkpoint(out / "last.pt")
    assert first["extra"]["step"] == 2

    assert train.main(common + ["--steps", "4", "--resume", str(out / "last.pt")]) == 0
    resumed = read_checkpoint(out / "last.pt")
    assert resumed["extra"]["step"] == 4 and resumed["card"]["training"]["step"] == 4
    assert resumed["card"]["training"]["previous_commands"] == [card["training"]["command"]]
    adam_steps = {float(s["step"]) for s in resumed["optimizer"]["state"].values()}
    assert adam_steps == {4.0}  # the optimizer state was restored, not restarted
    assert any(not torch.equal(v, resumed["state_dict"][k]) for k, v in first["state_dict"].items())

    # --init: a new run (its own loss weights, step 0, fresh optimizer) from those weights
    init_out = tmp_path / "init"
    init_args = [a if a != str(out) else str(init_out) for a in common]
    assert train.main(init_args + ["--steps", "0", "--init", str(out / "last.pt"), "--set", "alphas=[30,10,1]"]) == 0
    started = read_checkpoint(init_out / "last.pt")
    assert started["extra"]["step"] == 0 and started["card"]["config"]["alphas"] == [30.0, 10.0, 1.0]
    assert started["card"]["training"]["init_from"] == str(out / "last.pt")
    assert all(torch.equal(v, started["state_dict"][k]) for k, v in resumed["state_dict"].items())


def test_loss_decreases_when_overfitting_one_pair(two_pairs: Path) -> None:
    # the paper variant starts far from the optimum (the rt variant starts at the pixel average, already close)
    torch.manual_seed(0)
    samples = ds.collect_samples([two_pairs])[:1]
    data = ds.PairFolderDataset(samples, crop=32, mode="sliding", stride=1000, classes=CLASSES,
                                records={samples[0].key: {"labels": [1, 0, 0], "entities": [{"text": "person"}]}},
                                text_features=ds.TextFeatureCache(HashEncoder(384)))
    batch = ds.collate_pairs([data[0]])
    cfg = paper_config(channels=8, num_classes=3, lr=3e-3, text_encoder="hash-384")
    model, loss_fn = EGMT(cfg), EGMTLoss(cfg)
    opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=cfg.lr)
    losses = [train.train_step(model, loss_fn, opt, batch, torch.device("cpu"))[1]["fus"] for _ in range(15)]
    assert max(losses[-3:]) < 0.7 * losses[0], losses


def test_autolabel_finds_the_people_of_msrs(data_root: Path) -> None:
    from egmt_ros.data import autolabel

    sample = ds.pair_folder_samples(data_root / "msrs_train5")[0]  # 00001D: two people and a car (MSRS labels)
    rec = autolabel.label_sample(autolabel.load_detector(), sample)
    assert rec["dataset"] == "msrs_train5" and rec["name"] == "00001D" and rec["ir"] == "msrs_train5/ir/00001D.png"
    assert rec["labels"][autolabel.CLASSES.index("person")] == 1
    assert "person" in [e["text"] for e in rec["entities"]]
    assert all(e["source"] == "detector" and 0.25 <= e["score"] <= 1 for e in rec["entities"])
    assert len(rec["labels"]) == len(autolabel.CLASSES)
    assert rec["size"] == [480, 640]
    people = [b for b in rec["boxes"] if b["class"] == "person"]
    assert people and {b["image"] for b in rec["boxes"]} <= {"ir", "vi"}
    for b in people:  # boxes in pixels of the pair, inside the image, non-empty
        x1, y1, x2, y2 = b["xyxy"]
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480 and b["score"] >= 0.25
    assert ds.entity_region_maps(rec, 480, 640).any()


def test_device_parsing_without_a_gpu() -> None:
    assert train.parse_device("cuda") == torch.device("cuda", 0)  # torch.cuda.set_device needs the index
    assert train.parse_device("CUDA ") == torch.device("cuda", 0)
    assert train.parse_device("cuda:1") == torch.device("cuda", 1)
    assert train.parse_device("cuda", local_rank=3, world=4) == torch.device("cuda", 3)
    assert train.parse_device("cuda:0", local_rank=2, world=4) == torch.device("cuda", 2)
    assert train.parse_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "gpu0", "cuda:x"):
        with pytest.raises(SystemExit, match="--device"):
            train.parse_device(bad)
    assert train.build_parser().parse_args(["--data", "x", "--device", "cuda"]).device == "cuda"


def test_the_smoke_clip_is_held_out_of_training(tmp_path: Path, data_root: Path) -> None:
    videos = tmp_path / "m2vd"
    for sub in ("infrared", "visible"):
        (videos / sub).mkdir(parents=True)
        for name in ("0111_1716", "0117_1620"):
            (videos / sub / f"{name}.mp4").symlink_to(data_root / "m2vd" / sub / f"{name}.mp4")
    cache = tmp_path / "cache"
    got = ds.collect_samples([videos], every=100, cache_dir=cache)
    assert {s.scene for s in got} == {"0111_1716"} and not (cache / "m2vd" / "0117_1620").exists()
    assert "0117_1620" in ds.HELD_OUT_VIDEOS
    both = ds.collect_samples([videos], every=300, cache_dir=cache, allow_test=True)
    assert {s.scene for s in both} == {"0111_1716", "0117_1620"}
