"""Message types and message builders for bags written and read with ``rosbags`` (no rclpy here).

The typestore is rosbags' ``Stores.ROS2_KILTED`` plus the vision_msgs types the pipeline publishes
(``vision_msgs/msg/Detection2DArray`` and what it needs, and ``Classification``). vision_msgs is not in
rosbags' store and not installable here, so its ``.msg`` definitions are written out **inline** below,
field for field as in ros-perception/vision_msgs 4.x (the ROS 2 Humble..Kilted API). The type hashes
(RIHS01) rosbags computes from them are written into the bags' metadata.

Messages here are rosbags dataclasses, not rclpy messages: build them with the helpers below
(``make_image``, ``make_compressed_image``, ``make_camera_info``, ``make_detections``) and turn them into CDR
with ``serialize``. Raw images and detections are read back with the one ROS-free codec,
``egmt_ros.core.codec`` (``image_to_numpy``, ``detections_to_boxes``), which the nodes use too;
``compressed_to_array`` decodes compressed images.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

import cv2
import numpy as np
from rosbags.interfaces import Nodetype, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from egmt_ros.core.codec import ImageConversionError, image_fields, image_to_numpy

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
CLOCK = "rosgraph_msgs/msg/Clock"
DETECTION2D_ARRAY = "vision_msgs/msg/Detection2DArray"

#: vision_msgs 4.x message definitions (comments dropped), registered into the typestore.
VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D":
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n",
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/Classification": "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n",
}

_ZERO = QosTime(0, 0)
#: What a camera driver with default (reliable) QoS offers; the default written by make_bag.
QOS_RELIABLE = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                   _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)
#: ``rclpy.qos.qos_profile_sensor_data``: best effort, keep last 5.
QOS_SENSOR = Qos(QosHistory.KEEP_LAST, 5, QosReliability.BEST_EFFORT, QosDurability.VOLATILE,
                 _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)
QOS_PROFILES: dict[str, Qos] = {"reliable": QOS_RELIABLE, "sensor": QOS_SENSOR}


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """rosbags' ROS 2 Kilted typestore with the vision_msgs types registered (built once)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def serialize(msg: object, msgtype: str) -> bytes:
    """CDR (little endian) bytes of a rosbags message of type ``msgtype``."""
    return bytes(typestore().serialize_cdr(msg, msgtype))


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    """The rosbags dataclass of the CDR bytes ``raw``; raises on a type the store does not know."""
    return typestore().deserialize_cdr(raw, msgtype)


def split_ns(stamp_ns: int) -> tuple[int, int]:
    """Nanoseconds -> (sec, nanosec) as in builtin_interfaces/Time."""
    return int(stamp_ns) // 1_000_000_000, int(stamp_ns) % 1_000_000_000


def stamp_ns(header: Any) -> int:
    """Nanoseconds of a rosbags std_msgs/Header's stamp."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def make_header(stamp: int, frame_id: str) -> Any:
    """std_msgs/Header with the stamp ``stamp`` (ns) and ``frame_id``."""
    t = typestore().types
    sec, nsec = split_ns(stamp)
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                    frame_id=frame_id)


def make_image(arr: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/Image holding ``arr`` (``H x W`` or ``H x W x C`` of the encoding's dtype), no row padding
    (fields from :func:`egmt_ros.core.codec.image_fields`). Raises ImageConversionError when the array does not fit
    the encoding."""
    fields = image_fields(arr, encoding)
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    return typestore().types[IMAGE](header=make_header(stamp, frame_id), **fields)


def make_compressed_image(arr: np.ndarray, fmt: str, stamp: int, frame_id: str, quality: int = 95) -> Any:
    """sensor_msgs/CompressedImage of ``arr`` encoded as ``fmt`` ('png' or 'jpeg').

    ``format`` follows image_transport's compressed plugin: ``"<encoding>; png compressed mono16"`` /
    ``"bgr8; jpeg compressed bgr8"``.
    """
    if fmt not in ("png", "jpeg"):
        raise ValueError(f"compressed format must be 'png' or 'jpeg', got {fmt!r}")
    a = np.asarray(arr)
    encoding = ("mono16" if a.dtype == np.uint16 else "mono8") if a.ndim == 2 else "bgr8"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", a, params)
    if not ok:
        raise ImageConversionError(f"cannot {fmt}-encode an array of shape {a.shape} and dtype {a.dtype}")
    return typestore().types[COMPRESSED_IMAGE](
        header=make_header(stamp, frame_id), format=f"{encoding}; {fmt} compressed {encoding}",
        data=np.asarray(buf, dtype=np.uint8).reshape(-1))


