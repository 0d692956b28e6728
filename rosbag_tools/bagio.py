"""Bag writing and damage-tolerant bag reading (rosbag2: mcap and sqlite3), no rclpy.

Writing goes through rosbags' ``Writer`` (rosbag2 format version 9, CDR, message definitions and RIHS01 type
hashes from ``rosbag_tools.types.typestore()``, offered QoS profiles per topic): the layout ``ros2 bag play`` and
``ros2 bag info`` read (rosbag2 itself is not installable here, so that was not run).

Reading (``BagReader``) uses rosbags' ``Reader`` for healthy bags. When a bag is damaged, for instance an mcap
file truncated by a crash or a sqlite3 file with overwritten pages, the reader falls back to a salvage pass that
yields every message it can read *before* the damage and then raises ``BagCorruptError`` naming the file and
the position: the byte offset of the first bad record (mcap) or the index of the first unreadable message
(sqlite3, whose pages carry no offsets a user could act on). Consumers that process messages as they come
(export, evaluate) therefore keep everything before the damage.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Iterator, Sequence

from rosbags.interfaces import Qos
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from ruamel.yaml import YAML

from rosbag_tools.types import QOS_RELIABLE, serialize, typestore

MCAP_MAGIC = b"\x89MCAP0\r\n"
STORAGES = ("mcap", "sqlite3")


class BagCorruptError(RuntimeError):
    """A bag that cannot be read to its end.

    Attributes: ``path`` (the damaged storage file), ``offset`` (byte offset of the first bad record, or None),
    ``index`` (number of messages read before the damage = index of the first message that could not be read).
    """

    def __init__(self, path: Path, index: int, offset: int | None, detail: str) -> None:
        where = f"byte offset {offset}, " if offset is not None else ""
        super().__init__(
            f"{path}: bag is corrupt or truncated at {where}message index {index} "
            f"({index} message(s) before it were read): {detail}")
        self.path = Path(path)
        self.index = index
        self.offset = offset
        self.detail = detail


@dataclass(frozen=True)
class BagMessage:
    """One message of a bag: ``index`` in the read order (see ``BagReader.messages``), ``topic``, ``msgtype``, bag
    ``timestamp`` (ns) and the raw CDR ``data``."""

    index: int
    topic: str
    msgtype: str
    timestamp: int
    data: bytes


# --------------------------------------------------------------------------------------------------- writing


class BagWriter:
    """A rosbag2 bag being written: ``add_topic`` once per topic, then ``write`` messages; use as a context manager.

    ``storage`` is 'mcap' or 'sqlite3'. The target directory must not exist yet (rosbags never overwrites).
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._connections: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self.count = 0

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish the storage file and write metadata.yaml (idempotent)."""
        if self._writer.storage is not None:
            self._writer.close()

    def add_topic(self, topic: str, msgtype: str, qos: Qos | Sequence[Qos] | None = QOS_RELIABLE) -> None:
        """Declare ``topic`` of ``msgtype`` with the offered QoS profile(s) recorded in the bag."""
        profiles = [] if qos is None else ([qos] if isinstance(qos, Qos) else list(qos))
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=typestore(), serialization_format="cdr", offered_qos_profiles=profiles)
        self._types[topic] = msgtype

    def set_custom_data(self, key: str, value: str) -> None:
        """Store a string under ``custom_data`` in metadata.yaml (rosbag2 >= 6 keeps user data there)."""
        self._writer.set_custom_data(key, value)

    def has_topic(self, topic: str) -> bool:
        """Whether ``topic`` was declared."""
        return topic in self._connections

    def write(self, topic: str, timestamp: int, msg: object | bytes | memoryview) -> None:
        """Write a rosbags message (serialized here) or raw CDR bytes at bag time ``timestamp`` (ns)."""
        data = msg if isinstance(msg, (bytes, bytearray, memoryview)) else serialize(msg, self._types[topic])
        self._writer.write(self._connections[topic], int(timestamp), bytes(data))
        self.count += 1


# --------------------------------------------------------------------------------------------------- reading


def storage_file(path: str | Path) -> tuple[Path, str]:
    """The storage file of a bag (a bag directory, or an .mcap/.db3 file) and its storage id."""
    p = Path(path)
    if p.is_dir():
        files = sorted(list(p.glob("*.mcap")) + list(p.glob("*.db3")))
        if not files:
            raise FileNotFoundError(f"{p}: no .mcap or .db3 file in the bag directory")
        if len(files) > 1:
            raise ValueError(f"{p}: split bags are not supported ({len(files)} storage files)")
        p = files[0]
    if not p.is_file():
        raise FileNotFoundError(f"bag not found: {p}")
    if p.suffix == ".mcap":
        return p, "mcap"
    if p.suffix == ".db3":
        return p, "sqlite3"
    raise ValueError(f"{p}: not a rosbag2 storage file (.mcap or .db3)")


def _metadata_topics(bagdir: Path) -> dict[str, str]:
    """topic -> type from metadata.yaml (empty if missing or unreadable)."""
    try:
        meta = YAML(typ="safe").load((bagdir / "metadata.yaml").read_text())
        return {t["topic_metadata"]["name"]: t["topic_metadata"]["type"]
                for t in meta["rosbag2_bagfile_information"]["topics_with_message_count"]}
    except Exception:  # noqa: BLE001 - metadata is optional for salvage
        return {}


class BagReader:
    """Read a rosbag2 bag (directory or storage file) message by message, surviving damage.

    ``topics`` maps topic -> type, ``counts`` topic -> message count and ``qos`` topic -> offered QoS profiles
    (from the bag's index; for a damaged bag the topics come from metadata.yaml and the counts from what the
    salvage pass found). ``messages()`` yields ``BagMessage`` in bag time order (healthy bags) or file order
    (salvage) and raises ``BagCorruptError`` after the last readable message.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file, self.storage = storage_file(self.path)
        self.topics: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.qos: dict[str, list[Qos]] = {}
        self.damaged: str | None = None  # why the rosbags reader refused the bag, if it did
        self.start_ns = 0
        self.end_ns = 0
        try:
            with Reader(self.path) as reader:
                for c in reader.connections:
                    self.topics[c.topic] = c.msgtype
                    self.counts[c.topic] = self.counts.get(c.topic, 0) + c.msgcount
                    self.qos.setdefault(c.topic, []).extend(getattr(c.ext, "offered_qos_profiles", []))
                self.start_ns, self.end_ns = reader.start_time, reader.end_time
        except Exception as exc:  # noqa: BLE001 - any failure of the index means: salvage
            self.damaged = f"{type(exc).__name__}: {exc}"
            self.topics = _metadata_topics(self.file.parent)

    @property
    def message_count(self) -> int:
        """Messages in the bag according to its index (0 when the index is unreadable)."""
        return sum(self.counts.values()) if self.damaged is None else 0

    def messages(self, topics: Sequence[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) with ``start_ns <= timestamp < stop_ns``.

        ``BagMessage.index`` (and ``BagCorruptError.index``) count the messages this call read from the storage: on a
        healthy bag those of the selected topics, in salvage mode all messages (the scan cannot skip any).
        """
        wanted = set(topics) if topics else None
        if self.damaged is None:
            yield from self._healthy(wanted, start_ns, stop_ns)
        else:
            yield from self._salvage(wanted, start_ns, stop_ns)

    # -- healthy path ------------------------------------------------------------------------------------------

    def _healthy(self, wanted: set[str] | None, start_ns: int | None, stop_ns: int | None) -> Iterator[BagMessage]:
        index = 0
        try:
            with Reader(self.path) as reader:
                conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
                if not conns:
                    return
                for conn, ts, data in reader.messages(connections=conns, start=start_ns, stop=stop_ns):
                    yield BagMessage(index, conn.topic, conn.msgtype, ts, bytes(data))
                    index += 1
        except BagCorruptError:
            raise
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 - damage found while reading
            offset = _first_bad_mcap_offset(self.file) if self.storage == "mcap" else None
            raise BagCorruptError(self.file, index, offset, f"{type(exc).__name__}: {exc}") from exc

    # -- salvage ------------------------------------------------------------------------------------------------

    def _salvage(self, wanted: set[str] | None, start_ns: int | None, stop_ns: int | None) -> Iterator[BagMessage]:
        source = _scan_mcap(self.file) if self.storage == "mcap" else _scan_sqlite(self.file)
        index = 0
        lo = -(2**63) if start_ns is None else start_ns
        hi = 2**63 if stop_ns is None else stop_ns
        try:
            for topic, msgtype, ts, data in source:
                self.topics.setdefault(topic, msgtype)
                self.counts[topic] = self.counts.get(topic, 0) + 1
                if (wanted is None or topic in wanted) and lo <= ts < hi:
                    yield BagMessage(index, topic, msgtype, ts, data)
                index += 1
        except _Damage as dmg:
            raise BagCorruptError(self.file, index if dmg.index is None else dmg.index, dmg.offset,
                                  f"{dmg.detail} (the bag index is unreadable too: {self.damaged})") from None


class _Damage(Exception):
    """Internal: where a salvage scan stopped."""

    def __init__(self, offset: int | None, detail: str, index: int | None = None) -> None:
        super().__init__(detail)
        self.offset = offset
        self.detail = detail
        self.index = index


# mcap ------------------------------------------------------------------------------------------------------


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return zstd.decompress(data)
    if compression == "lz4":
        from lz4.frame import decompress as lz4_decompress  # type: ignore[import-untyped]

        return lz4_decompress(data)
    raise ValueError(f"unsupported chunk compression {compression!r}")


def _str(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise struct.error("string runs past its record")
    return buf[pos + 4:end].decode(), end


def _records(buf: bytes | memoryview, base: int, end: int) -> Iterator[tuple[int, int, bytes | None]]:
    """(opcode, absolute offset, body or None if the record is incomplete) of consecutive mcap records."""
    pos = 0
    while pos < end:
        if end - pos < 9:
            yield -1, base + pos, None
            return
        op = buf[pos]
        (length,) = struct.unpack_from("<Q", buf, pos + 1)
        if pos + 9 + length > end:
            yield op, base + pos, None
            return
        yield op, base + pos, bytes(buf[pos + 9:pos + 9 + length])
        pos += 9 + length


def _scan_mcap(path: Path) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type, log_time, data) of every complete message record in file order; raises _Damage at the
    first bad or incomplete record (messages inside a truncated uncompressed chunk are still yielded)."""
    data = path.read_bytes()
    if data[:8] != MCAP_MAGIC:
        raise _Damage(0, "not an mcap file (bad magic)")
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def handle(op: int, body: bytes, offset: int) -> Iterator[tuple[str, str, int, bytes]]:
        if op == 0x03:  # schema: id u16, name, encoding, data
            (sid,) = struct.unpack_from("<H", body, 0)
            schemas[sid] = _str(body, 2)[0]
        elif op == 0x04:  # channel: id u16, schema id u16, topic, encoding, metadata
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, _ = _str(body, 4)
            channels[cid] = (topic, schemas.get(sid, ""))
        elif op == 0x05:  # message: channel u16, sequence u32, log_time u64, publish_time u64, data
            cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body, 0)
            if cid not in channels:
                raise _Damage(offset, f"message record for unknown channel {cid}")
            topic, msgtype = channels[cid]
            yield topic, msgtype, log_time, body[22:]

    pos = 8  # after the magic
    view = memoryview(data)
    for op, offset, body in _records(view[pos:], pos, len(data) - pos):
        if op in (0x0F, 0x02):  # data end / footer: the summary that follows is an index, nothing new
            return
        if body is None:
            if op == 0x06:  # a cut chunk: keep its complete messages, report the first incomplete record
                first_bad = yield from _partial_chunk(view, offset, handle)
                raise _Damage(first_bad, f"the chunk starting at byte {offset} is cut short (the file ends at byte "
                                         f"{len(data)}); its first incomplete record starts at byte {first_bad}")
            raise _Damage(offset, f"record (opcode 0x{op:02x}) cut short: the file ends at byte {len(data)}"
                          if op >= 0 else f"file ends inside a record header at byte {len(data)}")
        try:
            if op == 0x06:
                start, end, usize, crc = struct.unpack_from("<QQQI", body, 0)
                compression, p = _str(body, 28)
                (csize,) = struct.unpack_from("<Q", body, p)
                inner = _decompress(body[p + 8:p + 8 + csize], compression, usize)
                if len(inner) != usize or (crc and zlib.crc32(inner) != crc):
                    raise _Damage(offset, "chunk fails its size/CRC check")
                inner_base = offset + 9 + p + 8 if compression == "" else None
                for iop, ioff, ibody in _records(inner, 0, len(inner)):
                    where = offset if inner_base is None else inner_base + ioff
                    if ibody is None:
                        raise _Damage(where, "incomplete record inside a chunk")
                    yield from handle(iop, ibody, where)
            else:
                yield from handle(op, body, offset)
        except _Damage:
            raise
        except Exception as exc:  # noqa: BLE001 - struct errors, decompression errors, bad utf-8
            raise _Damage(offset, f"unreadable record (opcode 0x{op:02x}): {type(exc).__name__}: {exc}") from None
    raise _Damage(len(data), "file ends without a data-end record or footer (truncated)")


