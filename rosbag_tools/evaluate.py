"""Evaluate a run of the pipeline from bags: the input (cameras) bag and the output bag recorded from the graph.

    python -m rosbag_tools.evaluate --input BAG --output BAG --out DIR [--fused-topic /egmt/fused]
        [--detections-topic /egmt/detections] [--thermal-topic T] [--rgb-topic T] [--metrics NAMES|fast|paper|all]
        [--metric-every N] [--sheet-frames N] [--slop-ms X] [--classes person,...] [--title T] [--screenshot]

What it measures (docs/rosbag_tools.md has the details):
- frames: one input frame per RGB message (the fused stream lives in the RGB camera frame); its thermal partner is
  the thermal message with the nearest header stamp within the slop (default: half the median RGB period).
  A fused message belongs to the frame whose RGB (else thermal) stamp equals its header stamp, else to the
  nearest RGB stamp within the slop. ``dropped`` = input frames with no fused output, except those whose output
  would have been recorded in a damaged part of the output bag: those are ``frames_lost_to_damage`` (unknown
  whether fused), kept out of ``drop_rate``. Bag damage is reported on its own under ``bag_damage``.
- latency (ms) = output bag record (receive) time of the fused message - the publish time of the frame's inputs,
  taken as the later of its RGB/thermal messages. Publish times come from the input topics when the output bag
  recorded them too (record them alongside: that is the reliable way), else from the input bag's own timestamps
  (valid only when both bags were recorded on the same clock; if that gives negative latencies or more than
  10 minutes, latency is reported as unavailable). Detection latency likewise for the detections topic.
- fusion metrics per frame (``egmt_ros.metrics.fusion.compute_all``, 0..255 scale): fused grey/Y (BT.601 Y of a
  colour fused image) against the thermal image and the visible Y. mono16/16UC1 thermal counts are mapped to
  8 bits by a per-frame percentile stretch (1st percentile -> 0, 99th -> 255, linear, clipped). A thermal image
  of another size than the RGB is resized to it (bilinear) for the metrics.
- detections (vision_msgs/Detection2DArray): count per class_id per frame; ``persons`` counts class_id "person";
  the classes of interest (``--classes``, default person) are reported apart from the others.
- the rate is reported as throughput: pairs that arrive while the fusion node is busy are skipped (it fuses the
  newest), so "pairs not fused" is the fusion rate against the camera rate, not a failure count.
- a baseline: the same metrics of the pixel average (thermal + visible Y) / 2 on the same frames.

Writes to DIR: summary.md, summary.json, metrics.csv, metrics_over_time.png, latency_over_time.png,
contact_sheet.png (thermal | rgb | fused | detections for a few frames), report.html (and report.png with
``--screenshot``, rendered by headless Chromium). Returns / prints the summary dict.
"""

from __future__ import annotations

import argparse
import html as htmllib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from egmt_ros.core.codec import detections_to_boxes
from rosbag_tools.bagio import BagCorruptError, BagReader, Damage
from rosbag_tools.types import (
    DETECTION2D_ARRAY, deserialize, header_stamp_of,
    message_to_bgr_or_grey, stamp_ns, stretch_to_uint8,
)

#: Metrics computed by default: the ones that take well under a second per 640x480 frame on a small CPU
#: (PC, FMI_w and FMI_pixel take several seconds each; ask for them with --metrics).
FAST_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "AG", "MI", "SSIM", "Qabf", "PSNR", "CC", "SCD")
PERSON_CLASS = "person"
MAX_PLAUSIBLE_LATENCY_NS = 600 * 1_000_000_000


@dataclass
class Frame:
    """One input frame (an RGB message and its thermal partner) and what the pipeline made of it."""

    index: int
    rgb_stamp: int
    rgb_pub: int
    thermal_stamp: int | None = None
    thermal_pub: int | None = None
    fused_stamp: int | None = None
    fused_rec: int | None = None
    det_rec: int | None = None
    boxes: list[tuple[str, float, float, float, float, float]] | None = None
    latency_ms: float | None = None
    det_latency_ms: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)  # the pixel average (IR + VI) / 2 of the same frame
    lost_to_damage: bool = False  # no fused output found, and it would have been in a damaged part of the output bag

    @property
    def input_pub(self) -> int:
        """When the frame's inputs were all published: the later of the RGB and thermal publish times."""
        return max(self.rgb_pub, self.thermal_pub) if self.thermal_pub is not None else self.rgb_pub


