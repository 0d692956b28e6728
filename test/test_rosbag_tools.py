"""rosbag_tools without a ROS graph: make_bag, export (incl. damaged bags) and evaluate."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapReader
from ruamel.yaml import YAML

from egmt_ros.core.codec import detections_to_boxes, image_to_numpy
from egmt_ros.metrics.fusion import compute_all
from rosbag_tools import evaluate as evaluate_mod
from rosbag_tools import export as export_mod
from rosbag_tools import make_bag as make_bag_mod
from rosbag_tools.bagio import BagCorruptError, BagReader, BagWriter
from rosbag_tools.make_bag import counts_to_grey, make_bag
from rosbag_tools.types import (
    CAMERA_INFO, COMPRESSED_IMAGE, DETECTION2D_ARRAY, IMAGE, deserialize, make_detections, make_image, stamp_ns,
    typestore,
)

START = 1_700_000_000.0
START_NS = 1_700_000_000_000_000_000
MSRS3 = ("00001D", "00556D", "00633D")


def write_pairs(folder: Path, n: int, size: tuple[int, int] = (64, 48),
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """A pair folder of ``n`` random images (IR grey, VI BGR) named 0000..; returns the arrays."""
    rng = np.random.default_rng(seed)
    (folder / "ir").mkdir(parents=True)
    (folder / "vi").mkdir()
    w, h = size
    out = []
    for i in range(n):
        ir = rng.integers(0, 256, (h, w), dtype=np.uint8)
        vi = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / "ir" / f"{i:04d}.png"), ir)
        cv2.imwrite(str(folder / "vi" / f"{i:04d}.png"), vi)
        out.append((ir, vi))
    return out


@pytest.fixture(scope="module")
def small_pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[np.ndarray, np.ndarray]]]:
    folder = tmp_path_factory.mktemp("pairs150")
    return folder, write_pairs(folder, 150)


def read_all(bag: Path) -> list[tuple[str, int, bytes]]:
    """(topic, bag time, raw) of every message, with rosbags' own reader."""
    with Reader(bag) as r:
        return [(c.topic, t, bytes(d)) for c, t, d in r.messages()]


