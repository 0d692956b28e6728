"""The ROS-free image and detection codec: sensor_msgs/Image fields <-> numpy, vision_msgs/Detection2DArray -> boxes.

One codec for the nodes (rclpy messages) and rosbag_tools (rosbags dataclasses): both message kinds have the same
field names, so the decoders read any object with those fields, and :func:`image_fields` gives the fields that the
callers put into their own message class (``egmt_ros.nodes.common.numpy_to_image``, ``rosbag_tools.types.make_image``).
No cv_bridge, no rclpy here.

``image_to_numpy`` returns a view of the message buffer whenever the layout allows it (native byte order; row
padding is expressed with strides, so padded rows are a non-contiguous view), and a native-order copy when the
message is in the other byte order. ``image_fields`` makes ``data`` with a single memory copy.

Arrays are ``H x W`` for one channel and ``H x W x C`` otherwise, in the message's channel order (bgr8 stays BGR).
Supported encodings: the ROS names (mono8, mono16, bgr8, rgb8, bgra8, rgba8, bgr16, rgb16, bgra16, rgba16) and the
OpenCV-style names ``{8,16,32,64}{U,S,F}C{1..4}`` (8UC1, 16UC1, 32FC1, ...).
"""

from __future__ import annotations

import array
import re
import sys

import numpy as np
from typing import Any, Iterable

__all__ = ["ImageConversionError", "encoding_info", "image_to_numpy", "image_fields", "detections_to_boxes",
           "SUPPORTED_ENCODINGS"]

#: True on a big-endian host: the value ``image_fields`` writes into ``is_bigendian``.
NATIVE_BIGENDIAN: bool = sys.byteorder == "big"

_NAMED: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgr16": (np.dtype(np.uint16), 3),
    "rgb16": (np.dtype(np.uint16), 3),
    "bgra16": (np.dtype(np.uint16), 4),
    "rgba16": (np.dtype(np.uint16), 4),
}
_CV_PATTERN = re.compile(r"^(8|16|32|64)([USF])C([1-4])$")
_CV_KINDS = {"U": "u", "S": "i", "F": "f"}

#: Encodings the tests cover explicitly (every ``{8,16,32,64}{U,S,F}C{1..4}`` with a numpy dtype also works).
SUPPORTED_ENCODINGS: tuple[str, ...] = (
    "mono8", "mono16", "8UC1", "16UC1", "bgr8", "rgb8", "bgra8", "rgba8", "32FC1",
    "bgr16", "rgb16", "bgra16", "rgba16", "8UC3", "16SC1", "32SC1", "64FC1", "32FC3",
)


class ImageConversionError(ValueError):
    """An Image message or array that cannot be converted (unsupported encoding, empty, sizes that disagree)."""


def encoding_info(encoding: str) -> tuple[np.dtype, int]:
    """The native-order numpy dtype of one channel and the channel count of ``encoding``.

    Raises ImageConversionError for an encoding this module does not know (bayer, yuv422, ...).
    """
    if encoding in _NAMED:
        return _NAMED[encoding]
    m = _CV_PATTERN.match(encoding)
    if m is not None:
        bits, kind, channels = int(m.group(1)), _CV_KINDS[m.group(2)], int(m.group(3))
        if not (kind == "f" and bits == 8):
            return np.dtype(f"{kind}{bits // 8}"), channels
    raise ImageConversionError(
        f"unsupported image encoding {encoding!r} (supported: {', '.join(_NAMED)} and "
        "{8,16,32,64}{U,S,F}C{1..4}, no 8-bit float)")


def _shape(height: int, width: int, channels: int) -> tuple[int, ...]:
    return (height, width) if channels == 1 else (height, width, channels)