def _resolve_topic(reader: BagReader, topic: str) -> str | None:
    """``topic`` if the bag has it, else ``topic/compressed`` if it has that, else None."""
    if topic in reader.topics:
        return topic
    if topic + "/compressed" in reader.topics:
        return topic + "/compressed"
    return None


def _index(reader: BagReader, topics: Sequence[str], errors: list[str],
           damage: list[Damage]) -> dict[str, list[tuple[int, int]]]:
    """``{topic: [(header stamp, bag time), ...]}`` without decoding images (stamps read from the CDR header); the
    bag's damage goes to ``errors`` (text) and ``damage``."""
    out: dict[str, list[tuple[int, int]]] = {t: [] for t in topics}
    try:
        for m in reader.messages(list(topics)):
            st = header_stamp_of(m.data, m.msgtype)
            if st is not None:
                out[m.topic].append((st, m.timestamp))
    except BagCorruptError as exc:
        errors.append(str(exc))
        damage.extend(exc.damage)
    return out


def _damage_summary(damage: Sequence[Damage]) -> dict[str, Any]:
    """What a bag's damage cost: damaged places and messages skipped (``None`` when a place's loss is unknown)."""
    unknown = any(d.lost is None for d in damage)
    return {"damaged_places": len(damage), "messages_skipped": None if unknown else sum(d.lost or 0 for d in damage)}


def _mark_lost_to_damage(frames: list[Frame], damage: Sequence[Damage], tolerance: int) -> None:
    """Flag the unfused frames whose fused output would have been recorded in a damaged span of the output bag.

    The expected record time of a frame's output is its input publish time plus the median record delay of the
    fused frames (latency plus any clock offset between the bags); with no fused frame at all it cannot be told, and
    every unfused frame of a damaged output bag counts as lost to damage.
    """
    if not damage:
        return
    fused = [f.fused_rec - f.input_pub for f in frames if f.fused_rec is not None]
    delay = int(np.median(fused)) if fused else None
    for f in frames:
        if f.fused_rec is None:
            f.lost_to_damage = delay is None or any(d.covers(f.input_pub + delay, tolerance) for d in damage)


def _nearest(sorted_stamps: np.ndarray, stamp: int, slop: int) -> int | None:
    """Index of the stamp in ``sorted_stamps`` nearest to ``stamp`` if within ``slop`` ns, else None."""
    if sorted_stamps.size == 0:
        return None
    i = int(np.searchsorted(sorted_stamps, stamp))
    best = None
    for j in (i - 1, i):
        if 0 <= j < sorted_stamps.size and abs(int(sorted_stamps[j]) - stamp) <= slop:
            if best is None or abs(int(sorted_stamps[j]) - stamp) < abs(int(sorted_stamps[best]) - stamp):
                best = j
    return best


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


def _grey8(img: np.ndarray) -> np.ndarray:
    """8-bit grey/Y of a decoded image: BT.601 Y of BGR colour, percentile stretch of 16-bit/float."""
    if img.ndim == 3:
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY) if img.dtype == np.uint8 else \
            stretch_to_uint8(img[:, :, :3] @ np.array([0.114, 0.587, 0.299]))
    return stretch_to_uint8(img)


def _bgr8(img: np.ndarray) -> np.ndarray:
    """8-bit BGR for display."""
    a = _grey8(img) if img.dtype != np.uint8 else img
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(a[:, :, :3])


#: Contact sheet tile (width, height): the detections tile is drawn at this size, so its labels are not shrunk.
SHEET_TILE = (320, 240)
#: Box label font scale: about 10 px high letters on a filled band, whatever the image size.
LABEL_SCALE = 0.45


