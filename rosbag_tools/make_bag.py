"""Turn a pair folder or a pair of videos into a rosbag2 bag that looks like a robot's thermal + RGB cameras.

    python -m rosbag_tools.make_bag (--pairs DIR | --ir-video F --vi-video F) --out BAG [--rate HZ]
        [--storage mcap|sqlite3] [--thermal-encoding mono8|mono16] [--compressed] [--jitter-ms X]
        [--offset-ms X] [--drop-rate P] [--max-frames N] [--seed S] [--camera-info] [--start-time SEC]

Topics: ``/thermal/image_raw`` (mono8 or mono16, frame_id ``thermal_camera``) and ``/rgb/image_raw`` (bgr8,
frame_id ``rgb_camera``); with ``--compressed`` sensor_msgs/CompressedImage on ``.../image_raw/compressed``
instead (png for thermal, jpeg for RGB); with ``--camera-info`` ``/thermal/camera_info`` and ``/rgb/camera_info``.
Every message's bag timestamp equals its header stamp. Images keep their native size.

Simulated camera behaviour (all random draws come from ``--seed``):
- frame k is due at ``start + k / rate``; the thermal stamp is that plus gaussian jitter (``--jitter-ms`` std),
  the RGB stamp is that plus ``--offset-ms`` plus its own jitter;
- each camera drops each frame independently with probability ``--drop-rate`` (its camera_info goes too);
- ``mono16`` thermal frames are raw counts: ``counts = round(7000 + 60 * grey8 + N(0, 8))`` clipped to
  0..65535 (``COUNTS_OFFSET``, ``COUNTS_GAIN``, ``COUNTS_NOISE``), so ``grey8 = round((counts - 7000) / 60)``.
The parameters are stored in metadata.yaml under ``custom_data: egmt_ros.make_bag`` (JSON).
"""

from __future__ import annotations

import argparse
import heapq
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from egmt_ros.core.images import list_pairs
from rosbag_tools.bagio import STORAGES, BagWriter
from rosbag_tools.types import (
    CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, QOS_PROFILES, make_camera_info, make_compressed_image, make_image,
)

THERMAL_TOPIC = "/thermal/image_raw"
RGB_TOPIC = "/rgb/image_raw"
THERMAL_INFO_TOPIC = "/thermal/camera_info"
RGB_INFO_TOPIC = "/rgb/camera_info"
THERMAL_FRAME = "thermal_camera"
RGB_FRAME = "rgb_camera"
#: Counts model of the simulated 16-bit thermal core.
COUNTS_OFFSET = 7000.0
COUNTS_GAIN = 60.0
COUNTS_NOISE = 8.0
#: Horizontal fields of view of the simulated pinhole cameras (degrees).
THERMAL_HFOV = 50.0
RGB_HFOV = 60.0
CUSTOM_DATA_KEY = "egmt_ros.make_bag"


def grey_to_counts(grey: np.ndarray, rng: np.random.Generator | None, noise: float = COUNTS_NOISE) -> np.ndarray:
    """8-bit grey -> simulated uint16 counts ``round(7000 + 60 * grey + N(0, noise))`` clipped to 0..65535."""
    counts = COUNTS_OFFSET + COUNTS_GAIN * grey.astype(np.float64)
    if rng is not None and noise > 0:
        counts = counts + rng.normal(0.0, noise, size=grey.shape)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def counts_to_grey(counts: np.ndarray) -> np.ndarray:
    """Inverse of ``grey_to_counts`` (up to the noise): ``round((counts - 7000) / 60)`` clipped to 0..255, uint8."""
    return np.clip(np.rint((counts.astype(np.float64) - COUNTS_OFFSET) / COUNTS_GAIN), 0, 255).astype(np.uint8)


