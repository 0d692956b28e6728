"""Hostile and damaged bags (issue 16): CRCs, decompression bombs, sqlite recovery, corrupted messages, evaluate's
damage vs drops, and message type strings that must not be imported. No ROS graph."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.storage_mcap import McapReader

from egmt_ros.core.codec import image_to_numpy
import rosbag_tools
from rosbag_tools import evaluate as evaluate_mod
from rosbag_tools import export as export_mod
from rosbag_tools.bagio import BagCorruptError, BagReader, BagWriter
from rosbag_tools.interfaces import UnknownMessageType, interface_type
from rosbag_tools.make_bag import make_bag
from rosbag_tools.types import IMAGE, deserialize, make_image, serialize
from test_rosbag_tools import exported, read_all

START = 1_700_000_000.0
START_NS = 1_700_000_000_000_000_000


def assert_exported_exactly(outdir: Path, intact: list[tuple[str, int, bytes]], keys: set[tuple[str, int]]) -> None:
    """The export holds exactly the intact messages ``keys`` (topic, bag time), each pixel for pixel."""
    rows = exported(outdir)
    assert {(r["topic"], int(r["bag_time_ns"])) for r in rows} == keys and len(rows) == len(keys)
    raw_of = {(topic, t): raw for topic, t, raw in intact}
    for r in rows:
        want = image_to_numpy(deserialize(raw_of[(r["topic"], int(r["bag_time_ns"]))], IMAGE))
        assert np.array_equal(cv2.imread(str(outdir / r["file"]), cv2.IMREAD_UNCHANGED), want), r


def small_bag(tmp_path: Path, storage: str, frames: int, name: str = "bag") -> Path:
    """A bag of ``frames`` pairs of random 64x48 images (IR mono8, RGB bgr8) at 30 Hz."""
    rng = np.random.default_rng(3)
    bag = tmp_path / name
    with BagWriter(bag, storage) as w:
        w.add_topic("/thermal/image_raw", IMAGE)
        w.add_topic("/rgb/image_raw", IMAGE)
        for k in range(frames):
            t = START_NS + k * 33_333_333
            w.write("/thermal/image_raw", t, make_image(rng.integers(0, 256, (48, 64), np.uint8), "mono8", t, "th"))
            w.write("/rgb/image_raw", t, make_image(rng.integers(0, 256, (48, 64, 3), np.uint8), "bgr8", t, "rgb"))
    return bag


# ------------------------------------------------------------------------------------------------ CRCs


def test_mcap_chunks_carry_crcs_and_a_flipped_byte_is_detected(data_root: Path, tmp_path: Path, capsys) -> None:
    intact = tmp_path / "intact"
    make_bag(intact, pairs=data_root / "msrs_train5", start_time=START, progress=False)
    mcap = intact / "intact.mcap"
    reader = McapReader(mcap)
    reader.open()
    chunks = [(c.chunk_start_offset, c.chunk_start_offset + c.chunk_length) for c in reader.chunks]
    reader.close()
    assert len(chunks) >= 3
    blob = mcap.read_bytes()
    for start, _ in chunks:
        assert struct.unpack_from("<I", blob, start + 9 + 24)[0] != 0  # the chunk's crc field is filled in
    msgs = read_all(intact)  # rosbags checks every non-zero chunk CRC while reading: they are right
    assert len(msgs) == 10
    # bagio reads what rosbags reads, also in a time window that starts after the chunk defining the channels
    assert [(m.topic, m.timestamp, m.data) for m in BagReader(intact).messages()] == msgs
    lo, hi = msgs[4][1], msgs[8][1]
    window = [(m.topic, m.timestamp, m.data) for m in BagReader(intact).messages(start_ns=lo, stop_ns=hi)]
    assert window == [m for m in msgs if lo <= m[1] < hi] and len(window) == 4

    damaged = tmp_path / "damaged"
    shutil.copytree(intact, damaged)
    topic, t, raw = msgs[4]
    at = blob.index(raw) + len(raw) // 2  # a pixel in the middle of message 4's image
    flipped = bytearray(blob)
    flipped[at] ^= 0x01
    (damaged / "intact.mcap").write_bytes(bytes(flipped))
    bad_chunk = next(c for c in chunks if c[0] <= at < c[1])
    with pytest.raises(ReaderError, match="checksum"):  # the CRC is where every mcap reader looks for it
        read_all(damaged)

    out = tmp_path / "x"
    assert export_mod.main([str(damaged), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "fails its CRC check" in err and f"byte offset {bad_chunk[0]}," in err, err
    # the chunk holding the flipped byte is skipped whole (its 2 messages); the chunks after it are read on
    in_bad = {(tp, tm) for tp, tm, r in msgs if bad_chunk[0] <= blob.index(r) < bad_chunk[1]}
    assert (topic, t) in in_bad and len(in_bad) == 2
    assert_exported_exactly(out, msgs, {(tp, tm) for tp, tm, _ in msgs} - in_bad)
    with pytest.raises(BagCorruptError) as info:
        list(BagReader(damaged).messages())
    assert info.value.skipped == 2 and info.value.offset == bad_chunk[0]


# ------------------------------------------------------------------------------------------------ bombs


def _record(op: int, body: bytes) -> bytes:
    return bytes([op]) + struct.pack("<Q", len(body)) + body


def _s(text: str) -> bytes:
    return struct.pack("<I", len(text)) + text.encode()


def _bomb_mcap(path: Path, declared: int) -> int:
    """An mcap file: a zstd chunk of 1 GiB of zeros (32 KB compressed) that declares ``declared`` bytes, then an
    uncompressed chunk with one good 64x48 image. Returns the good message's timestamp."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[no-redef]
    comp = zstd.ZstdCompressor()
    zeros = bytes(2**20)
    bomb = b"".join(comp.compress(zeros) for _ in range(1024)) + comp.flush()
    t = START_NS
    img = serialize(make_image(np.full((48, 64), 7, np.uint8), "mono8", t, "th"), IMAGE)
    inner = (_record(0x03, struct.pack("<H", 1) + _s(IMAGE) + _s("ros2msg") + _s(""))
             + _record(0x04, struct.pack("<HH", 1, 1) + _s("/thermal/image_raw") + _s("cdr") + struct.pack("<I", 0))
             + _record(0x05, struct.pack("<HIQQ", 1, 0, t, t) + img))

    def chunk(data: bytes, size: int, compression: str) -> bytes:
        return _record(0x06, struct.pack("<QQQI", t, t, size, 0) + _s(compression) + struct.pack("<Q", len(data))
                       + data)

    path.write_bytes(b"\x89MCAP0\r\n" + _record(0x01, _s("ros2") + _s("test")) + chunk(bomb, declared, "zstd")
                     + chunk(inner, len(inner), "") + _record(0x0F, struct.pack("<I", 0))
                     + _record(0x02, struct.pack("<QQI", 0, 0, 0)) + b"\x89MCAP0\r\n")
    return t