def _partial_chunk(view: memoryview, offset: int, handle: Any) -> Generator[tuple[str, str, int, bytes], None, int]:
    """Messages of an uncompressed chunk cut short by the end of the file (a compressed one is lost whole).

    Returns the byte offset of the first record that could not be read (the chunk's own offset if none could).
    """
    body = bytes(view[offset + 9:])
    try:
        compression, p = _str(body, 28)
    except Exception:  # noqa: BLE001 - even the chunk header is cut
        return offset
    if compression != "":
        return offset
    inner_start = p + 8
    for iop, ioff, ibody in _records(body[inner_start:], 0, len(body) - inner_start):
        where = offset + 9 + inner_start + ioff
        if ibody is None:
            return where
        try:
            yield from handle(iop, ibody, where)
        except Exception:  # noqa: BLE001 - stop at the first unreadable inner record
            return where
    return offset + 9 + len(body)  # cut exactly between two records: the damage starts at the end of the file


def _first_bad_mcap_offset(path: Path) -> int | None:
    """Byte offset where a salvage scan of the mcap file stops (None if it reads to the end)."""
    try:
        for _ in _scan_mcap(path):
            pass
    except _Damage as dmg:
        return dmg.offset
    return None


# sqlite3 ---------------------------------------------------------------------------------------------------


