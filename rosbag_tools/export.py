"""Export the images of a bag to PNG files (and optionally one MP4 per image topic).

    python -m rosbag_tools.export BAG --out DIR [--topics T ...] [--video] [--fps F]

Every sensor_msgs/Image and sensor_msgs/CompressedImage message becomes ``DIR/<topic>/<header stamp ns>.png``
(``<topic>`` is the topic name without the leading slash, ``/`` replaced by ``_``; a repeated stamp gets a
``_<n>`` suffix). mono16/16UC1 (and 16-bit colour) stay 16-bit PNG, everything 8-bit stays 8-bit, rgb orders are
written as the usual BGR files, float images go to 32-bit float TIFF. ``DIR/manifest.csv`` lists each file with
its topic, header stamp and bag time. ``--video`` also writes ``DIR/<topic>.mp4`` (OpenCV ``mp4v``; 16-bit and
float frames through a 1-99 percentile stretch to 8 bits) at ``--fps`` or the topic's mean rate in the bag.

A damaged bag (truncated mcap, a chunk failing its CRC, overwritten or missing sqlite pages, a message that does
not decode) is exported as far as it can be read: every readable message, before and after the damage, is written
and each damaged one is skipped and counted; then the command prints the error (file, byte offset / message index
of the first damage, messages skipped) and exits with status 3.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from rosbag_tools.bagio import BagCorruptError, BagReader
from rosbag_tools.types import COMPRESSED_IMAGE, IMAGE, deserialize, message_to_bgr_or_grey, stamp_ns, stretch_to_uint8

IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)


def topic_slug(topic: str) -> str:
    """A file-system name for a topic: ``/thermal/image_raw`` -> ``thermal_image_raw``."""
    return topic.strip("/").replace("/", "_") or "root"


@dataclass
class ExportResult:
    """What export wrote: PNG count per topic, videos, skipped (non-image) messages, and the damage if any
    (``error``, and ``damaged`` = messages skipped as damaged)."""

    out: str
    images: dict[str, int] = field(default_factory=dict)
    videos: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    error: str | None = None
    damaged: int = 0


class _Video:
    """One lazily opened mp4v writer per topic (size fixed by its first frame)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, img: np.ndarray) -> None:
        frame = stretch_to_uint8(img) if img.dtype != np.uint8 else img
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        size = (frame.shape[1], frame.shape[0])
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
            if not self.writer.isOpened():
                raise OSError(f"cannot open video writer {self.path}")
            self.size = size
        if size != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)  # a size change mid-stream
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _topic_fps(reader: BagReader, topic: str) -> float:
    """Mean rate of ``topic`` over the bag's time span (30 when it cannot be told)."""
    n = reader.counts.get(topic, 0)
    span = (reader.end_ns - reader.start_ns) / 1e9
    return float(np.clip((n - 1) / span, 1.0, 240.0)) if n > 1 and span > 0 else 30.0


def export_bag(bag: str | Path, out: str | Path, topics: Sequence[str] | None = None, video: bool = False,
               fps: float | None = None, progress: bool = True) -> ExportResult:
    """Write the images of ``bag`` under ``out`` (see the module docstring).

    Raises BagCorruptError after writing every readable message when the bag is damaged; the ``ExportResult`` is
    on the exception as ``exc.result``.
    """
    reader = BagReader(bag)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out=str(outdir))
    videos: dict[str, _Video] = {}
    used: set[Path] = set()
    total = reader.message_count or None
    bar = tqdm(total=total, desc=f"export {Path(bag).name}", unit="msg", disable=not progress)
    with (outdir / "manifest.csv").open("w", newline="") as fh:
        rows = csv.writer(fh)
        rows.writerow(["index", "topic", "header_stamp_ns", "bag_time_ns", "encoding", "file"])
        try:
            for m in reader.messages(topics):
                bar.update(1)
                if m.msgtype not in IMAGE_TYPES:
                    result.skipped += 1
                    continue
                try:
                    msg = deserialize(m.data, m.msgtype)
                    img = message_to_bgr_or_grey(msg, m.msgtype)
                except Exception as exc:  # noqa: BLE001 - a message that does not decode is damage too: skip it
                    reader.mark_damaged(m, f"does not decode: {type(exc).__name__}: {exc}")
                    continue
                stamp = stamp_ns(msg.header)
                folder = outdir / topic_slug(m.topic)
                folder.mkdir(exist_ok=True)
                ext = ".tiff" if img.dtype.kind == "f" else ".png"
                path, n = folder / f"{stamp}{ext}", 1
                while path in used:
                    path, n = folder / f"{stamp}_{n}{ext}", n + 1
                used.add(path)
                if not cv2.imwrite(str(path), img):
                    raise OSError(f"cannot write {path}")
                encoding = msg.format if m.msgtype == COMPRESSED_IMAGE else msg.encoding
                rows.writerow([m.index, m.topic, stamp, m.timestamp, encoding, path.relative_to(outdir).as_posix()])
                result.images[m.topic] = result.images.get(m.topic, 0) + 1
                if video:
                    if m.topic not in videos:
                        videos[m.topic] = _Video(outdir / f"{topic_slug(m.topic)}.mp4",
                                                 fps or _topic_fps(reader, m.topic))
                    videos[m.topic].add(img)
        except BagCorruptError as exc:
            result.error, result.damaged = str(exc), exc.skipped
            exc.result = result  # type: ignore[attr-defined]
            raise
        finally:
            bar.close()
            for topic, v in videos.items():
                v.close()
                if v.frames:
                    result.videos[topic] = str(v.path)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m rosbag_tools.export", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="bag directory or .mcap/.db3 file")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--topics", nargs="+", default=None, help="only these topics (default: every image topic)")
    p.add_argument("--video", action="store_true", help="also write one MP4 per image topic")
    p.add_argument("--fps", type=float, default=None, help="video frame rate (default: the topic's rate)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 3 when the bag is damaged (every readable message is exported)."""
    args = build_parser().parse_args(argv)
    try:
        res = export_bag(args.bag, args.out, args.topics, args.video, args.fps, progress=not args.no_progress)
    except BagCorruptError as exc:
        partial: ExportResult | None = getattr(exc, "result", None)
        kept = sum(partial.images.values()) if partial else 0
        print(f"error: {exc}\nexported {kept} readable image(s) to {args.out}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {sum(res.images.values())} image(s) to {res.out}: "
          + ", ".join(f"{t} {n}" for t, n in res.images.items())
          + (f"; videos: {', '.join(res.videos.values())}" if res.videos else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