def ir_to_grey(img: np.ndarray, where: str) -> np.ndarray:
    """An 8-bit IR image as ``H x W`` grey (3 equal channels -> one; colour -> OpenCV BGR2GRAY)."""
    if img.dtype != np.uint8:
        raise ValueError(f"{where}: expected an 8-bit IR image, got {img.dtype}")
    if img.ndim == 3:
        img = img[:, :, :3]
        if np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2]):
            return np.ascontiguousarray(img[:, :, 0])
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def vi_to_bgr(img: np.ndarray, where: str) -> np.ndarray:
    """An 8-bit visible image as ``H x W x 3`` BGR (grey is replicated into three channels, alpha dropped)."""
    if img.dtype != np.uint8:
        raise ValueError(f"{where}: expected an 8-bit visible image, got {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img[:, :, :3])


def _check_sizes(ir: np.ndarray, vi: np.ndarray, where: str) -> None:
    if ir.shape[:2] != vi.shape[:2]:
        raise ValueError(f"{where}: IR is {ir.shape[1]}x{ir.shape[0]} but visible is {vi.shape[1]}x{vi.shape[0]}; "
                         "make_bag keeps native sizes, so the two must match (register/resize them first)")


#: Frames of a source: (name, IR grey uint8 ``H x W``, visible BGR uint8 ``H x W x 3``).
Frames = Iterator[tuple[str, np.ndarray, np.ndarray]]


def iter_pair_folder(folder: str | Path, max_frames: int | None = None) -> tuple[int, Frames]:
    """(frame count, iterator of (name, IR grey uint8, visible BGR uint8)) of a pair folder, sorted by name."""
    pairs = list_pairs(folder)
    if max_frames is not None:
        pairs = pairs[:max_frames]

    def gen() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for name, ir_path, vi_path in pairs:
            ir = cv2.imread(str(ir_path), cv2.IMREAD_UNCHANGED)
            vi = cv2.imread(str(vi_path), cv2.IMREAD_UNCHANGED)
            if ir is None or vi is None:
                raise FileNotFoundError(f"cannot read {ir_path if ir is None else vi_path}")
            ir_g, vi_b = ir_to_grey(ir, str(ir_path)), vi_to_bgr(vi, str(vi_path))
            _check_sizes(ir_g, vi_b, f"pair {name}")
            yield name, ir_g, vi_b

    return len(pairs), gen()


def iter_videos(ir_video: str | Path, vi_video: str | Path, max_frames: int | None = None) -> tuple[int, float, Frames]:
    """(frame count, fps, iterator of (name, IR grey, visible BGR)) reading both videos in lockstep.

    Stops at the shorter video (or ``max_frames``). IR frames are converted to grey as in ``ir_to_grey``.
    """
    caps = [cv2.VideoCapture(str(ir_video)), cv2.VideoCapture(str(vi_video))]
    for cap, p in zip(caps, (ir_video, vi_video)):
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {p}")
    n = int(min(c.get(cv2.CAP_PROP_FRAME_COUNT) for c in caps))
    if max_frames is not None:
        n = min(n, max_frames)
    fps = float(caps[1].get(cv2.CAP_PROP_FPS) or caps[0].get(cv2.CAP_PROP_FPS) or 30.0)

    def gen() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        try:
            for k in range(n):
                ok_ir, ir = caps[0].read()
                ok_vi, vi = caps[1].read()
                if not (ok_ir and ok_vi):
                    return
                ir_g, vi_b = ir_to_grey(ir, f"{ir_video} frame {k}"), vi_to_bgr(vi, f"{vi_video} frame {k}")
                _check_sizes(ir_g, vi_b, f"video frame {k}")
                yield f"{k:06d}", ir_g, vi_b
        finally:
            for c in caps:
                c.release()

    return n, fps, gen()


@dataclass
class MakeBagResult:
    """What make_bag wrote."""

    path: str
    frames: int = 0
    thermal: int = 0
    rgb: int = 0
    dropped_thermal: int = 0
    dropped_rgb: int = 0
    messages: int = 0
    params: dict = field(default_factory=dict)


def make_bag(out: str | Path, *, pairs: str | Path | None = None, ir_video: str | Path | None = None,
             vi_video: str | Path | None = None, rate: float | None = None, storage: str = "mcap",
             thermal_encoding: str = "mono8", compressed: bool = False, jitter_ms: float = 0.0,
             offset_ms: float = 0.0, drop_rate: float = 0.0, max_frames: int | None = None, seed: int = 0,
             camera_info: bool = False, start_time: float | None = None, qos: str = "reliable",
             thermal_noise: float = COUNTS_NOISE, progress: bool = True) -> MakeBagResult:
    """Write the bag ``out`` from a pair folder (``pairs``) or two videos; see the module docstring.

    ``rate`` defaults to the videos' fps, or 30 Hz for a pair folder. ``start_time`` (seconds since the epoch)
    defaults to now. Returns counts of what was written.
    """
    if (pairs is None) == (ir_video is None or vi_video is None):
        raise ValueError("give either pairs or both ir_video and vi_video")
    if thermal_encoding not in ("mono8", "mono16"):
        raise ValueError(f"thermal_encoding must be mono8 or mono16, got {thermal_encoding!r}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if pairs is not None:
        total, frames = iter_pair_folder(pairs, max_frames)
        fps = 30.0
    else:
        total, fps, frames = iter_videos(ir_video, vi_video, max_frames)  # type: ignore[arg-type]
    rate = float(rate or fps)
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    start_ns = time.time_ns() if start_time is None else int(round(start_time * 1e6)) * 1000
    period_ns = 1e9 / rate
    jitter_rng = np.random.default_rng([seed, 1])
    drop_rng = np.random.default_rng([seed, 2])
    noise_rng = np.random.default_rng([seed, 3])
    params = dict(source=str(pairs or f"{ir_video} + {vi_video}"), rate=rate, thermal_encoding=thermal_encoding,
                  compressed=compressed, jitter_ms=jitter_ms, offset_ms=offset_ms, drop_rate=drop_rate, seed=seed,
                  camera_info=camera_info, start_ns=start_ns, counts_offset=COUNTS_OFFSET,
                  counts_gain=COUNTS_GAIN, counts_noise=thermal_noise)
    suffix = "/compressed" if compressed else ""
    t_topic, r_topic = THERMAL_TOPIC + suffix, RGB_TOPIC + suffix
    img_type = COMPRESSED_IMAGE if compressed else IMAGE
    profile = QOS_PROFILES[qos]
    result = MakeBagResult(path=str(out), params=params)
    # a horizon after which no later frame can produce an earlier stamp: messages are written in time order
    horizon = abs(offset_ms) * 1e6 + 8.0 * jitter_ms * 1e6 + 2 * period_ns
    pending: list[tuple[int, int, str, object]] = []
    seq = 0

    if Path(out).exists():
        raise FileExistsError(f"{out} exists already; make_bag never overwrites a bag")
    try:
        with BagWriter(out, storage) as bag:
            bag.add_topic(t_topic, img_type, profile)
            bag.add_topic(r_topic, img_type, profile)
            if camera_info:
                bag.add_topic(THERMAL_INFO_TOPIC, CAMERA_INFO, profile)
                bag.add_topic(RGB_INFO_TOPIC, CAMERA_INFO, profile)
            bar = tqdm(total=total, desc=f"make_bag {Path(out).name}", unit="frame", disable=not progress)
            for k, (_name, ir, vi) in enumerate(frames):
                due = start_ns + int(round(k * period_ns))  # integer ns: float64 cannot hold epoch ns exactly
                t_jit, r_jit = jitter_rng.normal(0.0, jitter_ms, 2) if jitter_ms > 0 else (0.0, 0.0)
                t_stamp = due + int(round(t_jit * 1e6))
                r_stamp = due + int(round((offset_ms + r_jit) * 1e6))
                drop_t, drop_r = (bool(d) for d in drop_rng.random(2) < drop_rate) if drop_rate > 0 else (False, False)
                thermal = grey_to_counts(ir, noise_rng, thermal_noise) if thermal_encoding == "mono16" else ir
                cams = ((drop_t, thermal, thermal_encoding, "png", t_stamp, THERMAL_FRAME, t_topic,
                         THERMAL_INFO_TOPIC, THERMAL_HFOV),
                        (drop_r, vi, "bgr8", "jpeg", r_stamp, RGB_FRAME, r_topic, RGB_INFO_TOPIC, RGB_HFOV))
                for drop, img, enc, fmt, stamp, frame_id, topic, info_topic, hfov in cams:
                    if drop:
                        continue
                    msg = (make_compressed_image(img, fmt, stamp, frame_id) if compressed
                           else make_image(img, enc, stamp, frame_id))
                    heapq.heappush(pending, (stamp, seq, topic, msg))
                    if camera_info:
                        info = make_camera_info(img.shape[1], img.shape[0], stamp, frame_id, hfov)
                        heapq.heappush(pending, (stamp, seq + 1, info_topic, info))
                    seq += 2
                result.thermal += int(not drop_t)
                result.dropped_thermal += int(drop_t)
                result.rgb += int(not drop_r)
                result.dropped_rgb += int(drop_r)
                while pending and pending[0][0] < due - horizon:
                    stamp, _, topic, msg = heapq.heappop(pending)
                    bag.write(topic, stamp, msg)
                result.frames += 1
                bar.update(1)
            while pending:
                stamp, _, topic, msg = heapq.heappop(pending)
                bag.write(topic, stamp, msg)
            bar.close()
            result.messages = bag.count
            bag.set_custom_data(CUSTOM_DATA_KEY, json.dumps(params))
        if result.frames == 0:
            raise ValueError("no frames were read from the source")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-written bag behind
        raise
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m rosbag_tools.make_bag", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="pair folder with ir/ and vi/ (images paired by name)")
    src.add_argument("--ir-video", help="thermal video (read in lockstep with --vi-video)")
    p.add_argument("--vi-video", help="visible video")
    p.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    p.add_argument("--rate", type=float, default=None, help="frame rate in Hz (default: video fps, else 30)")
    p.add_argument("--storage", choices=STORAGES, default="mcap")
    p.add_argument("--thermal-encoding", choices=("mono8", "mono16"), default="mono8")
    p.add_argument("--compressed", action="store_true", help="CompressedImage on .../image_raw/compressed")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="gaussian stamp jitter std (ms)")
    p.add_argument("--offset-ms", type=float, default=0.0, help="fixed RGB-minus-thermal stamp offset (ms)")
    p.add_argument("--drop-rate", type=float, default=0.0, help="per-camera probability of dropping a frame")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--camera-info", action="store_true", help="also write /thermal/camera_info, /rgb/camera_info")
    p.add_argument("--start-time", type=float, default=None, help="first stamp, seconds since the epoch (default now)")
    p.add_argument("--qos", choices=tuple(QOS_PROFILES), default="reliable", help="offered QoS stored in the bag")
    p.add_argument("--thermal-noise", type=float, default=COUNTS_NOISE, help="mono16 counts noise std")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    if args.ir_video and not args.vi_video:
        print("error: --ir-video needs --vi-video", file=sys.stderr)
        return 2
    try:
        res = make_bag(args.out, pairs=args.pairs, ir_video=args.ir_video, vi_video=args.vi_video, rate=args.rate,
                       storage=args.storage, thermal_encoding=args.thermal_encoding, compressed=args.compressed,
                       jitter_ms=args.jitter_ms, offset_ms=args.offset_ms, drop_rate=args.drop_rate,
                       max_frames=args.max_frames, seed=args.seed, camera_info=args.camera_info,
                       start_time=args.start_time, qos=args.qos, thermal_noise=args.thermal_noise,
                       progress=not args.no_progress)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {k: v for k, v in asdict(res).items() if k != "params"}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
