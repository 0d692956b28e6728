"""The per-frame fusion path resident on a torch device (CUDA or CPU): batching of N camera pairs per call.

What :meth:`egmt_ros.fusion.engine.FusionEngine.process` does with numpy and OpenCV, in torch on the model's device:

- preprocess: thermal AGC mapping ``clip((counts - offset) / span, 0, 1)`` (NaN -> 0; mono8 / 1/255), homography warp
  into the RGB image (bilinear, zero border: ``cv2.warpPerspective``'s INTER_LINEAR / BORDER_CONSTANT), visible
  BGR/RGB -> float -> BT.601 Y, Cr, Cb with OpenCV's constants (:mod:`egmt_ros.core.color`);
- the network (a ``torch`` or ``compile`` backend's module, its dtype, its entity features);
- postprocess: fused luma + visible chroma -> RGB, clip, ``rint(x * 255)`` -> uint8, BGR order (mono8 for a grey
  visible image).

The AGC's running range (robust percentiles of a subsampled grid, outlier rejection, smoothing) stays with
:class:`egmt_ros.fusion.agc.ThermalAGC` on the host: it needs a few thousand samples per frame, and its
``(offset, span)`` travels to the device inside the frame upload. Per call there is ONE host-to-device copy (a pinned
staging buffer: the offsets, then the N thermal frames, then the N visible frames, byte for byte) and ONE
device-to-host copy (the N uint8 images), no synchronisation in between; with ``cuda_graph=True`` the device part
(pre + network + post) is one ``torch.compile(mode="reduce-overhead")`` CUDA graph per input size and batch.

Tested on the CPU against the numpy path (test/test_device_pipeline.py): AGC and colour within 1e-6, the warp within
cv2's 1/32-pixel interpolation grid, batches equal to single calls.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from egmt_ros.fusion.agc import ThermalAGC
from egmt_ros.fusion.engine import FusionResult, thermal_to_gray

#: OpenCV's float RGB <-> YCrCb constants (cv2.COLOR_RGB2YCrCb / COLOR_YCrCb2RGB), see egmt_ros.core.color.
_Y = (0.299, 0.587, 0.114)
_CR, _CB = 0.713, 0.564
_R_CR, _G_CR, _G_CB, _B_CB = 1.403, -0.714, -0.344, 1.773
_THERMAL_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16,
                   np.dtype(np.float32): torch.float32}


# ----------------------------------------------------------------------------------------------------------------
# the device operations (pure functions on tensors; batch first)
# ----------------------------------------------------------------------------------------------------------------
def agc_map(counts: Tensor, offset: Tensor, span: Tensor) -> Tensor:
    """``[B, H, W]`` counts -> float32 [0, 1]: ``(counts - offset) * (1 / span)``, NaN -> 0, +-inf -> 1 / 0, clipped
    (``offset``, ``span``: ``[B]``, from :meth:`ThermalAGC.update`)."""
    out = (counts.float() - offset[:, None, None]) * (1.0 / span)[:, None, None]
    return torch.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)


def warp_grid(homography: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int],
              device: torch.device | str = "cpu") -> Tensor:
    """The ``grid_sample`` grid ``[1, H, W, 2]`` (align_corners=True) that pulls each RGB pixel from the thermal
    frame through the inverse of ``homography`` (thermal -> RGB pixels), as ``cv2.warpPerspective`` does."""
    h, w = dst_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])
    src = np.linalg.inv(homography) @ pts
    sx, sy = src[0] / src[2], src[1] / src[2]
    sh, sw = src_hw
    grid = np.stack([sx * (2.0 / max(sw - 1, 1)) - 1.0, sy * (2.0 / max(sh - 1, 1)) - 1.0], axis=-1)
    return torch.from_numpy(grid.reshape(1, h, w, 2).astype(np.float32)).to(device)


def warp(ir: Tensor, grid: Tensor | None) -> Tensor:
    """``[B, 1, h, w]`` thermal -> ``[B, 1, H, W]`` on the RGB pixel grid (bilinear, zeros outside); None: as is."""
    if grid is None:
        return ir
    return F.grid_sample(ir, grid.expand(ir.shape[0], -1, -1, -1), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def rgb_to_ycrcb(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``[B, 3, H, W]`` RGB float [0, 1] -> (Y, Cr, Cb) each ``[B, 1, H, W]`` (chroma centred on 0.5)."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    y = _Y[0] * r + _Y[1] * g + _Y[2] * b
    return y, (r - y) * _CR + 0.5, (b - y) * _CB + 0.5


def ycrcb_to_bgr(y: Tensor, cr: Tensor, cb: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycrcb`, in B, G, R channel order, clipped to [0, 1]: ``[B, 3, H, W]``."""
    dr, db = cr - 0.5, cb - 0.5
    return torch.cat([y + _B_CB * db, y + _G_CR * dr + _G_CB * db, y + _R_CR * dr], dim=1).clamp_(0.0, 1.0)