def compressed_to_array(msg: Any) -> np.ndarray:
    """Decode a rosbags sensor_msgs/CompressedImage (png keeps 16 bits; colour comes back BGR)."""
    a = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise ImageConversionError(f"cannot decode compressed image (format {msg.format!r}, {len(msg.data)} bytes)")
    return a


def default_intrinsics(width: int, height: int, hfov_deg: float) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of an ideal pinhole camera with horizontal field of view ``hfov_deg``, square pixels."""
    fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return float(fx), float(fx), (width - 1) / 2.0, (height - 1) / 2.0


def make_camera_info(width: int, height: int, stamp: int, frame_id: str, hfov_deg: float) -> Any:
    """sensor_msgs/CameraInfo of an undistorted pinhole camera (plumb_bob, zero distortion)."""
    fx, fy, cx, cy = default_intrinsics(width, height, hfov_deg)
    t = typestore().types
    k = np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64)
    p = np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64)
    return t[CAMERA_INFO](
        header=make_header(stamp, frame_id), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5, dtype=np.float64), k=k, r=np.eye(3, dtype=np.float64).reshape(-1), p=p,
        binning_x=0, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def make_detections(stamp: int, frame_id: str,
                    boxes: Iterable[tuple[str, float, float, float, float, float]]) -> Any:
    """vision_msgs/Detection2DArray from ``(class_id, score, cx, cy, w, h)`` boxes (pixels)."""
    t = typestore().types
    header = make_header(stamp, frame_id)
    cov = np.zeros(36, dtype=np.float64)
    dets = []
    for class_id, score, cx, cy, w, h in boxes:
        pose = t["geometry_msgs/msg/PoseWithCovariance"](
            pose=t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=cov)
        hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=str(class_id), score=float(score)), pose=pose)
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=float(cx), y=float(cy)),
                                               theta=0.0),
            size_x=float(w), size_y=float(h))
        dets.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hyp], bbox=bbox, id=""))
    return t[DETECTION2D_ARRAY](header=header, detections=dets)


def make_clock(stamp: int) -> Any:
    """rosgraph_msgs/Clock at ``stamp`` ns."""
    t = typestore().types
    sec, nsec = split_ns(stamp)
    return t[CLOCK](clock=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec))


def header_stamp_of(raw: bytes | memoryview, msgtype: str) -> int | None:
    """Header stamp (ns) of a raw CDR message whose first field is ``std_msgs/Header``, else None.

    Reads only the 8 bytes after the 4-byte CDR encapsulation header (sec int32, nanosec uint32), so it is cheap
    even for large images.
    """
    fields = typestore().fielddefs.get(msgtype)
    if not fields or not fields[1] or fields[1][0] != ("header", (Nodetype.NAME, "std_msgs/msg/Header")):
        return None
    b = bytes(raw[4:12])
    if len(b) < 8:
        return None
    little = bytes(raw[1:2]) in (b"\x01", b"\x03")
    order = "little" if little else "big"
    sec = int.from_bytes(b[:4], order, signed=True)
    nsec = int.from_bytes(b[4:], order, signed=False)
    return sec * 1_000_000_000 + nsec



def stretch_to_uint8(img: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0) -> np.ndarray:
    """A per-frame percentile stretch to uint8 for 16-bit/float images: the ``lo_pct`` percentile maps to 0, the
    ``hi_pct`` percentile to 255, linear in between, clipped. uint8 input is returned unchanged."""
    if img.dtype == np.uint8:
        return img
    a = img.astype(np.float64)
    lo, hi = np.percentile(a, [lo_pct, hi_pct])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def message_to_bgr_or_grey(msg: Any, msgtype: str) -> np.ndarray:
    """Pixels of an Image or CompressedImage ready for ``cv2.imwrite``: grey ``H x W`` (8 or 16 bit) or BGR(A).

    rgb/rgba orders are swapped to OpenCV's BGR/BGRA; float images stay float.
    """
    if msgtype == COMPRESSED_IMAGE:
        return compressed_to_array(msg)
    arr = image_to_numpy(msg)
    enc = msg.encoding
    if enc in ("rgb8", "rgb16"):
        return np.ascontiguousarray(arr[:, :, ::-1])
    if enc in ("rgba8", "rgba16"):
        return np.ascontiguousarray(arr[:, :, [2, 1, 0, 3]])
    return arr