def draw_boxes(bgr: np.ndarray, boxes: Sequence[tuple[str, float, float, float, float, float]],
               classes: Sequence[str] = (PERSON_CLASS,), width: int | None = None) -> np.ndarray:
    """A copy of ``bgr`` (resized to ``width`` pixels wide when given, the boxes with it) with the detection boxes
    and ``class score`` labels drawn: classes of interest in red, the others in orange. Labels are drawn at the
    output size, white on a band of the box colour, so they stay readable in a contact sheet tile."""
    k = 1.0 if width is None else width / bgr.shape[1]
    out = bgr.copy() if width is None else cv2.resize(bgr, (width, max(1, round(bgr.shape[0] * k))),
                                                      interpolation=cv2.INTER_AREA)
    thick = 2 if out.shape[1] >= 480 else 1
    for cls, score, cx, cy, w, h in boxes:
        x1, y1 = int(round((cx - w / 2) * k)), int(round((cy - h / 2) * k))
        x2, y2 = int(round((cx + w / 2) * k)), int(round((cy + h / 2) * k))
        colour = (0, 0, 220) if cls in classes else (0, 140, 255)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        label = f"{cls} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, LABEL_SCALE, 1)
        y = y1 - 3 if y1 - th - 5 >= 0 else y1 + th + 3  # above the box, inside it at the top edge
        x = min(max(0, x1), max(0, out.shape[1] - tw - 2))
        cv2.rectangle(out, (x, y - th - 2), (x + tw + 2, y + base), colour, -1)
        cv2.putText(out, label, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, LABEL_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _decoded(reader: BagReader, topics: Sequence[str], wanted: set[int],
             errors: list[str]) -> Iterator[tuple[str, int, np.ndarray]]:
    """(topic, header stamp, decoded image) of the messages of ``topics`` whose stamp is in ``wanted``."""
    try:
        for m in reader.messages(list(topics)):
            st = header_stamp_of(m.data, m.msgtype)
            if st is None or st not in wanted:
                continue
            try:
                yield m.topic, st, message_to_bgr_or_grey(deserialize(m.data, m.msgtype), m.msgtype)
            except Exception as exc:  # noqa: BLE001 - one bad image should not end the evaluation
                errors.append(f"{reader.file}: message {m.index} on {m.topic} does not decode: {exc}")
    except BagCorruptError as exc:
        errors.append(str(exc))


def evaluate(input_bag: str | Path, output_bag: str | Path, out_dir: str | Path, fused_topic: str = "/egmt/fused",
             detections_topic: str = "/egmt/detections", thermal_topic: str = "/thermal/image_raw",
             rgb_topic: str = "/rgb/image_raw", metrics: Sequence[str] | str = FAST_METRICS, metric_every: int = 1,
             sheet_frames: int = 4, slop_ms: float | None = None, screenshot: bool = False,
             progress: bool = True, extra: Callable[[list[Frame]], dict[str, Any]] | None = None,
             classes: Sequence[str] = (PERSON_CLASS,), title: str | None = None,
             description: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """Evaluate the run (see the module docstring); writes the report files and returns the summary dict.

    ``extra(fused_frames)`` may add entries to the summary (and so to summary.md and report.html), e.g. the demo's
    visible-only detector counts on the same frames; an entry ``headline`` (a sentence) opens the report.
    ``classes``: the detector classes of interest, reported apart from the others (in a scene of people the
    others are mostly false positives). ``title`` and ``description`` (``(what, value)`` rows: sample, model,
    hardware ...) open the report; the default title names the input bag."""
    from egmt_ros.metrics.fusion import METRICS, PAPER_METRICS, compute_all

    names = {"fast": list(FAST_METRICS), "paper": list(PAPER_METRICS), "all": list(METRICS)}.get(
        metrics, metrics.split(",")) if isinstance(metrics, str) else list(metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    notes: list[str] = []
    rin, rout = BagReader(input_bag), BagReader(output_bag)
    t_topic, r_topic = _resolve_topic(rin, thermal_topic), _resolve_topic(rin, rgb_topic)
    if r_topic is None:
        raise ValueError(f"{input_bag}: no {rgb_topic} (or {rgb_topic}/compressed); topics: {', '.join(rin.topics)}")
    if fused_topic not in rout.topics:
        notes.append(f"the output bag has no {fused_topic}: every input frame counts as dropped")
    in_damage: list[Damage] = []
    out_damage: list[Damage] = []
    in_idx = _index(rin, [t for t in (t_topic, r_topic) if t], errors, in_damage)
    out_topics = [t for t in (fused_topic, r_topic, t_topic) if t and t in rout.topics]
    out_idx = _index(rout, out_topics, errors, out_damage)

    rgb = sorted(in_idx[r_topic])
    thermal = sorted(in_idx[t_topic]) if t_topic else []
    periods = np.diff([s for s, _ in rgb])
    period = float(np.median(periods)) if periods.size else 1e8
    slop = int(slop_ms * 1e6) if slop_ms is not None else int(max(period / 2, 1e6))
    t_stamps = np.array([s for s, _ in thermal], dtype=np.int64)
    frames = [Frame(i, s, pub) for i, (s, pub) in enumerate(rgb)]
    for f in frames:
        j = _nearest(t_stamps, f.rgb_stamp, slop)
        if j is not None:
            f.thermal_stamp, f.thermal_pub = thermal[j]

    # publish times: the output bag's own copies of the inputs (same clock as the outputs) when it has them
    rec_rgb = {s: t for s, t in out_idx.get(r_topic, [])}
    rec_thermal = {s: t for s, t in out_idx.get(t_topic, [])} if t_topic else {}
    same_clock = bool(rec_rgb)
    if same_clock:
        for f in frames:
            f.rgb_pub = rec_rgb.get(f.rgb_stamp, f.rgb_pub)
            if f.thermal_stamp is not None:
                f.thermal_pub = rec_thermal.get(f.thermal_stamp, f.thermal_pub)
        notes.append("latency: input publish times from the input topics recorded in the output bag")
    else:
        notes.append("latency: input publish times from the input bag's timestamps (assumes the same clock)")

    by_rgb = {f.rgb_stamp: f for f in frames}
    by_thermal = {f.thermal_stamp: f for f in frames if f.thermal_stamp is not None}
    rgb_stamps = np.array([f.rgb_stamp for f in frames], dtype=np.int64)

    def frame_of(stamp: int) -> Frame | None:
        f = by_rgb.get(stamp) or by_thermal.get(stamp)
        if f is None:
            j = _nearest(rgb_stamps, stamp, slop)
            f = frames[j] if j is not None else None
        return f

    unmatched_outputs = 0
    for stamp, rec in sorted(out_idx.get(fused_topic, []), key=lambda x: x[1]):
        f = frame_of(stamp)
        if f is None or f.fused_rec is not None:
            unmatched_outputs += 1
            continue
        f.fused_stamp, f.fused_rec = stamp, rec
        f.latency_ms = (rec - f.input_pub) / 1e6

    # detections (decoded: small messages)
    det_count = 0
    if detections_topic in rout.topics:
        try:
            for m in rout.messages([detections_topic]):
                try:
                    msg = deserialize(m.data, m.msgtype if m.msgtype else DETECTION2D_ARRAY)
                except Exception as exc:  # noqa: BLE001 - a damaged message: skipped and counted
                    rout.mark_damaged(m, f"does not decode: {type(exc).__name__}: {exc}")
                    continue
                det_count += 1
                f = frame_of(stamp_ns(msg.header))
                if f is not None and f.boxes is None:
                    f.boxes = detections_to_boxes(msg)
                    f.det_rec = m.timestamp
                    f.det_latency_ms = (m.timestamp - f.input_pub) / 1e6
        except BagCorruptError as exc:
            errors.append(str(exc))
    else:
        notes.append(f"the output bag has no {detections_topic}")

    fused_frames = [f for f in frames if f.fused_rec is not None]
    _mark_lost_to_damage(frames, out_damage, slop)
    lat = [f.latency_ms for f in fused_frames if f.latency_ms is not None]
    latency_ok = bool(lat) and min(lat) >= 0 and max(lat) * 1e6 <= MAX_PLAUSIBLE_LATENCY_NS
    if lat and not latency_ok:
        notes.append("latency unavailable: the bags' clocks differ (negative or > 10 min values); record the input "
                     "topics into the output bag to measure it")
        for f in frames:
            f.latency_ms = f.det_latency_ms = None

    # metrics + contact sheet images: stream both bags, decoding only the frames that are needed
    metric_frames = {f.index for k, f in enumerate(fused_frames) if k % max(1, metric_every) == 0}
    picks = [fused_frames[int(round(x))].index for x in np.linspace(0, len(fused_frames) - 1,
                                                                    min(sheet_frames, len(fused_frames)))] \
        if fused_frames and sheet_frames > 0 else []
    need = metric_frames | set(picks)
    sheet: dict[int, dict[str, np.ndarray]] = {}
    cache: dict[int, dict[str, np.ndarray]] = {}
    in_wanted = {frames[i].rgb_stamp for i in need} | {frames[i].thermal_stamp for i in need
                                                        if frames[i].thermal_stamp is not None}
    inputs = _decoded(rin, [t for t in (t_topic, r_topic) if t], in_wanted, errors)
    stamp_to_frame = {}
    for i in need:
        stamp_to_frame[("rgb", frames[i].rgb_stamp)] = i
        if frames[i].thermal_stamp is not None:
            stamp_to_frame[("thermal", frames[i].thermal_stamp)] = i
    fused_wanted = {frames[i].fused_stamp for i in need}
    fused_to_frame = {frames[i].fused_stamp: i for i in need}
    done = 0
    for _, fstamp, fused_img in _decoded(rout, [fused_topic], fused_wanted, errors):
        i = fused_to_frame.get(fstamp)
        if i is None:
            continue
        f = frames[i]
        while "rgb" not in cache.get(i, {}) or (f.thermal_stamp is not None and "thermal" not in cache.get(i, {})):
            nxt = next(inputs, None)
            if nxt is None:
                break
            topic, st, img = nxt
            role = "rgb" if topic == r_topic else "thermal"
            j = stamp_to_frame.get((role, st))
            if j is not None:
                cache.setdefault(j, {})[role] = img
        got = cache.pop(i, {})
        if "rgb" not in got:
            errors.append(f"frame {i}: input RGB image not found in {input_bag}")
            continue
        vi_y = _grey8(got["rgb"])
        if i in metric_frames and "thermal" in got:
            ir8 = _grey8(got["thermal"])
            if ir8.shape != vi_y.shape:
                ir8 = cv2.resize(ir8, (vi_y.shape[1], vi_y.shape[0]), interpolation=cv2.INTER_LINEAR)
            fy = _grey8(fused_img)
            if fy.shape != vi_y.shape:
                errors.append(f"frame {i}: fused {fy.shape[1]}x{fy.shape[0]} != RGB {vi_y.shape[1]}x{vi_y.shape[0]}"
                              "; no metrics")
            else:
                f.metrics = compute_all(fy, ir8, vi_y, names)
                average = np.rint((ir8.astype(np.float32) + vi_y) / 2).astype(np.uint8)
                f.baseline = compute_all(average, ir8, vi_y, names)
        if i in picks:
            sheet[i] = {"thermal": _bgr8(got["thermal"]) if "thermal" in got else None, "rgb": _bgr8(got["rgb"]),
                        "fused": _bgr8(fused_img)}
        done += 1
        if progress and done % 10 == 0:
            print(f"evaluate: {done}/{len(need)} frames", file=sys.stderr, flush=True)

    summary = _summary(frames, fused_frames, names, latency_ok, det_count, unmatched_outputs, notes, errors,
                       input_bag, output_bag, classes)
    summary["title"] = title or f"egmt_ros evaluation of {Path(input_bag).name}"
    summary["description"] = [list(row) for row in description]
    summary["bag_damage"] = {"input": _damage_summary(in_damage), "output": _damage_summary(out_damage)}
    if extra is not None:
        summary.update(extra(fused_frames))
    _write_outputs(out, frames, summary, names, sheet, picks, screenshot)
    return summary


def _summary(frames: list[Frame], fused_frames: list[Frame], names: Sequence[str], latency_ok: bool,
             det_count: int, unmatched_outputs: int, notes: list[str], errors: list[str],
             input_bag: str | Path, output_bag: str | Path, classes: Sequence[str]) -> dict[str, Any]:
    lat = [f.latency_ms for f in fused_frames if f.latency_ms is not None] if latency_ok else []
    dlat = [f.det_latency_ms for f in frames if f.det_latency_ms is not None] if latency_ok else []
    with_det = [f for f in frames if f.boxes is not None]
    per_class: Counter[str] = Counter()
    for f in with_det:
        per_class.update(b[0] for b in f.boxes or [])
    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    mean_metrics = {n: mean([f.metrics[n] for f in frames if n in f.metrics]) for n in names}
    baseline = {n: mean([f.baseline[n] for f in frames if n in f.baseline]) for n in names}
    by_class = {c: n / len(with_det) for c, n in sorted(per_class.items())}
    span_s = (frames[-1].rgb_stamp - frames[0].rgb_stamp) / 1e9 if len(frames) > 1 else 0.0
    period_s = span_s / (len(frames) - 1) if len(frames) > 1 else 0.0
    n_in = len(frames)
    lost = sum(f.lost_to_damage for f in frames)
    dropped = n_in - len(fused_frames) - lost
    return {
        "input_bag": str(input_bag), "output_bag": str(output_bag),
        "frames_in": n_in,
        "frames_paired": sum(f.thermal_stamp is not None for f in frames),
        "frames_fused": len(fused_frames),
        "dropped": dropped,
        "drop_rate": dropped / (n_in - lost) if n_in > lost else None,
        "frames_lost_to_damage": lost,
        "unmatched_outputs": unmatched_outputs,
        "latency_ms": _percentiles(lat),
        "detection_latency_ms": _percentiles(dlat),
        "frames_with_metrics": sum(bool(f.metrics) for f in frames),
        "metrics_mean": mean_metrics,
        "baseline_metrics_mean": baseline,
        "input_rate_hz": 1.0 / period_s if period_s > 0 else None,
        "fused_rate_hz": len(fused_frames) / (span_s + period_s) if span_s > 0 else None,
        "detection_messages": det_count,
        "frames_with_detections": len(with_det),
        "persons_per_frame": (per_class.get(PERSON_CLASS, 0) / len(with_det)) if with_det else None,
        "detections_per_frame_by_class": by_class,
        "classes_of_interest": list(classes),
        "detections_per_frame_of_interest": {c: by_class.get(c, 0.0) for c in classes} if with_det else {},
        "detections_per_frame_other": {c: v for c, v in by_class.items() if c not in classes},
        "notes": notes,
        "errors": list(dict.fromkeys(errors)),  # each bag's damage is met by every pass over it: said once
    }


def _plot(out: Path, frames: list[Frame], names: Sequence[str]) -> list[str]:
    """metrics_over_time.png and latency_over_time.png (matplotlib, Agg); returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = frames[0].rgb_stamp if frames else 0
    written = []
    with_m = [f for f in frames if f.metrics]
    shown = [n for n in names if any(n in f.metrics for f in with_m)]
    fig, axes = plt.subplots(max(1, len(shown)), 1, figsize=(8, 1.6 * max(1, len(shown)) + 0.6), sharex=True,
                             squeeze=False)
    for ax, n in zip(axes[:, 0], shown):
        ax.plot([(f.rgb_stamp - t0) / 1e9 for f in with_m], [f.metrics[n] for f in with_m], ".-", lw=1, ms=3)
        ax.set_ylabel(n, fontsize=8)
        ax.grid(alpha=0.3)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no metrics (no fused frames)", ha="center", va="center")
    axes[-1, 0].set_xlabel("input time (s)")
    fig.suptitle("Fusion metrics per frame")
    fig.tight_layout()
    fig.savefig(out / "metrics_over_time.png", dpi=80)
    plt.close(fig)
    written.append("metrics_over_time.png")

    fig, ax = plt.subplots(figsize=(8, 3))
    fl = [f for f in frames if f.latency_ms is not None]
    dl = [f for f in frames if f.det_latency_ms is not None]
    if fl:
        ax.plot([(f.rgb_stamp - t0) / 1e9 for f in fl], [f.latency_ms for f in fl], ".-", lw=1, ms=3, label="fused")
    if dl:
        ax.plot([(f.rgb_stamp - t0) / 1e9 for f in dl], [f.det_latency_ms for f in dl], ".-", lw=1, ms=3,
                label="detections")
    # pairs the node skipped while busy have no latency and are not drawn (their number is the fusion rate)
    damaged = [f for f in frames if f.lost_to_damage]
    if damaged:
        ax.plot([(f.rgb_stamp - t0) / 1e9 for f in damaged], [0] * len(damaged), "k+", ms=4, label="lost to bag damage")
    if not (fl or dl or damaged):
        ax.text(0.5, 0.5, "latency unavailable", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("input time (s)")
    ax.set_ylabel("latency (ms)")
    ax.grid(alpha=0.3)
    if fl or dl or damaged:
        ax.legend(fontsize=8)
    ax.set_title("End-to-end latency")
    fig.tight_layout()
    fig.savefig(out / "latency_over_time.png", dpi=80)
    plt.close(fig)
    written.append("latency_over_time.png")
    return written


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _write_outputs(out: Path, frames: list[Frame], summary: dict[str, Any], names: Sequence[str],
                   sheet: dict[int, dict[str, np.ndarray]], picks: list[int], screenshot: bool) -> None:
    from egmt_ros import report

    classes = sorted(summary["detections_per_frame_by_class"])
    fields = (["frame", "rgb_stamp_ns", "thermal_stamp_ns", "fused_stamp_ns", "fused", "lost_to_damage", "latency_ms",
               "detection_latency_ms", "detections"] + list(names) + [f"average_{n}" for n in names]
              + [f"n_{c}" for c in classes])
    rows = []
    for f in frames:
        counts = Counter(b[0] for b in f.boxes or [])
        row = {"frame": f.index, "rgb_stamp_ns": f.rgb_stamp, "thermal_stamp_ns": f.thermal_stamp,
               "fused_stamp_ns": f.fused_stamp, "fused": int(f.fused_rec is not None),
               "lost_to_damage": int(f.lost_to_damage), "latency_ms": f.latency_ms,
               "detection_latency_ms": f.det_latency_ms, "detections": None if f.boxes is None else len(f.boxes)}
        row.update(f.metrics)
        row.update({f"average_{n}": v for n, v in f.baseline.items()})
        if f.boxes is not None:
            row.update({f"n_{c}": counts.get(c, 0) for c in classes})
        rows.append(row)
    report.write_csv(out / "metrics.csv", rows, fields)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plots = _plot(out, frames, names)

    has_sheet = bool(picks)
    if has_sheet:
        grid, titles = [], []
        for i in picks:
            s = sheet.get(i, {})
            fused = s.get("fused")
            det = None if fused is None else draw_boxes(fused, frames[i].boxes or [], summary["classes_of_interest"],
                                                        width=SHEET_TILE[0])
            grid.append([None if s.get(k) is None else cv2.cvtColor(s[k], cv2.COLOR_BGR2RGB)
                         for k in ("thermal", "rgb", "fused")] + [None if det is None else
                                                                  cv2.cvtColor(det, cv2.COLOR_BGR2RGB)])
            titles.append(f"frame {i}  t={(frames[i].rgb_stamp - frames[0].rgb_stamp) / 1e9:.2f}s")
        img = report.contact_sheet(grid, ["thermal", "rgb", "fused", "detections"], titles, tile=SHEET_TILE)
        report.save_png(out / "contact_sheet.png", img)

    sections = _sections(summary, names)
    headline = summary.get("headline")
    files = ["metrics.csv", *plots] + (["contact_sheet.png"] if has_sheet else []) + ["report.html"]
    md = [f"# {summary['title']}", ""] + ([f"**{headline}**", ""] if headline else [])
    for heading, table, note in sections:
        md += [f"## {heading}", "", *(f"| {' | '.join(row)} |" for row in table[:1]),
               "|" + "---|" * len(table[0]), *(f"| {' | '.join(row)} |" for row in table[1:]), ""]
        md += [note, ""] if note else []
    md += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [f"- ERROR: {e}" for e in summary["errors"]]
    md += ["", "Files: " + ", ".join(files), ""]
    (out / "summary.md").write_text("\n".join(md))

    esc = htmllib.escape
    body = [f'<p class="headline"><b>{esc(headline)}</b></p>'] if headline else []
    for heading, table, note in sections:
        body.append(f"<h2>{esc(heading)}</h2><table>")
        body.append("<tr>" + "".join(f"<th>{esc(c)}</th>" for c in table[0]) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table[1:]]
        body.append("</table>" + (f'<p class="note">{esc(note)}</p>' if note else ""))
    if has_sheet:
        body.append('<h2>Frames</h2><img class="sheet" src="contact_sheet.png" alt="contact sheet">')
    body.append("<h2>Over time</h2>")
    body += [f'<img class="sheet" src="{p}" alt="{p}">' for p in plots]
    body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in summary["notes"])
                + "".join(f"<li><b>ERROR</b>: {esc(e)}</li>" for e in summary["errors"]) + "</ul>")
    body.append('<p>Per-frame values: <a href="metrics.csv">metrics.csv</a>, '
                '<a href="summary.json">summary.json</a></p>')
    (out / "report.html").write_text(report.html_page(summary["title"], "\n".join(body)))
    if screenshot:
        report.screenshot_html(out / "report.html", out / "report.png")


def per_frame_label(cls: str) -> str:
    """The row title of a class's detections per frame ("persons per frame" for the person class)."""
    return "persons per frame" if cls == PERSON_CLASS else f"{cls} detections per frame"


def _sections(summary: dict[str, Any], names: Sequence[str]) -> list[tuple[str, list[list[str]], str]]:
    """The report's tables as ``(heading, [header row, rows...], note)``, rendered alike in summary.md and
    report.html: what was run, the summary (rate as throughput), detections, fusion metrics with a legend."""
    from egmt_ros.metrics.fusion import LEGEND, METRICS

    lat, dlat = summary["latency_ms"], summary["detection_latency_ms"]
    run = [["what", "value"], *summary["description"], ["input bag", summary["input_bag"]],
           ["output bag", summary["output_bag"]]]
    hz = lambda v: "-" if v is None else f"{v:.1f} Hz"  # noqa: E731
    rows = [["quantity", "value"],
            ["input frames", str(summary["frames_in"])],
            ["frames with a thermal partner", str(summary["frames_paired"])],
            ["fused frames", str(summary["frames_fused"])],
            ["fusion rate (throughput)", f"{hz(summary['fused_rate_hz'])} fused of {hz(summary['input_rate_hz'])} "
                                         "camera pairs"],
            ["pairs not fused", f"{summary['dropped']}: arrived while the fusion node was busy with an earlier pair "
                                "(it always takes the newest); the fusion rate, not failures"]]
    if summary["frames_lost_to_damage"]:
        rows.append(["lost to bag damage (not counted above)", str(summary["frames_lost_to_damage"])])
    rows += [[f"{k} bag damage: places / messages skipped", f"{v['damaged_places']} / {_fmt(v['messages_skipped'])}"]
             for k, v in summary.get("bag_damage", {}).items() if v["damaged_places"]]
    rows += [["latency mean / p50 / p99 / max (ms)", " / ".join(_fmt(lat[k], 1) for k in ("mean", "p50", "p99", "max"))],
             ["detection latency mean / p50 / p99 (ms)", " / ".join(_fmt(dlat[k], 1) for k in ("mean", "p50", "p99"))]]
    classes = summary["classes_of_interest"]
    other = summary["detections_per_frame_other"]
    det = [["quantity", "value"], ["frames with detections", str(summary["frames_with_detections"])]]
    det += [[per_frame_label(c), _fmt(v, 2)] for c, v in summary["detections_per_frame_of_interest"].items()]
    det.append(["other classes, detections per frame",
                ", ".join(f"{c} {v:.2f}" for c, v in sorted(other.items(), key=lambda x: -x[1])) or "none"])
    det_note = (f"Classes of interest: {', '.join(classes)} (evaluate --classes, demo --classes). The other classes "
                "come from the COCO detector; in a scene of people they are mostly false positives.")
    base = summary.get("baseline_metrics_mean", {})
    metrics = [["metric", "what it measures", "unit", "range", "better", "fused (mean)", "pixel average (mean)"]]
    metrics += [[n, LEGEND.get(n, ("", ""))[0], METRICS[n].unit, LEGEND.get(n, ("", ""))[1],
                 "higher" if METRICS[n].higher_is_better else "lower", _fmt(summary["metrics_mean"][n], 4),
                 _fmt(base.get(n), 4)] for n in names]
    metric_note = (f"Means over the {summary['frames_with_metrics']} fused frames with metrics, on grey levels "
                   "0..255 (fused Y against the thermal image and the visible Y). Baseline: the pixel average "
                   "(thermal + visible Y) / 2 of the same frames. Formulas and references: docs/metrics.md.")
    return [("What was run", run, ""), ("Summary", rows, ""), ("Detections", det, det_note),
            ("Fusion metrics", metrics, metric_note)]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m rosbag_tools.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="input (camera) bag")
    p.add_argument("--output", required=True, help="output bag recorded from the pipeline (may be the same bag)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--fused-topic", default="/egmt/fused")
    p.add_argument("--detections-topic", default="/egmt/detections")
    p.add_argument("--thermal-topic", default="/thermal/image_raw")
    p.add_argument("--rgb-topic", default="/rgb/image_raw")
    p.add_argument("--metrics", default="fast", help="fast (default), paper, all, or comma-separated names")
    p.add_argument("--metric-every", type=int, default=1, help="compute metrics on every N-th fused frame")
    p.add_argument("--sheet-frames", type=int, default=4, help="frames on the contact sheet")
    p.add_argument("--slop-ms", type=float, default=None, help="stamp matching tolerance (default: half a period)")
    p.add_argument("--classes", default=PERSON_CLASS,
                   help="detector classes of interest, comma-separated (default person); the others are listed apart")
    p.add_argument("--title", default=None, help="report title (default: names the input bag)")
    p.add_argument("--screenshot", action="store_true", help="render report.html to report.png (headless Chromium)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: prints the summary as JSON; 0 on success, 3 if a bag was damaged (report still written)."""
    args = build_parser().parse_args(argv)
    try:
        summary = evaluate(args.input, args.output, args.out, args.fused_topic, args.detections_topic,
                           args.thermal_topic, args.rgb_topic, args.metrics, args.metric_every, args.sheet_frames,
                           args.slop_ms, args.screenshot, progress=not args.no_progress,
                           classes=[c.strip() for c in args.classes.split(",") if c.strip()], title=args.title)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 3 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