def to_uint8(x: Tensor) -> Tensor:
    """float [0, 1] -> uint8 with rounding half to even and clipping (``egmt_ros.core.images.to_uint8``)."""
    return torch.round(x * 255.0).clamp_(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------------------------
def network_of(method: Any) -> tuple[Callable[[Tensor, Tensor], Tensor], torch.device, torch.dtype]:
    """``(fuse(ir, vi_y) -> fused on tensors [B, 1, H, W], device, dtype)`` of an EGMT fuser on a ``torch`` or
    ``compile`` backend; ValueError for any other method or backend (they take numpy arrays)."""
    backend = getattr(method, "backend", None)
    fuse_tensor = getattr(backend, "fuse_tensor", None)
    if fuse_tensor is None:
        raise ValueError(f"the device pipeline needs an EGMT method on backend 'torch' or 'compile'; "
                         f"{getattr(method, 'name', method)!r} runs on {getattr(backend, 'name', 'numpy')!r}")
    return fuse_tensor, backend.device, backend.dtype


class DeviceFusionPipeline:
    """AGC + registration + colour + EGMT + colour + uint8 for N raw camera pairs per call, on the model's device.

    ``agcs``: one :class:`ThermalAGC` per camera pair (index in the batch; created on first use with ``agc_params``;
    :class:`egmt_ros.fusion.engine.FusionEngine` puts its own there). ``homography`` may change between calls.
    ``cuda_graph``: on CUDA, the device part is compiled with ``torch.compile(mode="reduce-overhead")`` (one CUDA
    graph per size and batch, captured on first use).
    """

    def __init__(self, method: Any, homography: np.ndarray | None = None, cuda_graph: bool = False,
                 **agc_params: Any) -> None:
        self.method = method
        self.fuse_tensor, self.device, self.dtype = network_of(method)
        self.homography = homography
        self.agc_params = agc_params
        self.agcs: list[ThermalAGC] = []
        self._cuda = self.device.type == "cuda"
        self._grids: dict[tuple[tuple[int, int], tuple[int, int], bytes], Tensor] = {}
        self._host: dict[str, Tensor] = {}
        self._copied: Any = None  # CUDA event: the last upload has been copied out of the staging buffer
        self._step: Callable[..., Tensor] = self._device_step
        if cuda_graph and self._cuda:
            self._step = torch.compile(self._device_step, mode="reduce-overhead", dynamic=False)

    # --- host side ---
    def _staging(self, name: str, nbytes: int) -> Tensor:
        """A reusable (pinned on CUDA) host byte buffer of at least ``nbytes``."""
        buf = self._host.get(name)
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self._cuda)
            self._host[name] = buf
        return buf[:nbytes]

    def _grid(self, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Tensor | None:
        if self.homography is None:
            if src_hw != dst_hw:
                raise ValueError(f"size mismatch: thermal is {src_hw[1]}x{src_hw[0]}, RGB is {dst_hw[1]}x{dst_hw[0]}, "
                                 "and no homography is set (parameter 'homography')")
            return None
        key = (src_hw, dst_hw, self.homography.tobytes())
        if key not in self._grids:
            self._grids[key] = warp_grid(self.homography, src_hw, dst_hw, self.device)
        return self._grids[key]

    def _upload(self, thermals: list[np.ndarray], rgbs: list[np.ndarray]) -> Tensor:
        """Offsets/spans + thermal frames + visible frames in one staging buffer, moved with one copy."""
        n = len(thermals)
        header = np.empty((n, 2), np.float32)
        for i, th in enumerate(thermals):
            if len(self.agcs) <= i:
                self.agcs.append(ThermalAGC(**self.agc_params))
            header[i] = (0.0, 255.0) if th.dtype == np.uint8 else self.agcs[i].update(th)
        t_bytes, v_bytes = thermals[0].nbytes, rgbs[0].nbytes
        if self._copied is not None:
            self._copied.synchronize()  # the previous upload has left the staging buffer (fuse_to_device never waits)
        host = self._staging("in", header.nbytes + n * (t_bytes + v_bytes))
        buf = host.numpy()
        buf[: header.nbytes] = header.view(np.uint8).ravel()
        off = header.nbytes
        for th in thermals:
            buf[off: off + t_bytes] = np.ascontiguousarray(th).view(np.uint8).ravel()
            off += t_bytes
        for rgb in rgbs:
            buf[off: off + v_bytes] = np.ascontiguousarray(rgb).view(np.uint8).ravel()
            off += v_bytes
        if not self._cuda:
            return host.to(self.device)  # CPU: the staging buffer itself
        dev = host.to(self.device, non_blocking=True)  # the one host -> device copy
        self._copied = torch.cuda.Event()
        self._copied.record(torch.cuda.current_stream(self.device))
        return dev

    # --- device side ---
    def _device_step(self, dev: Tensor, n: int, t_shape: tuple[int, ...], t_dtype: torch.dtype,
                     v_shape: tuple[int, ...], bgr: bool, grid: Tensor | None) -> Tensor:
        """Staging bytes on the device -> uint8 ``[n, H, W, 3]`` BGR (or ``[n, H, W]`` grey)."""
        head = dev[: n * 8].view(torch.float32).view(n, 2)
        t_len = int(np.prod(t_shape)) * torch.empty((), dtype=t_dtype).element_size()
        v_len = int(np.prod(v_shape))
        off = n * 8
        counts = dev[off: off + n * t_len].view(t_dtype).view(n, *t_shape)
        vis = dev[off + n * t_len: off + n * (t_len + v_len)].view(n, *v_shape)
        ir = agc_map(counts, head[:, 0], head[:, 1])[:, None]
        ir = warp(ir, grid)
        vi = vis.float() / 255.0
        if vi.dim() == 3:  # grey visible
            fused = self.fuse_tensor(ir.to(self.dtype), vi[:, None].to(self.dtype)).float().clamp(0.0, 1.0)
            return to_uint8(fused[:, 0])
        rgb = vi[..., :3].permute(0, 3, 1, 2)
        if bgr:
            rgb = rgb.flip(1)
        y, cr, cb = rgb_to_ycrcb(rgb)
        fused = self.fuse_tensor(ir.to(self.dtype), y.to(self.dtype)).float().clamp(0.0, 1.0)
        return to_uint8(ycrcb_to_bgr(fused, cr, cb)).permute(0, 2, 3, 1).contiguous()

    def _download(self, out: Tensor) -> np.ndarray:
        if not self._cuda:
            return out.numpy()
        host = self._staging("out", out.numel()).view(out.shape)
        host.copy_(out, non_blocking=True)  # the one device -> host copy
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy().copy()

    # --- API ---
    @torch.inference_mode()
    def fuse_to_device(self, thermals: Sequence[np.ndarray], rgbs: Sequence[np.ndarray],
                       rgb_encoding: str = "bgr8") -> Tensor:
        """Fuse N raw pairs into uint8 ``[N, H, W, 3]`` BGR (``[N, H, W]`` grey) left on the device: what a detector
        in the same process takes without a round trip through host memory (``YOLOv5Detector.detect_tensor``)."""
        return self._fuse(thermals, rgbs, rgb_encoding)[0]

    def _fuse(self, thermals: Sequence[np.ndarray], rgbs: Sequence[np.ndarray],
              rgb_encoding: str) -> tuple[Tensor, float]:
        """(the device output, seconds of the host-side preparation and upload)."""
        t0 = time.perf_counter()
        if not thermals or len(thermals) != len(rgbs):
            raise ValueError(f"need as many thermal as RGB frames (>= 1), got {len(thermals)} and {len(rgbs)}")
        ths = [thermal_to_gray(t) for t in thermals]
        if any(t.size == 0 for t in ths) or any(r.size == 0 for r in rgbs):
            raise ValueError("empty image in the batch")
        if len({(t.shape, t.dtype) for t in ths}) != 1 or len({(r.shape, r.dtype) for r in rgbs}) != 1:
            raise ValueError("all thermal frames (and all RGB frames) of a batch must have one shape and dtype")
        if ths[0].dtype not in _THERMAL_DTYPES or rgbs[0].dtype != np.uint8:
            raise ValueError(f"thermal must be uint8/uint16/float32 and RGB uint8; got {ths[0].dtype}, {rgbs[0].dtype}")
        grid = self._grid(ths[0].shape, rgbs[0].shape[:2])
        dev = self._upload(ths, list(rgbs))
        t1 = time.perf_counter()
        return self._step(dev, len(ths), ths[0].shape, _THERMAL_DTYPES[ths[0].dtype], rgbs[0].shape,
                          rgb_encoding.startswith("bgr"), grid), t1 - t0

    @torch.inference_mode()
    def process_batch(self, thermals: Sequence[np.ndarray], rgbs: Sequence[np.ndarray],
                      rgb_encoding: str = "bgr8") -> list[FusionResult]:
        """Fuse N raw pairs (pair i = camera i: its own AGC state); all thermal frames alike in shape and dtype
        (mono8, mono16/16UC1, 32FC1; bgr8 thermal is reduced to grey on the host), all visible frames alike.
        Timings per result: the batch's, divided by N (on CUDA the device work is asynchronous: ``fuse`` is the
        launch time and ``postprocess`` includes the wait for the GPU)."""
        t1 = time.perf_counter()
        out, prep = self._fuse(thermals, rgbs, rgb_encoding)
        t2 = time.perf_counter()
        images = self._download(out)
        t3 = time.perf_counter()
        n = len(thermals)
        timings = {"preprocess": prep / n, "fuse": (t2 - t1 - prep) / n, "postprocess": (t3 - t2) / n}
        enc = "bgr8" if images.ndim == 4 else "mono8"
        return [FusionResult(np.ascontiguousarray(img), enc, timings=dict(timings)) for img in images]

    def process(self, thermal: np.ndarray, rgb: np.ndarray, rgb_encoding: str = "bgr8",
                stamp: float = 0.0) -> FusionResult:
        """One pair (camera 0): :meth:`process_batch` of one. ``stamp`` is accepted for interface parity."""
        return self.process_batch([thermal], [rgb], rgb_encoding)[0]
