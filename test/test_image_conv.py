"""sensor_msgs/Image <-> numpy (egmt_ros.core.codec, egmt_ros.nodes.common.numpy_to_image): exact round trips, padding, byte order, errors, views."""

from __future__ import annotations

import array
import sys

import numpy as np
import pytest
from std_msgs.msg import Header

from egmt_ros.core.codec import (
    NATIVE_BIGENDIAN,
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    encoding_info,
    image_to_numpy,
)
from egmt_ros.nodes.common import numpy_to_image
from sensor_msgs.msg import Image

H, W = 7, 5  # odd sizes catch row/column mix-ups


def _random(encoding: str, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Random content covering the dtype's full range (floats: random values incl. negatives)."""
    dtype, channels = encoding_info(encoding)
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _image(encoding: str, arr: np.ndarray, step: int, bigendian: bool, data: bytes) -> Image:
    msg = Image()
    msg.height, msg.width = arr.shape[0], arr.shape[1]
    msg.encoding = encoding
    msg.step = step
    msg.is_bigendian = bigendian
    msg.data = array.array("B", data)
    return msg


@pytest.mark.parametrize("encoding,dtype,channels", [
    ("mono8", np.uint8, 1), ("mono16", np.uint16, 1), ("16UC1", np.uint16, 1), ("8UC1", np.uint8, 1),
    ("bgr8", np.uint8, 3), ("rgb8", np.uint8, 3), ("bgra8", np.uint8, 4), ("rgba8", np.uint8, 4),
    ("32FC1", np.float32, 1), ("16SC1", np.int16, 1), ("64FC1", np.float64, 1), ("32FC3", np.float32, 3),
])
def test_encoding_info(encoding: str, dtype: type, channels: int) -> None:
    assert encoding_info(encoding) == (np.dtype(dtype), channels)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_encoding_round_trips_exactly(encoding: str) -> None:
    arr = _random(encoding)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_image(arr, encoding, header=header)
    dtype, channels = encoding_info(encoding)
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.step == W * channels * dtype.itemsize
    assert len(msg.data) == H * msg.step
    assert msg.is_bigendian == NATIVE_BIGENDIAN
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    assert bytes(msg.data) == np.ascontiguousarray(arr).tobytes()
    back = image_to_numpy(msg)
    assert back.dtype == dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)


@pytest.mark.parametrize("encoding", ["mono8", "mono16", "bgr8", "rgba8", "32FC1", "16UC1"])
def test_padded_rows_round_trip(encoding: str) -> None:
    arr = _random(encoding, seed=1)
    dtype, channels = encoding_info(encoding)
    row = W * channels * dtype.itemsize
    msg = numpy_to_image(arr, encoding, step=row + 13)
    assert msg.step == row + 13 and len(msg.data) == H * (row + 13)
    raw = np.frombuffer(msg.data, np.uint8).reshape(H, row + 13)
    assert not raw[:, row:].any()  # padding is zero
    back = image_to_numpy(msg)
    assert np.array_equal(back, arr)
    # A padded message built by hand (garbage in the padding) reads the same pixels.
    rows = np.full((H, row + 8), 0xAB, np.uint8)
    rows[:, :row] = np.ascontiguousarray(arr).view(np.uint8).reshape(H, row)
    hand = _image(encoding, arr, row + 8, NATIVE_BIGENDIAN, rows.tobytes())
    assert np.array_equal(image_to_numpy(hand), arr)
    assert np.array_equal(image_to_numpy(hand, copy=True), arr)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
@pytest.mark.parametrize("padding", [0, 6])
def test_other_byte_order_is_swapped_to_native(encoding: str, padding: int) -> None:
    arr = _random(encoding, seed=2)
    dtype, _ = encoding_info(encoding)
    foreign = not NATIVE_BIGENDIAN
    raw = arr.astype(dtype.newbyteorder(">" if foreign else "<"))
    row = raw.shape[1] * dtype.itemsize
    rows = np.zeros((H, row + padding), np.uint8)
    rows[:, :row] = raw.view(np.uint8).reshape(H, row)
    msg = _image(encoding, arr, row + padding, foreign, rows.tobytes())
    back = image_to_numpy(msg)
    assert back.dtype == dtype and back.dtype.isnative
    assert np.array_equal(back, arr)
    assert not np.shares_memory(back, np.frombuffer(msg.data, np.uint8))
    # Reading those bytes as native order would give different values: the flag really matters.
    assert not np.array_equal(rows[:, :row].copy().view(dtype).reshape(arr.shape), arr)


def test_big_endian_mono16_known_value() -> None:
    msg = Image(height=1, width=2, encoding="mono16", is_bigendian=True, step=4)
    msg.data = array.array("B", [0x01, 0x02, 0xFF, 0x00])
    assert image_to_numpy(msg).tolist() == [[0x0102, 0xFF00]]
    msg.is_bigendian = False
    assert image_to_numpy(msg).tolist() == [[0x0201, 0x00FF]]


