"""The one fusion path (ROS-free): pairing, preprocessing, the method, entity features, TeRF effects, source stamp.

thermal frame (mono8/mono16/16UC1/32FC1/bgr8) -> AGC -> [0, 1] grey -> homography into the RGB image
RGB frame (bgr8/rgb8/mono8) -> RGB float -> luma Y + chroma
fusion method (IR grey, visible Y) -> fused Y -> region effects (TeRF) -> + visible chroma -> 8-bit output

:class:`FusionEngine` is what the fusion node, the fuse CLI, the benchmarks (and so the demo, which runs the node)
and the detection inputs call, so their outputs agree byte for byte. Thread model (the node's): camera callbacks
call ``add_thermal`` / ``add_rgb``; other callbacks call ``set_entities``, ``set_detections``, ``command``,
``reconfigure``; ONE worker calls ``take`` and ``fuse_pair``. Entity words are encoded by the worker (outside the
lock), effects are behind the engine's lock, commands are parsed outside it. Stamps are integer nanoseconds end to
end (the fused image carries its RGB frame's stamp exactly); the region effects compare them in seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import cv2
import numpy as np

from egmt_ros.core.classes import DEFAULT_CLASSES
from egmt_ros.core.color import merge_luma, split_luma
from egmt_ros.core.images import from_uint8, to_uint8
from egmt_ros.core.methods import FusionMethod
from egmt_ros.fusion.agc import ThermalAGC
from egmt_ros.fusion.commands import CommandGate, CommandParser, ParsedCommand
from egmt_ros.fusion.methods import make_method
from egmt_ros.fusion.registration import parse_homography, warp_thermal
from egmt_ros.fusion.stats import LatencyWindow
from egmt_ros.fusion.sync import Pair, StampPairer, Stamped, SyncCounters, stall_reasons
from egmt_ros.fusion.terf import Detections, EffectLimitError, EffectStack

#: The engine's settings and their defaults, named as the fusion node's parameters (config/egmt.yaml).
SETTINGS: dict[str, Any] = {
    "sync.slop": 0.02,
    "sync.queue_size": 10,
    "sync.reorder_window": 0.1,
    "sync.max_future": 10.0,
    "homography": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    "agc.low_percentile": 1.0,
    "agc.high_percentile": 99.0,
    "agc.smoothing": 0.9,
    "model.method": "egmt_rt",
    "model.path": "",
    "model.device": "cpu",
    "model.backend": "openvino",
    "model.dtype": "auto",
    "model.threads": 0,
    "effects.feather": 12.0,
    "effects.max_detection_age": 1.0,
    "command.use_text_encoder": True,
    "command.min_similarity": 0.5,
}
#: Settings :meth:`FusionEngine.reconfigure` changes while running (the rest need a new engine).
RECONFIGURABLE = ("sync.slop", "sync.reorder_window", "sync.max_future", "homography", "agc.low_percentile",
                  "agc.high_percentile", "agc.smoothing", "effects.feather", "effects.max_detection_age", "command.min_similarity")
#: Seconds without a fused image while frames arrive before :meth:`FusionEngine.stall_message` says why.
STALL_S = 2.0


#: Allowed ranges of the numeric settings the pairer, the AGC and the homography do not check themselves.
RANGES: dict[str, tuple[float, float]] = {"effects.feather": (0.0, 1e4), "effects.max_detection_age": (0.0, 1e6),
                                          "command.min_similarity": (-1.0, 1.0)}


def in_range(name: str, value: Any) -> float:
    """``value`` as a float if it lies in ``RANGES[name]``; ValueError with the reason otherwise (NaN included)."""
    lo, hi = RANGES[name]
    v = float(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return v


def thermal_to_gray(frame: np.ndarray) -> np.ndarray:
    """Single-channel view of a thermal frame (a bgr8 thermal camera gives its luma)."""
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        f = frame[:, :, :3].astype(np.float32)
        y = 0.114 * f[..., 0] + 0.587 * f[..., 1] + 0.299 * f[..., 2]  # BGR order
        return np.clip(np.rint(y), 0, 255).astype(np.uint8) if frame.dtype == np.uint8 else y
    raise ValueError(f"unsupported thermal frame shape {frame.shape}")


def _rgb_order(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """A camera frame (grey, or 3/4 channels in ``encoding``'s order) as grey or contiguous RGB: the channels swapped
    in 8 bits by OpenCV (a numpy ``[..., ::-1]`` copy of the float image costs ~10x more)."""
    if rgb.ndim != 3:
        return rgb
    bgr = encoding.startswith("bgr")
    if rgb.shape[2] == 4:
        return cv2.cvtColor(rgb, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(rgb[:, :, :3], cv2.COLOR_BGR2RGB) if bgr else rgb[:, :, :3]


#: A post-fusion step: (fused_y, ir, vi_y, stamp) -> fused_y (the engine's TeRF region effects).
PostStep = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]


def fuse_images(method: FusionMethod, ir: np.ndarray, vi: np.ndarray, post: PostStep | None = None,
                stamp: float = 0.0, bgr: bool = False) -> np.ndarray:
    """Fuse float [0, 1] IR grey and visible grey/RGB images of the same size (then ``post`` on the fused luma).

    Returns the fused image in [0, 1]: RGB (``bgr``: in BGR order) where the visible image is RGB (visible Cb/Cr
    kept), else grey.
    """
    if ir.shape[:2] != vi.shape[:2]:
        raise ValueError(f"size mismatch: IR {ir.shape[1]}x{ir.shape[0]} vs visible {vi.shape[1]}x{vi.shape[0]}")
    vi_y, cbcr = split_luma(vi)
    fused_y = method.fuse(ir, vi_y)
    if post is not None:
        fused_y = post(fused_y, ir, vi_y, stamp)
    return merge_luma(fused_y, cbcr, bgr)


def text_encoder_for(method: FusionMethod, fallback: bool) -> Any:
    """The one text encoder next to ``method``: the model's own when it is entity-guided (EGMT), else MiniLM when
    ``fallback`` (text commands resolve unknown words by similarity), else None. Loaded now, so that the first
    entities or command never stall the fused stream (MiniLM takes seconds to load)."""
    if getattr(method, "uses_text", False):
        return method.text_encoder  # type: ignore[attr-defined]
    if fallback:
        from egmt_ros.model.text import get_text_encoder

        return get_text_encoder()  # MiniLM
    return None


@dataclass
class FusionResult:
    """One fused frame: 8-bit image, its encoding, the source stamp and frame, the time of each stage."""

    image: np.ndarray                      # uint8: H x W x 3 BGR (colour) or H x W (grey)
    encoding: str                          # "bgr8" or "mono8"
    stamp: int = 0                         # the pair's (RGB frame's) stamp, ns
    frame_id: str = ""                     # the RGB camera's frame
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class FusionEngine:
    """The fusion path of :mod:`egmt_ros.fusion.engine` (see there); ROS-free, thread-safe as described."""

    def __init__(self, method: FusionMethod, agc: ThermalAGC | None = None, homography: np.ndarray | None = None,
                 effects: EffectStack | None = None, parser: CommandParser | None = None,
                 pairer: StampPairer | None = None, device_path: bool | None = None) -> None:
        """``device_path``: run :meth:`process` on the model's device (:mod:`egmt_ros.fusion.device`: one copy in,
        one out) while no TeRF effect is active; None = when the method is EGMT on a CUDA torch/compile backend."""
        self.method = method
        self._device: Any = None  # the DeviceFusionPipeline, built on first use
        if device_path is None:
            backend = getattr(method, "backend", None)
            device_path = hasattr(backend, "fuse_tensor") and getattr(backend.device, "type", "") == "cuda"
        self._device_path = bool(device_path)
        self.agc = agc or ThermalAGC()
        self.homography = homography
        self.effects = effects or EffectStack()
        self.parser = parser or CommandParser(DEFAULT_CLASSES)
        self.pairer = pairer or StampPairer()
        self.gate = CommandGate()
        self.entities: list[str] = []
        self.detections_received = 0
        self.lat = {k: LatencyWindow() for k in ("preprocess", "fuse", "postprocess", "total", "receive_to_publish")}
        self._pending_entities: list[str] | None = None
        self._seen_classes: set[str] = set(self.parser.classes)
        self._lock = threading.Lock()
        self._stall: deque[tuple[float, SyncCounters, int]] = deque()  # (time, counters, rejected) per look
        self._resets_told = 0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> FusionEngine:
        """An engine from :data:`SETTINGS`-named values (missing ones take the defaults), e.g. node parameters."""
        s = {**SETTINGS, **settings}
        method = make_method(s["model.method"], model=s["model.path"] or None, device=s["model.device"],
                             backend=s["model.backend"], dtype=s["model.dtype"],
                             threads=s["model.threads"] or max(1, (os.cpu_count() or 2) // 2))
        encoder = text_encoder_for(method, s["command.use_text_encoder"])
        return cls(method, ThermalAGC(s["agc.low_percentile"], s["agc.high_percentile"], s["agc.smoothing"]),
                   parse_homography(s["homography"]),
                   EffectStack(s["effects.feather"], s["effects.max_detection_age"]),
                   CommandParser(DEFAULT_CLASSES, encoder=(lambda w: encoder.encode(list(w))) if encoder else None,
                                 min_similarity=s["command.min_similarity"]),
                   StampPairer(s["sync.slop"], s["sync.queue_size"], s["sync.reorder_window"], s["sync.max_future"]))

    # ---------------------------------------------------------------- settings
    def reconfigure(self, name: str, value: Any) -> None:
        """Change one of :data:`RECONFIGURABLE` while running; ValueError with the reason for a bad value."""
        if name.startswith("sync."):
            setattr(self.pairer, name[len("sync."):], value)  # validated by the pairer
        elif name == "homography":
            self.homography = parse_homography(value)
        elif name.startswith("agc."):
            agc = self.agc
            new = {"agc.low_percentile": agc.low_percentile, "agc.high_percentile": agc.high_percentile,
                   "agc.smoothing": agc.smoothing, name: float(value)}
            self.agc = ThermalAGC(new["agc.low_percentile"], new["agc.high_percentile"], new["agc.smoothing"])
        elif name == "effects.feather":
            self.effects.feather = in_range(name, value)
        elif name == "effects.max_detection_age":
            self.effects.max_detection_age = in_range(name, value)
        elif name == "command.min_similarity":
            self.parser.min_similarity = in_range(name, value)
        else:
            raise ValueError(f"{name} cannot change while running")

    def clock_jumped(self, delta_ns: int, clock_changed: bool = False) -> str:
        """The caller's clock jumped by ``delta_ns`` (or changed kind): time going back by more than the slop (a
        sim-time reset, a replay) resets the pairer at once. Returns why it reset (for a log line), else ''."""
        if not clock_changed and delta_ns >= -self.pairer.slop * 1e9:
            return ""
        why = f"node clock jumped {delta_ns * 1e-9:+.3f} s"
        self.pairer.reset(why)
        return why

    def reset_news(self) -> str:
        """'stamp pairer reset (N so far): why' once per pairer reset since the last call (a replay restarting, a
        clock jump: whoever noticed it), else ''."""
        c = self.pairer.snapshot()
        if c.resets <= self._resets_told:
            return ""
        self._resets_told = c.resets
        return f"stamp pairer reset ({c.resets} so far): {c.last_reset}"

    # ---------------------------------------------------------------- inputs
    def add_thermal(self, frame: np.ndarray, encoding: str, stamp: int, received: float = 0.0,
                    now: int | None = None) -> Pair | None:
        """A thermal frame stamped ``stamp`` ns (``now``: the clock, ns, for ``sync.max_future``); returns the pair
        it completed, if any."""
        return self.pairer.add_thermal(Stamped(stamp, (frame, encoding), received), now)

    def add_rgb(self, frame: np.ndarray, encoding: str, stamp: int, frame_id: str = "", received: float = 0.0,
                now: int | None = None) -> Pair | None:
        """An RGB frame (``frame_id`` becomes the fused image's frame); as :meth:`add_thermal`."""
        return self.pairer.add_rgb(Stamped(stamp, (frame, encoding, frame_id), received), now)

    def take(self, timeout: float = 0.1) -> Pair | None:
        """The newest pair (waits up to ``timeout`` s), or None."""
        return self.pairer.take(timeout=timeout)

    def set_entities(self, labels: list[str]) -> None:
        """Entity words for the following frames (encoded by the worker before its next frame)."""
        with self._lock:
            self.entities = list(labels)
            self._pending_entities = list(labels)
            self.parser.set_vocabulary(sorted(self._seen_classes | set(labels)))

    def set_detections(self, stamp: int, boxes: list[tuple[str, tuple[float, float, float, float]]]) -> None:
        """The latest detections (class, xyxy box) of the frame at ``stamp`` ns: the regions of text commands."""
        new = {c for c, _ in boxes} - self._seen_classes
        with self._lock:
            self.detections_received += 1
            self.effects.set_detections(Detections(stamp * 1e-9, boxes))
            if new:
                self._seen_classes |= new
                self.parser.set_vocabulary(sorted(self._seen_classes | set(self.entities)))

    # ---------------------------------------------------------------- text commands (TeRF)
    def parse(self, text: str) -> ParsedCommand:
        """What ``text`` is understood as (nothing changes). Not under the engine's lock: the worker never waits
        for a parse (the parser caps its own work, see :mod:`egmt_ros.fusion.commands`)."""
        return self.parser.parse(text)

    def apply(self, cmd: ParsedCommand) -> str:
        """Apply a parsed command (an unparseable one changes nothing, nor a new effect beyond the limit); returns
        the answer with the active effects."""
        with self._lock:
            try:
                if cmd.ok and cmd.task == "reset":
                    self.effects.reset()
                elif cmd.ok:
                    self.effects.apply_command(cmd.task, cmd.region, cmd.steps)
            except EffectLimitError as exc:
                cmd.refused = str(exc)
            active = self.effects.describe()
        return f"{cmd.answer()} | active: {', '.join(active) if active else 'none'}"

    def command(self, text: str) -> tuple[bool, str]:
        """Admit (the gate's length and rate caps), parse and apply one command; returns (applied, answer). A flood
        of refused commands is answered a few times a second, not once per command: the other refusals answer ''."""
        refused = self.gate.admit(text)
        if refused:
            return False, refused if self.gate.should_answer() else ""
        cmd = self.parse(text)
        return cmd.ok, self.apply(cmd)

    # ---------------------------------------------------------------- fusion
    def fuse(self, ir: np.ndarray, vi: np.ndarray, stamp: int = 0, bgr: bool = False) -> np.ndarray:
        """Float [0, 1] IR grey + visible grey/RGB -> fused float [0, 1] (grey or RGB; ``bgr``: BGR order), with the
        active effects."""
        self._take_entities()
        return fuse_images(self.method, ir, vi, self._apply_effects, stamp * 1e-9, bgr)

    def _take_entities(self) -> None:
        """Give the method the entity words set since the last frame (encoding may take a while: outside the lock)."""
        with self._lock:
            pending, self._pending_entities = self._pending_entities, None
        if pending is not None and hasattr(self.method, "set_entities"):
            self.method.set_entities(pending)

    def _apply_effects(self, fused: np.ndarray, ir: np.ndarray, vi_y: np.ndarray, seconds: float) -> np.ndarray:
        with self._lock:  # commands never change the effects in the middle of a frame
            return self.effects(fused, ir, vi_y, seconds) if self.effects.effects else fused

    def process(self, thermal: np.ndarray, rgb: np.ndarray, rgb_encoding: str = "bgr8", stamp: int = 0,
                frame_id: str = "") -> FusionResult:
        """Fuse one raw pair. ``rgb`` is uint8 BGR/RGB ``H x W x 3`` (or 4 channels) or grey ``H x W``.

        Raises ValueError with a clear message for empty frames, NaN-only thermal frames and size mismatches.
        """
        t0 = time.perf_counter()
        if thermal.size == 0 or rgb.size == 0:
            raise ValueError(f"empty image: thermal {thermal.shape}, rgb {rgb.shape}")
        if self._device_path and not self.effects.effects:
            return self._record(self._on_device(thermal, rgb, rgb_encoding), stamp, frame_id, t0)
        ir = self.agc(thermal_to_gray(thermal))
        ir = warp_thermal(ir, self.homography, (rgb.shape[1], rgb.shape[0]))
        vi = from_uint8(_rgb_order(rgb, rgb_encoding))
        t1 = time.perf_counter()
        fused = self.fuse(ir, vi, stamp, bgr=True)  # colour comes out in BGR order: the bgr8 image without a copy
        t2 = time.perf_counter()
        out = to_uint8(fused)
        encoding = "bgr8" if out.ndim == 3 else "mono8"
        timings = {"preprocess": t1 - t0, "fuse": t2 - t1, "postprocess": time.perf_counter() - t2}
        return self._record(FusionResult(out, encoding, timings=timings), stamp, frame_id, t0)

    def _record(self, res: FusionResult, stamp: int, frame_id: str, t0: float) -> FusionResult:
        """Stamp and frame of the pair on a result; its stage times into the latency windows."""
        res.stamp, res.frame_id = stamp, frame_id
        for k, v in {**res.timings, "total": time.perf_counter() - t0}.items():
            self.lat[k].add(v)
        return res

    def _on_device(self, thermal: np.ndarray, rgb: np.ndarray, rgb_encoding: str) -> FusionResult:
        """The pair through the device-resident path with this engine's AGC (its running range) and homography."""
        if self._device is None:
            from egmt_ros.fusion.device import DeviceFusionPipeline

            self._device = DeviceFusionPipeline(self.method)
        self._take_entities()
        self._device.homography, self._device.agcs = self.homography, [self.agc]
        return self._device.process(thermal, rgb, rgb_encoding)

    def fuse_pair(self, pair: Pair) -> FusionResult:
        """Fuse a pair from :meth:`take`; the result carries the pair's stamp and the RGB frame id."""
        thermal, _ = pair.thermal.data
        rgb, rgb_encoding, frame_id = pair.rgb.data
        return self.process(thermal, rgb, rgb_encoding, pair.stamp, frame_id)

    # ---------------------------------------------------------------- diagnostics
    def status_values(self) -> dict[str, Any]:
        """Counters, method and backend, entities, effects and stage latencies (p50/p99 ms) for diagnostics."""
        c = self.pairer.snapshot()
        values: dict[str, Any] = {
            "frames_in_thermal": c.thermal_in, "frames_in_rgb": c.rgb_in, "pairs_matched": c.paired,
            "frames_pending": self.pairer.pending(),
            "pairs_fused": c.paired - c.dropped, "pairs_dropped": c.dropped, "frames_unmatched": c.unmatched,
            "frames_stale": c.stale, "frames_future": c.future, "sync_resets": c.resets,
            "last_sync_reset": c.last_reset or "none", "method": self.method.name,
            "entities": ",".join(self.entities), "active_effects": "; ".join(self.effects.describe()),
            "detections_received": self.detections_received,
        }
        backend = getattr(self.method, "backend", None)
        if backend is not None and hasattr(backend, "info"):  # EGMT: threads, device, dtype, providers ...
            values.update({f"backend_{k}": v for k, v in backend.info().items() if k != "backend"})
        for k, w in self.lat.items():
            values[f"{k}_ms_p50"], values[f"{k}_ms_p99"] = w.percentiles_ms(50, 99)
        return values

    def stall_message(self, now: float, fused_silence: float | None, rejected: int) -> str:
        """Call once per diagnostics period: a WARN message when frames arrived in the last :data:`STALL_S` seconds
        but nothing was fused (``fused_silence``: seconds since the last fused image, None if never), naming why
        (``rejected``: the caller's count of refused frames so far), else ''."""
        counters = self.pairer.snapshot()
        self._stall.append((now, counters, rejected))
        while len(self._stall) > 1 and now - self._stall[1][0] >= STALL_S:
            self._stall.popleft()
        t_ref, ref, rejected_ref = self._stall[0]
        arrived = counters.thermal_in + counters.rgb_in - ref.thermal_in - ref.rgb_in + rejected - rejected_ref
        if now - t_ref < STALL_S or not arrived or (fused_silence is not None and fused_silence <= STALL_S):
            return ""
        why = stall_reasons(ref, counters, rejected - rejected_ref) or [
            f"{self.pairer.pending()} frames waiting for a partner or for the fusion worker"]
        since = f"for {fused_silence:.1f} s" if fused_silence is not None else "yet"
        return f"nothing fused {since} while frames arrive: " + "; ".join(why)