def exported(outdir: Path) -> list[dict[str, str]]:
    with (outdir / "manifest.csv").open() as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_pairs_round_trip_bit_exact(data_root: Path, tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "bag"
    res = make_bag(bag, pairs=data_root / "msrs_train5", storage=storage, max_frames=3, start_time=START,
                   progress=False)
    assert (res.frames, res.thermal, res.rgb, res.messages) == (3, 3, 3, 6)
    out = tmp_path / "x"
    assert export_mod.main([str(bag), "--out", str(out), "--no-progress"]) == 0
    for k, name in enumerate(MSRS3):
        stamp = START_NS + round(k * 1e9 / 30)
        ir = cv2.imread(str(out / "thermal_image_raw" / f"{stamp}.png"), cv2.IMREAD_UNCHANGED)
        vi = cv2.imread(str(out / "rgb_image_raw" / f"{stamp}.png"), cv2.IMREAD_UNCHANGED)
        src_ir = cv2.imread(str(data_root / "msrs_train5" / "ir" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        src_vi = cv2.imread(str(data_root / "msrs_train5" / "vi" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert ir.dtype == np.uint8 and ir.shape == (480, 640)
        assert np.array_equal(ir, src_ir)
        assert np.array_equal(vi, src_vi)


def test_mono16_counts_round_trip_and_compressed(data_root: Path, tmp_path: Path) -> None:
    raw, comp = tmp_path / "raw", tmp_path / "comp"
    common = dict(pairs=data_root / "msrs_train5", max_frames=3, start_time=START, seed=5, progress=False,
                  thermal_encoding="mono16")
    make_bag(raw, **common)
    make_bag(comp, compressed=True, storage="sqlite3", **common)
    export_mod.export_bag(raw, tmp_path / "xr", progress=False)
    export_mod.export_bag(comp, tmp_path / "xc", progress=False)
    with Reader(comp) as r:
        assert {c.topic: c.msgtype for c in r.connections} == {
            "/thermal/image_raw/compressed": COMPRESSED_IMAGE, "/rgb/image_raw/compressed": COMPRESSED_IMAGE}
        formats = {c.topic: deserialize(d, c.msgtype).format for c, _, d in r.messages()}
    assert formats["/thermal/image_raw/compressed"] == "mono16; png compressed mono16"
    assert formats["/rgb/image_raw/compressed"] == "bgr8; jpeg compressed bgr8"
    for k, name in enumerate(MSRS3):
        stamp = START_NS + round(k * 1e9 / 30)
        counts = cv2.imread(str(tmp_path / "xr" / "thermal_image_raw" / f"{stamp}.png"), cv2.IMREAD_UNCHANGED)
        src = cv2.imread(str(data_root / "msrs_train5" / "ir" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert counts.dtype == np.uint16
        # counts = 7000 + 60 * grey + N(0, 8): the counts model, inverted, gives the source back within rounding
        assert counts.min() >= 7000 - 60 and counts.max() <= 7000 + 60 * 255 + 60
        back = counts_to_grey(counts).astype(int)
        assert np.abs(back - src).max() <= 1
        assert np.mean(back != src) < 0.01
        noise = counts.astype(float) - (7000 + 60 * src.astype(float))
        assert 6.0 < noise.std() < 10.0 and abs(noise.mean()) < 0.5
        # png is lossless and the same seed draws the same noise: compressed counts == raw counts
        png = cv2.imread(str(tmp_path / "xc" / "thermal_image_raw_compressed" / f"{stamp}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(png, counts)
        jpg = cv2.imread(str(tmp_path / "xc" / "rgb_image_raw_compressed" / f"{stamp}.png"), cv2.IMREAD_UNCHANGED)
        src_vi = cv2.imread(str(data_root / "msrs_train5" / "vi" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert jpg.shape == src_vi.shape and np.abs(jpg.astype(int) - src_vi).mean() < 4.0


def test_video_round_trip(data_root: Path, tmp_path: Path) -> None:
    ir_v = data_root / "m2vd" / "infrared" / "0111_1716.mp4"
    vi_v = data_root / "m2vd" / "visible" / "0111_1716.mp4"
    bag = tmp_path / "vbag"
    assert make_bag_mod.main(["--ir-video", str(ir_v), "--vi-video", str(vi_v), "--out", str(bag),
                              "--max-frames", "5", "--start-time", str(START), "--no-progress"]) == 0
    out = tmp_path / "x"
    assert export_mod.main([str(bag), "--out", str(out), "--video", "--no-progress"]) == 0
    caps = [cv2.VideoCapture(str(ir_v)), cv2.VideoCapture(str(vi_v))]
    for k in range(5):
        ir = cv2.cvtColor(caps[0].read()[1], cv2.COLOR_BGR2GRAY)
        vi = caps[1].read()[1]
        stamp = START_NS + round(k * 1e9 / 30)  # the videos' 30 fps is the default rate
        assert np.array_equal(cv2.imread(str(out / "thermal_image_raw" / f"{stamp}.png"), cv2.IMREAD_UNCHANGED), ir)
        assert np.array_equal(cv2.imread(str(out / "rgb_image_raw" / f"{stamp}.png"), cv2.IMREAD_UNCHANGED), vi)
    assert not (out / "thermal_image_raw" / f"{START_NS + round(5e9 / 30)}.png").exists()
    for name in ("thermal_image_raw.mp4", "rgb_image_raw.mp4"):
        cap = cv2.VideoCapture(str(out / name))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
        ok, frame = cap.read()
        assert ok and frame.shape == (480, 640, 3)


# ------------------------------------------------------------------------------------------------ bag layout


def test_bags_layout_types_and_simulated_cameras(small_pairs, tmp_path: Path) -> None:
    folder, arrays = small_pairs
    frame_of = {}
    for k, (ir, vi) in enumerate(arrays):
        frame_of[ir.tobytes()] = k
        frame_of[vi.tobytes()] = k
    opts = dict(pairs=folder, rate=20.0, jitter_ms=3.0, offset_ms=12.0, drop_rate=0.2, seed=7, camera_info=True,
                start_time=START, progress=False)
    contents = {}
    for storage in ("mcap", "sqlite3"):
        bag = tmp_path / storage
        res = make_bag(bag, storage=storage, **opts)
        meta = YAML(typ="safe").load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert meta["version"] == 9 and meta["storage_identifier"] == storage
        assert meta["relative_file_paths"] == [f"{storage}.{'mcap' if storage == 'mcap' else 'db3'}"]
        topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
        assert {n: t["topic_metadata"]["type"] for n, t in topics.items()} == {
            "/thermal/image_raw": IMAGE, "/rgb/image_raw": IMAGE,
            "/thermal/camera_info": CAMERA_INFO, "/rgb/camera_info": CAMERA_INFO}
        for t in topics.values():
            assert t["topic_metadata"]["serialization_format"] == "cdr"
            assert t["topic_metadata"]["type_description_hash"].startswith("RIHS01_")
            assert t["topic_metadata"]["offered_qos_profiles"][0]["reliability"] == "reliable"
        assert topics["/thermal/image_raw"]["message_count"] == res.thermal
        assert json.loads(meta["custom_data"]["egmt_ros.make_bag"])["seed"] == 7
        msgs = read_all(bag)
        contents[storage] = msgs
        assert [t for _, t, _ in msgs] == sorted(t for _, t, _ in msgs)
        resid: dict[str, list[float]] = {"/thermal/image_raw": [], "/rgb/image_raw": []}
        seen: dict[str, set[int]] = {"/thermal/image_raw": set(), "/rgb/image_raw": set()}
        info_stamps: dict[str, set[int]] = {"/thermal/camera_info": set(), "/rgb/camera_info": set()}
        img_stamps: dict[str, set[int]] = {"/thermal/image_raw": set(), "/rgb/image_raw": set()}
        for topic, t, raw in msgs:
            msgtype = IMAGE if topic.endswith("image_raw") else CAMERA_INFO
            msg = deserialize(raw, msgtype)
            assert stamp_ns(msg.header) == t  # bag time == header stamp
            assert msg.header.frame_id == ("thermal_camera" if topic.startswith("/thermal") else "rgb_camera")
            if msgtype == CAMERA_INFO:
                info_stamps[topic].add(t)
                assert (msg.width, msg.height) == (64, 48)
                fx, cx, fy, cy = msg.k[0], msg.k[2], msg.k[4], msg.k[5]
                assert 30 < fx == fy < 100 and abs(cx - 31.5) < 1e-9 and abs(cy - 23.5) < 1e-9
                continue
            assert msg.encoding == ("mono8" if topic.startswith("/thermal") else "bgr8")
            k = frame_of[image_to_numpy(msg).tobytes()]
            seen[topic].add(k)
            img_stamps[topic].add(t)
            resid[topic].append((t - (START_NS + round(k * 1e9 / 20.0))) / 1e6)
        assert info_stamps["/thermal/camera_info"] == img_stamps["/thermal/image_raw"]
        assert info_stamps["/rgb/camera_info"] == img_stamps["/rgb/image_raw"]
        th, rg = np.array(resid["/thermal/image_raw"]), np.array(resid["/rgb/image_raw"])
        assert abs(th.mean()) < 1.0 and 2.3 < th.std() < 3.7  # jitter: N(0, 3 ms)
        assert abs(rg.mean() - 12.0) < 1.0 and 2.3 < rg.std() < 3.7  # offset 12 ms + jitter
        for topic in seen:  # each camera drops ~20 % of 150 frames, independently
            assert 15 <= 150 - len(seen[topic]) <= 45
        assert seen["/thermal/image_raw"] != seen["/rgb/image_raw"]
        assert res.dropped_thermal == 150 - len(seen["/thermal/image_raw"])
    assert contents["mcap"] == contents["sqlite3"]  # seeded: the same bag in both storages
    other = tmp_path / "other_seed"
    make_bag(other, **{**opts, "seed": 8})
    assert read_all(other) != contents["mcap"]


def test_sizes_must_match_and_no_half_bag(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    (folder / "ir").mkdir(parents=True)
    (folder / "vi").mkdir()
    cv2.imwrite(str(folder / "ir" / "a.png"), np.zeros((48, 64), np.uint8))
    cv2.imwrite(str(folder / "vi" / "a.png"), np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="IR is 64x48 but visible is 32x24"):
        make_bag(tmp_path / "bag", pairs=folder, progress=False)
    assert not (tmp_path / "bag").exists()
    assert make_bag_mod.main(["--pairs", str(folder), "--out", str(tmp_path / "bag"), "--no-progress"]) == 1


# ------------------------------------------------------------------------------------------------ damaged bags


def _intact_and_copy(data_root: Path, tmp_path: Path, storage: str) -> tuple[Path, Path, list[tuple[str, int, bytes]]]:
    intact = tmp_path / "intact"
    make_bag(intact, pairs=data_root / "msrs_train5", storage=storage, start_time=START, progress=False)
    damaged = tmp_path / "damaged"
    shutil.copytree(intact, damaged)
    return intact, damaged, read_all(intact)


def _check_kept(outdir: Path, kept: list[tuple[str, int, bytes]]) -> None:
    """The export holds exactly the messages ``kept`` (of the intact bag), in order, bit for bit."""
    rows = exported(outdir)
    assert len(rows) == len(kept)
    for row, (topic, t, raw) in zip(rows, kept):
        assert row["topic"] == topic and int(row["bag_time_ns"]) == t
        src = image_to_numpy(deserialize(raw, IMAGE))
        assert np.array_equal(cv2.imread(str(outdir / row["file"]), cv2.IMREAD_UNCHANGED), src)


def test_truncated_mcap_keeps_everything_before_the_cut(data_root: Path, tmp_path: Path, capsys) -> None:
    intact, damaged, msgs = _intact_and_copy(data_root, tmp_path, "mcap")
    mcap = damaged / "intact.mcap"  # copytree keeps the storage file name
    size = mcap.stat().st_size
    cut = size // 2
    with mcap.open("r+b") as fh:
        fh.truncate(cut)
    reader = McapReader(intact / "intact.mcap")  # rosbags' own index of the intact file
    reader.open()
    chunks = [(c.chunk_start_offset, c.chunk_start_offset + c.chunk_length, sum(c.channel_count.values()))
              for c in reader.chunks]
    reader.close()
    whole_before = sum(n for start, end, n in chunks if end <= cut)
    cut_chunk_start = max(start for start, end, n in chunks if start < cut)
    out = tmp_path / "x"
    assert export_mod.main([str(damaged), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert str(mcap) in err
    m = re.search(r"byte offset (\d+), message index (\d+)", err)
    assert m, err
    offset, k = int(m.group(1)), int(m.group(2))
    assert cut_chunk_start <= offset <= cut
    assert whole_before <= k < len(msgs)
    assert k >= 3  # 3 of the 10 messages lie entirely before the middle of this bag
    _check_kept(out, msgs[:k])
    with pytest.raises(BagCorruptError) as info:
        list(BagReader(damaged).messages())
    assert info.value.path == mcap and info.value.offset == offset and info.value.index == k


def test_sqlite_with_garbage_keeps_every_readable_row(data_root: Path, tmp_path: Path, capsys) -> None:
    """64 KiB of garbage in the middle of a sqlite3 bag: the rows before it and the readable rows after it are
    exported (issue 16: reading goes on past a damaged row; before, export stopped at the first one)."""
    intact, damaged, msgs = _intact_and_copy(data_root, tmp_path, "sqlite3")
    db = damaged / "intact.db3"
    size = db.stat().st_size
    where = size // 2
    with db.open("r+b") as fh:
        fh.seek(where)
        fh.write(np.random.default_rng(1).integers(0, 256, 65536, dtype=np.uint8).tobytes())
    out = tmp_path / "x"
    assert export_mod.main([str(damaged), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert str(db) in err
    m = re.search(r"message index (\d+)", err)
    assert m, err
    k = int(m.group(1))
    # sqlite appends pages as rows are inserted: messages whose bytes all lie well before the garbage are intact
    sizes = np.cumsum([len(raw) for _, _, raw in msgs])
    surely_before = int(np.sum(sizes * 1.02 + 64 * 1024 < where))
    assert surely_before >= 3
    assert surely_before <= k < len(msgs)
    with pytest.raises(BagCorruptError) as info:
        list(BagReader(damaged).messages())
    assert info.value.index == k and 1 <= info.value.skipped < len(msgs) - k
    rows = exported(out)
    after = [(r["topic"], int(r["bag_time_ns"])) for r in rows[k:]]
    later = [(topic, t) for topic, t, _ in msgs[k + 1:]]
    assert len(rows) == len(msgs) - info.value.skipped and set(after) <= set(later)
    _check_kept(out, msgs[:k] + [m for m in msgs[k + 1:] if (m[0], m[1]) in set(after)])


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_synthetic_run(small_pairs, tmp_path: Path) -> None:
    folder, _ = small_pairs
    inp = tmp_path / "in"
    make_bag(inp, pairs=folder, max_frames=40, rate=20.0, thermal_encoding="mono16", offset_ms=2.0,
             start_time=START, progress=False)
    thermal, rgb = {}, {}
    with Reader(inp) as r:
        for c, t, raw in r.messages():
            img = image_to_numpy(deserialize(raw, IMAGE))
            (thermal if c.topic == "/thermal/image_raw" else rgb)[t] = img
    t_stamps, r_stamps = sorted(thermal), sorted(rgb)
    out_bag = tmp_path / "out"
    expected_lat = []
    fused_first = None
    with BagWriter(out_bag, "mcap") as bag:
        bag.add_topic("/egmt/fused", IMAGE)
        bag.add_topic("/egmt/detections", DETECTION2D_ARRAY)
        for k, (ts, rs) in enumerate(zip(t_stamps, r_stamps)):
            if k % 5 == 4:
                continue  # every fifth frame is dropped by the "pipeline"
            ir8 = counts_to_grey(thermal[ts])
            fused = ((rgb[rs].astype(np.uint16) + ir8[:, :, None]) // 2).astype(np.uint8)
            if fused_first is None:
                fused_first = (fused, thermal[ts], rgb[rs])
            lat_ns = 30_000_000 + k * 1_000_000  # 30 ms + 1 ms per frame
            bag.write("/egmt/fused", rs + lat_ns, make_image(fused, "bgr8", rs, "rgb_camera"))
            bag.write("/egmt/detections", rs + lat_ns + 5_000_000,
                      make_detections(rs, "rgb_camera", [("person", 0.9, 20, 20, 10, 20),
                                                         ("person", 0.8, 40, 20, 8, 16), ("car", 0.7, 30, 30, 20, 10)]))
            expected_lat.append((rs + lat_ns - max(rs, ts)) / 1e6)  # from the later input of the pair
    report = tmp_path / "report"
    summary = evaluate_mod.evaluate(inp, out_bag, report, progress=False)
    assert summary["frames_in"] == 40 and summary["frames_paired"] == 40
    assert summary["frames_fused"] == 32 and summary["dropped"] == 8
    assert summary["latency_ms"]["mean"] == pytest.approx(np.mean(expected_lat), abs=1e-6)
    assert summary["latency_ms"]["p50"] == pytest.approx(np.median(expected_lat), abs=1e-6)
    assert summary["latency_ms"]["p99"] == pytest.approx(np.percentile(expected_lat, 99), abs=1e-6)
    assert summary["detection_latency_ms"]["mean"] == pytest.approx(np.mean(expected_lat) + 5.0, abs=1e-6)
    assert summary["persons_per_frame"] == 2.0
    assert summary["detections_per_frame_by_class"] == {"car": 1.0, "person": 2.0}
    assert summary["frames_with_metrics"] == 32 and summary["errors"] == []
    for name in ("report.html", "summary.md", "summary.json", "metrics.csv", "metrics_over_time.png",
                 "latency_over_time.png", "contact_sheet.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    sheet = cv2.imread(str(report / "contact_sheet.png"))
    assert sheet.shape[1] == 4 * evaluate_mod.SHEET_TILE[0]  # thermal | rgb | fused | detections
    html = (report / "report.html").read_text()
    for src in re.findall(r'src="([^"]+)"', html):
        assert (report / src).is_file()
    # the first frame's metrics equal the metrics suite on fused Y vs stretched thermal and visible Y
    fused, counts, vi = fused_first
    lo, hi = np.percentile(counts.astype(float), [1, 99])
    ir8 = np.clip(np.rint((counts - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    want = compute_all(cv2.cvtColor(fused, cv2.COLOR_BGR2GRAY), ir8, cv2.cvtColor(vi, cv2.COLOR_BGR2GRAY),
                       evaluate_mod.FAST_METRICS)
    with (report / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and rows[0]["fused"] == "1" and rows[4]["fused"] == "0"
    for name, value in want.items():
        assert float(rows[0][name]) == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert rows[0]["n_person"] == "2" and rows[0]["n_car"] == "1"
    # baseline: the pixel average of the same frame's sources, scored alike
    vi_y = cv2.cvtColor(vi, cv2.COLOR_BGR2GRAY)
    average = np.rint((ir8.astype(np.float32) + vi_y) / 2).astype(np.uint8)
    for name, value in compute_all(average, ir8, vi_y, evaluate_mod.FAST_METRICS).items():
        assert float(rows[0][f"average_{name}"]) == pytest.approx(value, rel=1e-9, abs=1e-12)
    md = (report / "summary.md").read_text()
    assert "| fused frames | 32 |" in md and "| persons per frame | 2.00 |" in md
    assert "| other classes, detections per frame | car 1.00 |" in md  # not a class of interest
    assert md.startswith("# egmt_ros evaluation of in\n") and "pixel average (mean)" in md
    assert "dropped" not in md and "fusion rate (throughput)" in md


def test_evaluate_flags_different_clocks(small_pairs, tmp_path: Path) -> None:
    """Output recorded on another clock (e.g. the input bag played back later) -> latency is not invented."""
    folder, _ = small_pairs
    inp = tmp_path / "in"
    make_bag(inp, pairs=folder, max_frames=10, start_time=START, progress=False)
    out_bag = tmp_path / "out"
    with Reader(inp) as r:
        rgb = [(t, deserialize(raw, IMAGE)) for c, t, raw in r.messages() if c.topic == "/rgb/image_raw"]
    with BagWriter(out_bag, "sqlite3") as bag:
        bag.add_topic("/egmt/fused", IMAGE)
        for t, msg in rgb:
            bag.write("/egmt/fused", t + 3600 * 1_000_000_000, msg)  # recorded an hour later
    summary = evaluate_mod.evaluate(inp, out_bag, tmp_path / "rep", sheet_frames=0, metrics="EN", progress=False)
    assert summary["frames_fused"] == 10 and summary["dropped"] == 0
    assert summary["latency_ms"]["mean"] is None
    assert any("latency unavailable" in n for n in summary["notes"])


def test_evaluate_latency_from_inputs_recorded_alongside(small_pairs, tmp_path: Path) -> None:
    """The usual live run: the camera bag is played later, the recorder takes inputs and outputs on its own clock;
    latency = fused receive time - the later receive time of the frame's two inputs."""
    folder, _ = small_pairs
    inp = tmp_path / "in"
    make_bag(inp, pairs=folder, max_frames=12, rate=10.0, offset_ms=4.0, start_time=START, progress=False)
    with Reader(inp) as r:
        msgs = [(c.topic, t, raw) for c, t, raw in r.messages()]
    later = 86_400 * 1_000_000_000  # played a day later
    out_bag = tmp_path / "run"
    with BagWriter(out_bag, "mcap") as bag:
        for topic in ("/thermal/image_raw", "/rgb/image_raw", "/egmt/fused"):
            bag.add_topic(topic, IMAGE)
        for k, (topic, t, raw) in enumerate(msgs):
            bag.write(topic, t + later + 1_000_000 * (k % 3), raw)  # transport delay 0-2 ms
            if topic == "/rgb/image_raw":
                rgb = deserialize(raw, IMAGE)
                bag.write("/egmt/fused", t + later + 25_000_000, rgb)  # fused copy, same stamp
    summary = evaluate_mod.evaluate(inp, out_bag, tmp_path / "rep", metrics="EN", sheet_frames=1, progress=False)
    recv = {}
    for k, (topic, t, raw) in enumerate(msgs):
        recv[(topic, stamp_ns(deserialize(raw, IMAGE).header))] = t + later + 1_000_000 * (k % 3)
    want = []
    for (topic, st), t_rec in recv.items():
        if topic == "/rgb/image_raw":
            thermal_st = min((s for tp, s in recv if tp == "/thermal/image_raw"), key=lambda s: abs(s - st))
            want.append((st + later + 25_000_000 - max(t_rec, recv[("/thermal/image_raw", thermal_st)])) / 1e6)
    assert summary["frames_fused"] == 12 and summary["dropped"] == 0
    assert summary["latency_ms"]["mean"] == pytest.approx(np.mean(want), abs=1e-9)
    assert summary["latency_ms"]["max"] == pytest.approx(max(want), abs=1e-9)
    assert any("recorded in the output bag" in n for n in summary["notes"])


def test_vision_msgs_types_registered() -> None:
    det = make_detections(5, "rgb_camera", [("person", 0.5, 1.0, 2.0, 3.0, 4.0)])
    raw = typestore().serialize_cdr(det, DETECTION2D_ARRAY)
    back = deserialize(raw, DETECTION2D_ARRAY)
    assert detections_to_boxes(back) == [("person", 0.5, 1.0, 2.0, 3.0, 4.0)]
    assert typestore().hash_rihs01(DETECTION2D_ARRAY).startswith("RIHS01_")