def test_non_native_input_array_is_written_native() -> None:
    arr = _random("mono16", seed=3)
    swapped = arr.astype(arr.dtype.newbyteorder("S"))
    msg = numpy_to_image(swapped, "mono16")
    assert bytes(msg.data) == arr.tobytes()
    assert np.array_equal(image_to_numpy(msg), arr)


def test_zero_copy_view_when_layout_allows() -> None:
    arr = _random("bgr8", 512, 640, seed=4)
    msg = numpy_to_image(arr, "bgr8")
    view = image_to_numpy(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    view[0, 0, 0] ^= 0xFF  # writing through the view writes the message
    assert msg.data[0] == arr[0, 0, 0] ^ 0xFF
    copied = image_to_numpy(msg, copy=True)
    assert not np.shares_memory(copied, np.frombuffer(msg.data, np.uint8))
    # mono16 and padded rows are views too (strided for padding); bytes buffers give read-only views.
    m16 = numpy_to_image(_random("mono16", seed=5), "mono16", step=W * 2 + 4)
    v16 = image_to_numpy(m16)
    assert np.shares_memory(v16, np.frombuffer(m16.data, np.uint8)) and not v16.flags.c_contiguous
    ro = Image(height=1, width=3, encoding="mono8", step=3)
    ro._data = b"\x01\x02\x03"  # what a raw bytes buffer looks like (bypasses the setter's conversion)
    v = image_to_numpy(ro)
    assert v.tolist() == [[1, 2, 3]] and not v.flags.writeable


def test_numpy_to_image_copies_input() -> None:
    arr = _random("mono8", seed=6)
    msg = numpy_to_image(arr, "mono8")
    arr[0, 0] ^= 0xFF
    assert msg.data[0] == arr[0, 0] ^ 0xFF
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"


def test_non_contiguous_input() -> None:
    big = _random("bgr8", 20, 20, seed=7)
    sub = big[2:9, 3:8]  # 7x5 window: not contiguous
    assert np.array_equal(image_to_numpy(numpy_to_image(sub, "bgr8")), sub)
    rgb = big[:, :, ::-1]  # negative strides
    assert np.array_equal(image_to_numpy(numpy_to_image(rgb, "rgb8")), rgb)
    mono = _random("mono8")[:, :, None]  # H x W x 1 accepted for one channel
    assert image_to_numpy(numpy_to_image(mono, "mono8")).shape == (H, W)


def test_unsupported_encoding_raises() -> None:
    with pytest.raises(ImageConversionError, match="yuv422"):
        encoding_info("yuv422")
    msg = Image(height=2, width=2, encoding="bayer_rggb8", step=2)
    msg.data = array.array("B", bytes(4))
    with pytest.raises(ImageConversionError, match="bayer_rggb8"):
        image_to_numpy(msg)
    with pytest.raises(ImageConversionError, match="nv12"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "nv12")
    assert issubclass(ImageConversionError, ValueError)


def test_zero_size_raises() -> None:
    msg = Image(height=0, width=640, encoding="mono8", step=640)
    with pytest.raises(ImageConversionError, match=r"zero-size mono8.*height=0"):
        image_to_numpy(msg)
    with pytest.raises(ImageConversionError, match="zero-size bgr8"):
        numpy_to_image(np.zeros((0, 4, 3), np.uint8), "bgr8")


def test_buffer_size_mismatch_names_encoding_and_sizes() -> None:
    msg = Image(height=4, width=3, encoding="mono16", step=6)
    msg.data = array.array("B", bytes(23))
    with pytest.raises(ImageConversionError) as exc:
        image_to_numpy(msg)
    text = str(exc.value)
    assert "mono16" in text and "23" in text and "24" in text and "expected" in text
    msg.data = array.array("B", bytes(25))  # too long is also wrong
    with pytest.raises(ImageConversionError, match=r"25 bytes, expected .* 24"):
        image_to_numpy(msg)
    msg.step, msg.data = 5, array.array("B", bytes(20))  # step below width * 2 bytes
    with pytest.raises(ImageConversionError, match=r"step 5 .* 6 bytes"):
        image_to_numpy(msg)


def test_numpy_to_image_rejects_wrong_dtype_shape_and_step() -> None:
    with pytest.raises(ImageConversionError, match="mono16 needs dtype uint16, got uint8"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "mono16")
    with pytest.raises(ImageConversionError, match="32FC1 needs dtype float32, got float64"):
        numpy_to_image(np.zeros((2, 2)), "32FC1")
    with pytest.raises(ImageConversionError, match=r"bgr8 needs an array of shape H x W x 3, got shape \(2, 2\)"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "bgr8")
    with pytest.raises(ImageConversionError, match=r"step 3 .* 6 bytes"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "bgr8", step=3)


def test_list_data_is_accepted() -> None:
    msg = Image(height=1, width=2, encoding="mono8", step=2)
    msg._data = [7, 9]  # a plain list (no buffer protocol), as a hand-built message may hold
    assert image_to_numpy(msg).tolist() == [[7, 9]]


def test_native_flag_matches_host() -> None:
    assert NATIVE_BIGENDIAN == (sys.byteorder == "big")