def image_to_numpy(msg: Any, copy: bool = False) -> np.ndarray:
    """The pixels of ``msg`` (any object with Image's fields) as an ``H x W`` or ``H x W x C`` array of the encoding's dtype, in native byte order.

    Without ``copy`` the result is a view of ``msg.data`` when the message is in native byte order (writing into it
    writes into the message; a ``bytes`` buffer gives a read-only view); rows padded beyond ``width * pixel size``
    give a strided, non-contiguous view. A message in the other byte order is always copied and swapped.
    Raises ImageConversionError for an unsupported encoding, a zero-size image, or sizes that disagree.
    """
    dtype, channels = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if height == 0 or width == 0:
        raise ImageConversionError(
            f"zero-size {msg.encoding} image: height={height}, width={width}")
    if step < row_bytes:
        raise ImageConversionError(
            f"{msg.encoding} image {width}x{height}: step {step} is smaller than width*channels*itemsize = "
            f"{width}*{channels}*{dtype.itemsize} = {row_bytes} bytes")
    data = msg.data
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints (allowed by the message class) has no buffer
        buf = np.asarray(data, dtype=np.uint8)
    expected = height * step
    if buf.size != expected:
        raise ImageConversionError(
            f"{msg.encoding} image {width}x{height}: data has {buf.size} bytes, expected height*step = "
            f"{height}*{step} = {expected} bytes")
    swap = dtype.itemsize > 1 and bool(msg.is_bigendian) != NATIVE_BIGENDIAN
    src_dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<") if swap else dtype
    shape = _shape(height, width, channels)
    if step == row_bytes:
        arr = buf.view(src_dtype).reshape(shape)
    else:
        strides = (step, channels * dtype.itemsize, dtype.itemsize)[: len(shape)]
        arr = np.ndarray(shape, dtype=src_dtype, buffer=buf, offset=0, strides=strides)
        if not buf.flags.writeable:
            arr.flags.writeable = False
    if swap:
        return arr.astype(dtype)  # copy in native order
    return arr.copy() if copy else arr


def image_fields(arr: np.ndarray, encoding: str, step: int | None = None) -> dict[str, Any]:
    """The fields of a sensor_msgs/Image holding ``arr`` (``H x W`` or ``H x W x C`` of the encoding's dtype) in
    native byte order: ``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``.

    ``step`` (bytes per row) may exceed ``width * pixel size``: rows are then zero-padded. The dtype must match the
    encoding's exactly (no silent casts); any byte order is accepted. One memory copy of the pixels into ``data``
    (an ``array.array('B')``, what rclpy messages hold without another copy), two when padding.
    """
    dtype, channels = encoding_info(encoding)
    a = np.asarray(arr)
    if a.ndim == 3 and channels == 1 and a.shape[2] == 1:
        a = a[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if a.ndim != expected_ndim or (channels > 1 and a.shape[2] != channels):
        want = "H x W" if channels == 1 else f"H x W x {channels}"
        raise ImageConversionError(f"{encoding} needs an array of shape {want}, got shape {a.shape}")
    if a.dtype.kind != dtype.kind or a.dtype.itemsize != dtype.itemsize:
        raise ImageConversionError(f"{encoding} needs dtype {dtype.name}, got {a.dtype}")
    height, width = int(a.shape[0]), int(a.shape[1])
    if a.size == 0:
        raise ImageConversionError(f"zero-size {encoding} array: shape {a.shape}")
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageConversionError(
            f"{encoding} image {width}x{height}: step {step} is smaller than width*channels*itemsize = "
            f"{width}*{channels}*{dtype.itemsize} = {row_bytes} bytes")
    if a.dtype.byteorder not in ("=", "|"):  # explicit '<' or '>' that may not be native
        a = a.astype(dtype)
    if step != row_bytes:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = np.ascontiguousarray(a).view(np.uint8).reshape(height, row_bytes)
        a = padded
    else:
        a = np.ascontiguousarray(a)
    data = array.array("B")
    data.frombytes(memoryview(a).cast("B"))
    return {"height": height, "width": width, "encoding": encoding, "is_bigendian": NATIVE_BIGENDIAN,
            "step": step, "data": data}


def detections_to_boxes(msg: Any) -> list[tuple[str, float, float, float, float, float]]:
    """``(class_id, score, cx, cy, w, h)`` of each detection of a vision_msgs/Detection2DArray (any object with its
    fields), from its best hypothesis; class ``''`` and score 0 when a detection has none."""
    out = []
    for d in msg.detections:
        best = max(d.results, key=lambda r: r.hypothesis.score, default=None)
        cls, score = (best.hypothesis.class_id, float(best.hypothesis.score)) if best is not None else ("", 0.0)
        c = d.bbox.center.position
        out.append((cls, score, float(c.x), float(c.y), float(d.bbox.size_x), float(d.bbox.size_y)))
    return out


def xyxy_boxes(boxes: Iterable[tuple[str, float, float, float, float, float]]
               ) -> list[tuple[str, tuple[float, float, float, float]]]:
    """``(class_id, (x1, y1, x2, y2))`` of the named boxes among ``(class_id, score, cx, cy, w, h)``."""
    return [(c, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)) for c, _, cx, cy, w, h in boxes if c]