@pytest.mark.parametrize("declared", [2**30, 2**20], ids=["declares-1GiB", "declares-1MiB-holds-1GiB"])
def test_decompression_bomb_refused_fast_and_small(tmp_path: Path, declared: int) -> None:
    """A 32 KB mcap whose zstd chunk holds 1 GiB: refused by the cap (declared 1 GiB) or by decompression bounded
    to the declared size (declared 1 MiB); export (in a child process) takes < 5 s and < 300 MB peak RSS, and the
    good message after the bomb is still exported."""
    bag = tmp_path / "bomb.mcap"
    _bomb_mcap(bag, declared)
    assert bag.stat().st_size < 40_000
    # peak RSS from /proc/self/status VmHWM (this process's own memory since exec): getrusage's ru_maxrss keeps the
    # forking parent's peak across exec on Linux, which is pytest's (1.5 GB with the whole suite's models loaded)
    code = ("import json, sys, time\n"
            "from rosbag_tools.export import main\n"
            "t = time.monotonic()\n"
            "rc = main([sys.argv[1], '--out', sys.argv[2], '--no-progress'])\n"
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
            "print(json.dumps({'rc': rc, 's': time.monotonic() - t, 'rss_mb': int(hwm.split()[1]) / 1024}))\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(rosbag_tools.__file__).resolve().parent.parent),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code, str(bag), str(tmp_path / "x")], capture_output=True,
                          text=True, timeout=120, env=env)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 3, proc.stderr
    assert result["s"] < 5.0, result
    assert result["rss_mb"] < 300, result
    why = "more than the cap" if declared == 2**30 else "decompresses to more than the declared 1048576 bytes"
    assert why in proc.stderr, proc.stderr
    rows = exported(tmp_path / "x")
    assert len(rows) == 1 and rows[0]["topic"] == "/thermal/image_raw"
    assert (cv2.imread(str(tmp_path / "x" / rows[0]["file"]), cv2.IMREAD_UNCHANGED) == 7).all()