def _scan_sqlite(path: Path) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type, timestamp, data) in timestamp order; raises _Damage (with the message index) at the first
    message whose row or blob sqlite cannot read."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise _Damage(None, f"sqlite cannot open the file: {exc}", 0) from None
    try:
        try:
            topics = {int(i): (n, t) for i, n, t in con.execute("SELECT id, name, type FROM topics")}
        except sqlite3.Error as exc:
            raise _Damage(None, f"topics table unreadable: {exc}", 0) from None
        try:
            rows = con.execute("SELECT id, topic_id, timestamp FROM messages ORDER BY timestamp, id").fetchall()
        except sqlite3.Error:
            rows = None
        index = 0
        if rows is not None:
            for rowid, tid, ts in rows:
                try:
                    (blob,) = con.execute("SELECT data FROM messages WHERE id = ?", (rowid,)).fetchone()
                except (sqlite3.Error, TypeError) as exc:
                    raise _Damage(None, f"message row id {rowid} unreadable: {exc}", index) from None
                topic, msgtype = topics.get(int(tid), (f"<topic id {tid}>", ""))
                yield topic, msgtype, int(ts), bytes(blob)
                index += 1
            return
        # the timestamp index or table pages are damaged: read in row order until sqlite gives up
        cur = con.execute("SELECT id, topic_id, timestamp, data FROM messages ORDER BY id")
        while True:
            try:
                row = cur.fetchone()
            except sqlite3.Error as exc:
                raise _Damage(None, f"messages table unreadable after {index} rows: {exc}", index) from None
            if row is None:
                return
            _, tid, ts, blob = row
            topic, msgtype = topics.get(int(tid), (f"<topic id {tid}>", ""))
            yield topic, msgtype, int(ts), bytes(blob)
            index += 1
    finally:
        con.close()