# ------------------------------------------------------------------------------------------------ sqlite


def test_half_sqlite_bag_yields_its_readable_messages(tmp_path: Path, capsys) -> None:
    intact = small_bag(tmp_path, "sqlite3", 150, "intact")
    msgs = read_all(intact)
    half = tmp_path / "half"
    shutil.copytree(intact, half)
    db = half / "intact.db3"
    with db.open("r+b") as fh:
        fh.truncate(db.stat().st_size // 2)
    with pytest.raises(sqlite3.DatabaseError):  # sqlite itself reads nothing of it
        sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True).execute("SELECT count(*) FROM messages").fetchall()
    out = tmp_path / "x"
    assert export_mod.main([str(half), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert str(db) in err and "rows recovered from its pages" in err, err
    rows = exported(out)
    # the rows of the first half of the file are there (sqlite appends row pages as it inserts), bit for bit
    assert 0.4 * len(msgs) <= len(rows) < len(msgs)
    assert_exported_exactly(out, msgs, {(r["topic"], int(r["bag_time_ns"])) for r in rows})
    assert [(r["topic"], int(r["bag_time_ns"])) for r in rows] == [(tp, t) for tp, t, _ in msgs[:len(rows)]]
    with pytest.raises(BagCorruptError) as info:
        list(BagReader(half).messages())
    assert info.value.skipped == len(msgs) - len(rows)  # metadata.yaml's counts tell how many are missing


# ------------------------------------------------------------------------------------------------ bad CDR


def _corrupt_length(raw: bytes, n_pixels: int) -> bytes:
    """``raw`` (a sensor_msgs/Image) with the length of its pixel array (the u32 before the last ``n_pixels``
    bytes) set to 2**31 - 1."""
    at = len(raw) - n_pixels - 4
    assert struct.unpack_from("<I", raw, at)[0] == n_pixels
    return raw[:at] + struct.pack("<I", 2**31 - 1) + raw[at + 4:]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_corrupted_cdr_length_is_skipped_and_later_messages_kept(tmp_path: Path, capsys, storage: str) -> None:
    """Message 2's pixel array length set to 2**31 - 1, in a sqlite3 bag (no checksums) and in an mcap bag whose
    chunk CRCs are 0 (a writer that computes none): that message is skipped and counted, the others exported."""
    intact = small_bag(tmp_path, storage, 5, "intact")
    msgs = read_all(intact)
    bad = tmp_path / "bad"
    shutil.copytree(intact, bad)
    corrupt = _corrupt_length(msgs[2][2], 48 * 64)
    if storage == "sqlite3":
        con = sqlite3.connect(bad / "intact.db3")
        con.execute("UPDATE messages SET data = ? WHERE id = 3", (corrupt,))
        con.commit()
        con.close()
    else:
        mcap = bad / "intact.mcap"
        reader = McapReader(mcap)
        reader.open()
        starts = [c.chunk_start_offset for c in reader.chunks]
        reader.close()
        blob = bytearray(mcap.read_bytes())
        at = bytes(blob).index(msgs[2][2])
        blob[at:at + len(corrupt)] = corrupt
        for start in starts:
            blob[start + 9 + 24:start + 9 + 28] = bytes(4)
        mcap.write_bytes(bytes(blob))
    out = tmp_path / "x"
    assert export_mod.main([str(bad), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "message index 2 " in err and "message 2 on /thermal/image_raw: does not decode" in err, err
    assert "1 message(s) skipped" in err
    assert_exported_exactly(out, msgs, {(tp, t) for tp, t, _ in msgs[:2] + msgs[3:]})


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_reports_damage_apart_from_drops(tmp_path: Path) -> None:
    """Every fifth frame dropped by the "pipeline", and the output bag truncated at 40%: the frames after the cut
    are lost to damage, not dropped; drop_rate stays that of the readable part."""
    inp = small_bag(tmp_path, "mcap", 60, "in")
    rgb = [(t, raw) for topic, t, raw in read_all(inp) if topic == "/rgb/image_raw"]
    out_bag = tmp_path / "out"
    with BagWriter(out_bag, "mcap") as w:
        w.add_topic("/egmt/fused", IMAGE)
        for k, (t, raw) in enumerate(rgb):
            if k % 5 != 4:
                w.write("/egmt/fused", t + 20_000_000, raw)  # fused = the RGB image, 20 ms later
    mcap = out_bag / "out.mcap"
    with mcap.open("r+b") as fh:
        fh.truncate(int(mcap.stat().st_size * 0.4))
    summary = evaluate_mod.evaluate(inp, out_bag, tmp_path / "rep", metrics="EN", sheet_frames=0, progress=False)
    n, fused = summary["frames_in"], summary["frames_fused"]
    assert n == 60 and 15 <= fused <= 30
    lost = summary["frames_lost_to_damage"]
    assert summary["dropped"] + lost + fused == n
    # drops: exactly the dropped frames before the cut (the last one before it may count as lost: unknown)
    readable = (fused * 5) // 4
    assert summary["dropped"] in (readable // 5, readable // 5 - 1) and summary["dropped"] >= 3
    assert summary["drop_rate"] == pytest.approx(summary["dropped"] / (n - lost))
    assert summary["drop_rate"] < 0.25  # the naive count would be (60 - fused) / 60 > 0.5
    assert summary["bag_damage"]["output"]["damaged_places"] >= 1
    assert summary["bag_damage"]["input"] == {"damaged_places": 0, "messages_skipped": 0}
    assert summary["errors"] and str(mcap) in summary["errors"][0]
    with (tmp_path / "rep" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    first_lost = min(int(r["frame"]) for r in rows if r["lost_to_damage"] == "1")
    assert all(r["lost_to_damage"] == "1" for r in rows[first_lost:] if r["fused"] == "0")
    assert all(int(r["frame"]) % 5 == 4 for r in rows if r["fused"] == "0" and r["lost_to_damage"] == "0")


# ------------------------------------------------------------------------------------------------ fuzz


def _mutate(blob: bytes, rng: np.random.Generator) -> bytes:
    """``blob`` with a few flipped bits, cut short, or a run of garbage or zeros written over it."""
    b = bytearray(blob)
    kind, at, n = int(rng.integers(4)), int(rng.integers(len(b))), int(rng.integers(1, 5000))
    if kind == 0:
        for pos in rng.integers(0, len(b), int(rng.integers(1, 6))):
            b[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        return bytes(b[:at])
    else:
        run = b[at:at + n]
        b[at:at + n] = rng.integers(0, 256, len(run), np.uint8).tobytes() if kind == 2 else bytes(len(run))
    return bytes(b)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_mutated_bags_never_crash_the_reader(tmp_path: Path, storage: str) -> None:
    """60 random mutations (bit flips, truncation, garbage, zeros): reading ends normally or with
    BagCorruptError, never another exception; mcap (CRCs) never yields a message that is not in the intact bag."""
    base = small_bag(tmp_path, storage, 150, "base")
    intact = {(topic, t, raw) for topic, t, raw in read_all(base)}
    storage_file = next(p for p in base.iterdir() if p.suffix in (".mcap", ".db3"))
    blob = storage_file.read_bytes()
    rng = np.random.default_rng(16)
    wrong = 0
    for _ in range(60):
        storage_file.write_bytes(_mutate(blob, rng))
        try:
            wrong += sum((m.topic, m.timestamp, m.data) not in intact for m in BagReader(base).messages())
        except BagCorruptError:
            pass
    if storage == "mcap":
        assert wrong == 0


# ------------------------------------------------------------------------------------------------ types


def test_message_type_strings_import_nothing(tmp_path: Path, monkeypatch) -> None:
    """A bag's (or a remote topic's) type string names a module only if it is an installed interface package."""
    from rosbag_tools.live import message_class

    evil = tmp_path / "evilpkg"
    evil.mkdir()
    marker = tmp_path / "imported"
    (evil / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (evil / "msg.py").write_text(f"open({str(marker)!r}, 'w').close()\nImage = object\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "this" not in sys.modules
    for bad in ("this/msg/Image", "evilpkg/msg/Image", "os/msg/Path", "sensor_msgs/msg/Image; import os",
                "../sensor_msgs/msg/Image", "sensor_msgs/msg/NoSuchType", "sensor_msgs/srv/SetCameraInfo",
                "sensor_msgs.msg/Image", "", "a/msg/B/C"):
        with pytest.raises(UnknownMessageType):
            message_class(bad)
    assert "this" not in sys.modules and "evilpkg" not in sys.modules and not marker.exists()
    assert interface_type("sensor_msgs/msg/Image") == ("sensor_msgs", "Image")
    assert message_class("sensor_msgs/msg/Image").__name__ == "Image"
    assert message_class("vision_msgs/msg/Detection2DArray").__name__ == "Detection2DArray"  # install_interfaces
