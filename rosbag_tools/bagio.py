"""Bag writing and damage-tolerant bag reading (rosbag2: mcap and sqlite3), no rclpy.

Writing goes through rosbags' ``Writer`` (rosbag2 format version 9, CDR, message definitions and RIHS01 type
hashes from ``rosbag_tools.types.typestore()``, offered QoS profiles per topic): the layout ``ros2 bag play`` and
``ros2 bag info`` read (rosbag2 itself is not installable here, so that was not run). mcap chunks are written with
their CRC-32 (rosbags alone writes 0, "no checksum").

Reading (``BagReader``): the bag's index (topics, types, counts, QoS, time span) comes from rosbags' ``Reader``
when the index is sound (for mcap: a footer and a summary with schemas and statistics, checked first, so rosbags
never decompresses anything); the messages are read here, record by record (mcap) or row by row (sqlite3), so
that damage costs only what it touches:

- mcap: every chunk's declared uncompressed size is checked against ``max_chunk_bytes`` before anything is read,
  decompression stops one byte past the declared size, and the chunk's CRC is checked; a chunk that fails is
  skipped, and so is a message record that cannot be read, and reading goes on with the next record.
- sqlite3: each message's blob is read on its own, so an unreadable row is skipped; when sqlite cannot read the
  database at all (a file truncated by a crash, overwritten pages), the readable rows are recovered from the
  b-tree leaf pages directly (``_sqlite_pages``).

Every damaged place is recorded as a ``Damage`` (message index, byte offset for mcap, messages lost, the bag time
span it may cover). ``BagReader.messages`` yields every readable message and raises ``BagCorruptError`` *after*
the last one when anything was damaged; consumers that process messages as they come (export, evaluate, play)
therefore keep everything readable, before and after the damage. A consumer that finds a message it cannot decode
reports it with ``BagReader.mark_damaged`` and goes on.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from rosbags.interfaces import Qos
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapWriter
from ruamel.yaml import YAML

from rosbag_tools.types import QOS_RELIABLE, serialize, typestore

MCAP_MAGIC = b"\x89MCAP0\r\n"
STORAGES = ("mcap", "sqlite3")
#: Largest uncompressed mcap chunk read (bytes): a chunk that declares more is refused unread. rosbags and rosbag2
#: close a chunk at about 1 MiB, so only a single message this large needs more.
MAX_CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Damage:
    """One damaged place in a bag: ``index`` = messages read before it, ``offset`` = byte offset (mcap; None for
    sqlite3 or unknown), ``lost`` = messages known to be lost there (None when unknown), ``start_ns``/``stop_ns``
    = the bag time span the lost messages lie in (None = unbounded), ``detail`` = what is wrong."""

    index: int
    offset: int | None
    detail: str
    lost: int | None = None
    start_ns: int | None = None
    stop_ns: int | None = None

    def covers(self, t: int, tolerance: int = 0) -> bool:
        """Whether a message lost here may have had bag time ``t`` (within ``tolerance`` ns)."""
        return self.lost != 0 and ((self.start_ns is None or t >= self.start_ns - tolerance)
                and (self.stop_ns is None or t <= self.stop_ns + tolerance))


class BagCorruptError(RuntimeError):
    """A bag with damage: raised after the last readable message.

    Attributes: ``path`` (the damaged storage file), ``damage`` (every ``Damage`` found, in read order), and of the
    first damage ``offset`` (byte offset, or None), ``index`` (messages read before it) and ``detail``;
    ``skipped`` = messages known to be lost in all.
    """

    def __init__(self, path: Path, damage: Sequence[Damage], note: str = "") -> None:
        first = damage[0]
        where = f"byte offset {first.offset}, " if first.offset is not None else ""
        self.skipped = sum(d.lost or 0 for d in damage)
        more = (f"; {len(damage) - 1} more damaged place(s) after it, reading went on past them"
                if len(damage) > 1 else "")
        lost = f"; {self.skipped} message(s) skipped as damaged" if self.skipped else ""
        super().__init__(f"{path}: bag is corrupt or truncated at {where}message index {first.index} "
                         f"({first.index} message(s) before it were read): {first.detail}{note}{more}{lost}")
        self.path = Path(path)
        self.damage = list(damage)
        self.index = first.index
        self.offset = first.offset
        self.detail = first.detail


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


class _CrcMcapWriter(McapWriter):
    """rosbags' mcap storage writer, with each chunk's CRC-32 (of its uncompressed records) filled in."""

    def close_chunk(self) -> None:
        crc = zlib.crc32(self.chunk.bio.getbuffer())
        start = self.bio.tell()
        super().close_chunk()
        end = self.bio.tell()
        self.bio.seek(start + 9 + 24)  # record header, start/end time, uncompressed size -> the crc field
        self.bio.write(struct.pack("<I", crc))
        self.bio.seek(end)


class _Writer(Writer):
    """rosbags' ``Writer`` with the CRC-writing mcap storage."""

    STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _CrcMcapWriter}


class BagWriter:
    """A rosbag2 bag being written: ``add_topic`` once per topic, then ``write`` messages; use as a context manager.

    ``storage`` is 'mcap' or 'sqlite3'. The target directory must not exist yet (rosbags never overwrites).
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = _Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
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


def _metadata(bagdir: Path) -> tuple[dict[str, str], dict[str, int]]:
    """(topic -> type, topic -> message count) from metadata.yaml (empty if missing or unreadable)."""
    try:
        meta = YAML(typ="safe").load((bagdir / "metadata.yaml").read_text())
        entries = meta["rosbag2_bagfile_information"]["topics_with_message_count"]
        return ({t["topic_metadata"]["name"]: t["topic_metadata"]["type"] for t in entries},
                {t["topic_metadata"]["name"]: int(t["message_count"]) for t in entries})
    except Exception:  # noqa: BLE001 - metadata is optional for salvage
        return {}, {}


class BagReader:
    """Read a rosbag2 bag (directory or storage file) message by message, surviving damage.

    ``topics`` maps topic -> type, ``counts`` topic -> message count and ``qos`` topic -> offered QoS profiles
    (from the bag's index; when the index is unreadable, ``damaged`` says why, the topics come from metadata.yaml
    and the counts from what was read). ``messages()`` yields ``BagMessage`` (see there); ``damage`` lists the
    damaged places found by the last ``messages()`` pass. ``max_chunk_bytes`` caps an mcap chunk's uncompressed
    size.
    """

    def __init__(self, path: str | Path, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.file, self.storage = storage_file(self.path)
        self.max_chunk_bytes = int(max_chunk_bytes)
        self.topics: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.qos: dict[str, list[Qos]] = {}
        self.damaged: str | None = None  # why the bag's index is unreadable, if it is
        self.damage: list[Damage] = []
        self.start_ns = 0
        self.end_ns = 0
        self._chunks: list[tuple[int, int, int]] = []  # mcap chunk index: (offset, start ns, end ns)
        self._read = 0
        try:
            if self.storage == "mcap":
                self._chunks = _mcap_summary(self.file)
            with Reader(self.path) as reader:
                for c in reader.connections:
                    self.topics[c.topic] = c.msgtype
                    self.counts[c.topic] = self.counts.get(c.topic, 0) + c.msgcount
                    self.qos.setdefault(c.topic, []).extend(getattr(c.ext, "offered_qos_profiles", []))
                self.start_ns, self.end_ns = reader.start_time, reader.end_time
        except Exception as exc:  # noqa: BLE001 - any failure of the index means: read by scanning
            self.damaged = f"{type(exc).__name__}: {exc}"
            self.topics, self.counts = _metadata(self.file.parent)[0], {}

    @property
    def message_count(self) -> int:
        """Messages in the bag according to its index (0 when the index is unreadable)."""
        return sum(self.counts.values()) if self.damaged is None else 0

    def messages(self, topics: Sequence[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Every readable message of ``topics`` (all when None) with ``start_ns <= timestamp < stop_ns``.

        Order: bag time (sqlite3; mcap within each chunk) and file order of the chunks (the order they were
        written, which is time order for bags written by rosbags, rosbag2 and ``record``). ``BagMessage.index``
        counts the messages this call yielded. Damaged records are skipped and recorded in ``self.damage``; after
        the last message, ``BagCorruptError`` is raised if there were any.
        """
        self.damage = []
        self._read = 0
        wanted = set(topics) if topics else None
        lo = -(2**63) if start_ns is None else max(-(2**63), start_ns)
        hi = 2**63 - 1 if stop_ns is None else min(2**63 - 1, stop_ns)
        source = self._mcap(wanted, lo, hi) if self.storage == "mcap" else self._sqlite(wanted, lo, hi)
        seen: dict[str, int] = {}
        try:
            for topic, msgtype, ts, data in source:
                seen[topic] = seen.get(topic, 0) + 1
                if self.damaged is not None:
                    self.topics.setdefault(topic, msgtype)
                yield BagMessage(self._read, topic, msgtype, ts, data)
                self._read += 1
        finally:
            if self.damaged is not None:  # no index: the counts are what the passes found (the most of any pass)
                for topic, n in seen.items():
                    self.counts[topic] = max(self.counts.get(topic, 0), n)
        if self.damage:
            note = f" (the bag has no usable index: {self.damaged})" if self.damaged else ""
            raise BagCorruptError(self.file, self.damage, note)

    def mark_damaged(self, msg: BagMessage, detail: str) -> None:
        """Record that ``msg`` (yielded by the running ``messages()`` pass) is damaged, e.g. does not decode: the
        pass goes on and raises ``BagCorruptError`` at its end."""
        self.damage.append(Damage(msg.index, None, f"message {msg.index} on {msg.topic}: {detail}", 1,
                                  msg.timestamp, msg.timestamp))

    def _damage(self, offset: int | None, detail: str, lost: int | None = None, start_ns: int | None = None,
                stop_ns: int | None = None) -> None:
        self.damage.append(Damage(self._read, offset, detail, lost, start_ns, stop_ns))

    # -- mcap ---------------------------------------------------------------------------------------------------

    def _mcap(self, wanted: set[str] | None, lo: int, hi: int) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, type, log time, data) of the mcap file's readable messages; damage goes to ``self.damage``."""
        with self.file.open("rb") as fh:
            scan = _McapScan(self, fh, wanted, lo, hi)
            yield from scan.run()

    # -- sqlite3 ------------------------------------------------------------------------------------------------

    def _sqlite(self, wanted: set[str] | None, lo: int, hi: int) -> Iterator[tuple[str, str, int, bytes]]:
        """Rows in (timestamp, id) order, each blob read on its own; the page scan when sqlite cannot list them."""
        try:
            con = sqlite3.connect(f"file:{self.file}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error:
            yield from self._sqlite_recovered(wanted, lo, hi)
            return
        try:
            try:
                topics = {int(i): (n, t) for i, n, t in con.execute("SELECT id, name, type FROM topics")}
                rows = con.execute("SELECT id, topic_id, timestamp FROM messages WHERE timestamp >= ? AND "
                                   "timestamp < ? ORDER BY timestamp, id", (lo, hi)).fetchall()
            except sqlite3.Error:
                rows = None
            if rows is None:
                yield from self._sqlite_recovered(wanted, lo, hi)
                return
            for rowid, tid, ts in rows:
                topic, msgtype = topics.get(int(tid), (f"<topic id {tid}>", ""))
                if wanted is not None and topic not in wanted:
                    continue
                try:
                    (blob,) = con.execute("SELECT data FROM messages WHERE id = ?", (rowid,)).fetchone()
                    data = bytes(blob)
                except (sqlite3.Error, TypeError) as exc:
                    self._damage(None, f"message row id {rowid} on {topic} unreadable: {exc}", 1, ts, ts)
                    continue
                yield topic, msgtype, int(ts), data
        finally:
            con.close()

    def _sqlite_recovered(self, wanted: set[str] | None, lo: int, hi: int) -> Iterator[tuple[str, str, int, bytes]]:
        """The rows recovered by ``_sqlite_pages``, in (timestamp, id) order, with the missing ones as damage."""
        with self.file.open("rb") as fh:
            try:
                buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                self._damage(None, "sqlite cannot read the file and it is empty", None)
                return
            with buf:
                try:
                    pages = _SqlitePages(buf)
                except _Unreadable as exc:
                    self._damage(None, f"sqlite cannot read the file: {exc}")
                    return
                topics = pages.topics()
                cells = pages.message_cells()
                known = sum(_metadata(self.file.parent)[1].values())
                gaps = _missing_rows(cells, known)
                why = ("sqlite cannot read the database (truncated or overwritten pages); rows recovered from its "
                       "pages")
                if not gaps:
                    last = max((c.timestamp for c in cells), default=None)
                    count = f"{len(cells)} of {known} readable" if known else \
                        f"{len(cells)} readable, how many are missing is unknown (no metadata.yaml message counts)"
                    self._damage(None, f"{why}: {count}", 0 if known else None, last, None)
                order = sorted(cells, key=lambda c: (c.timestamp, c.rowid))
                for cell in order:
                    while gaps and (gaps[0][2] is None or gaps[0][2] < cell.timestamp):
                        first, last, start, stop, lost = gaps.pop(0)
                        self._damage(None, f"{why}: message rows {first}..{last} missing", lost, start, stop)
                    topic, msgtype = topics.get(cell.topic_id, (f"<topic id {cell.topic_id}>", ""))
                    if not lo <= cell.timestamp < hi or (wanted is not None and topic not in wanted):
                        continue
                    try:
                        data = pages.blob(cell)
                    except _Unreadable as exc:
                        self._damage(None, f"{why}: message row id {cell.rowid} on {topic}: {exc}", 1,
                                     cell.timestamp, cell.timestamp)
                        continue
                    yield topic, msgtype, cell.timestamp, data
                for first, last, start, stop, lost in gaps:
                    self._damage(None, f"{why}: message rows {first}..{last} missing", lost, start, stop)


# mcap ------------------------------------------------------------------------------------------------------


def _mcap_summary(path: Path) -> list[tuple[int, int, int]]:
    """The chunk index (offset, start ns, end ns) of a sound mcap summary; raises ValueError when the file has no
    footer, or a summary without schemas and statistics (rosbags would then decompress the whole file to index it).
    Every summary record must lie inside the summary, so rosbags reads nothing past it."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size < 8 + 37 or fh.read(8) != MCAP_MAGIC:
            raise ValueError("not an mcap file or too short for a footer")
        fh.seek(size - 37)
        footer = fh.read(37)
        if footer[:9] != b"\x02\x14\x00\x00\x00\x00\x00\x00\x00" or footer[29:] != MCAP_MAGIC:
            raise ValueError("no mcap footer (the file was not closed: truncated?)")
        (summary,) = struct.unpack_from("<Q", footer, 9)
        if not 8 < summary <= size - 37:
            raise ValueError(f"mcap footer points to no summary (offset {summary})")
        fh.seek(summary)
        data = fh.read(size - 37 - summary)
    ops: set[int] = set()
    chunks = []
    pos = 0
    while pos < len(data):
        if pos + 9 > len(data):
            raise ValueError("mcap summary ends inside a record header")
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        if pos + 9 + length > len(data):
            raise ValueError(f"mcap summary record (opcode 0x{op:02x}) runs past the footer")
        if op == 0x08 and length >= 32:  # chunk index: start time, end time, chunk offset, ...
            start, end, offset = struct.unpack_from("<QQQ", data, pos + 9)
            chunks.append((offset, start, end))
        ops.add(op)
        pos += 9 + length
    if not {0x03, 0x0B} <= ops:
        raise ValueError("mcap summary without schemas and statistics: the file is read by a scan")
    return sorted(chunks)


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    """A chunk's records, never more than ``size`` + 1 bytes of output; ValueError unless exactly ``size``."""
    if compression == "":
        out = data
    elif compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        out = zstd.ZstdDecompressor().decompress(data, max_length=size + 1)
    elif compression == "lz4":
        from lz4.frame import LZ4FrameDecompressor  # type: ignore[import-untyped]

        out = LZ4FrameDecompressor().decompress(data, max_length=size + 1)
    else:
        raise ValueError(f"unsupported chunk compression {compression!r}")
    if len(out) != size:
        got = "more than" if len(out) > size else f"{len(out)} bytes, not"
        raise ValueError(f"{compression or 'uncompressed'} data decompresses to {got} the declared {size} bytes")
    return out


def _str(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise struct.error("string runs past its record")
    return buf[pos + 4:end].decode(), end


def _records(buf: bytes, base: int = 0) -> Iterator[tuple[int, int, bytes | None]]:
    """(opcode, offset + ``base``, body or None when cut short) of the consecutive mcap records in ``buf``."""
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < 9:
            yield -1, base + pos, None
            return
        op = buf[pos]
        (length,) = struct.unpack_from("<Q", buf, pos + 1)
        if pos + 9 + length > len(buf):
            yield op, base + pos, None
            return
        yield op, base + pos, buf[pos + 9:pos + 9 + length]
        pos += 9 + length


class _McapScan:
    """One pass over an mcap file's data section, record by record, for ``BagReader._mcap``."""

    def __init__(self, reader: BagReader, fh: Any, wanted: set[str] | None, lo: int, hi: int) -> None:
        self.reader, self.fh, self.wanted, self.lo, self.hi = reader, fh, wanted, lo, hi
        self.size = os.fstat(fh.fileno()).st_size
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, str]] = {}
        self.last_ts: int | None = None
        self.gave_up = False  # structural damage with no indexed chunk after it: the rest of the file is lost

    def damage(self, offset: int | None, detail: str, lost: int | None = None, start: int | None = None,
               stop: int | None = None) -> None:
        """Record damage; an unknown span starts at the last message read."""
        self.reader._damage(offset, detail, lost, self.last_ts if start is None else start, stop)

    def read(self, offset: int, n: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(n)

    def run(self) -> Iterator[tuple[str, str, int, bytes]]:
        if self.read(0, 8) != MCAP_MAGIC:
            self.damage(0, "not an mcap file (bad magic)")
            return
        pos = 8
        while pos < self.size:
            head = self.read(pos, 9)
            if len(head) < 9:
                pos = self.resync(pos, f"file ends inside a record header at byte {self.size}")
                continue
            op = head[0]
            (length,) = struct.unpack_from("<Q", head, 1)
            if op in (0x0F, 0x02):  # data end / footer: the summary that follows is an index, nothing new
                return
            if pos + 9 + length > self.size:
                if op == 0x06:  # a cut chunk: keep its complete messages, report the first incomplete record
                    first_bad = yield from self.partial_chunk(pos)
                    pos = self.resync(first_bad, f"the chunk starting at byte {pos} is cut short (the file ends at "
                                                 f"byte {self.size}); its first incomplete record starts at byte "
                                                 f"{first_bad}")
                else:
                    pos = self.resync(pos, f"record (opcode 0x{op:02x}) cut short: the file ends at byte {self.size}")
                continue
            if op == 0x06:
                yield from self.chunk(pos, length)
            else:
                yield from self.handle(op, self.read(pos + 9, length), pos)
            pos += 9 + length
        if not self.gave_up:
            self.damage(self.size, "file ends without a data-end record or footer (truncated)")

    def resync(self, offset: int, detail: str) -> int:
        """Record structural damage at ``offset``; where to go on: the next indexed chunk, else the end."""
        nxt = [(o, s) for o, s, _ in self.reader._chunks if o > offset]
        if nxt:
            self.damage(offset, f"{detail}; reading goes on at the next chunk (byte {nxt[0][0]})", None, None,
                        nxt[0][1])
            return nxt[0][0]
        self.damage(offset, detail)
        self.gave_up = True
        return self.size

    def handle(self, op: int, body: bytes, offset: int) -> Iterator[tuple[str, str, int, bytes]]:
        """Schema, channel and message records (others are skipped); an unreadable one is damage."""
        try:
            if op == 0x03:  # schema: id u16, name, encoding, data
                (sid,) = struct.unpack_from("<H", body, 0)
                self.schemas[sid] = _str(body, 2)[0]
            elif op == 0x04:  # channel: id u16, schema id u16, topic, encoding, metadata
                cid, sid = struct.unpack_from("<HH", body, 0)
                self.channels[cid] = (_str(body, 4)[0], self.schemas.get(sid, ""))
            elif op == 0x05:  # message: channel u16, sequence u32, log_time u64, publish_time u64, data
                cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body, 0)
                if cid not in self.channels:
                    self.damage(offset, f"message record for unknown channel {cid}", 1, log_time, log_time)
                    return
                topic, msgtype = self.channels[cid]
                self.last_ts = log_time
                if self.lo <= log_time < self.hi and (self.wanted is None or topic in self.wanted):
                    yield topic, msgtype, log_time, body[22:]
        except (struct.error, UnicodeDecodeError) as exc:
            self.damage(offset, f"unreadable record (opcode 0x{op:02x}): {type(exc).__name__}: {exc}",
                        1 if op == 0x05 else None)

    def chunk(self, pos: int, length: int) -> Iterator[tuple[str, str, int, bytes]]:
        """The messages of the chunk record at ``pos`` in log time order, or damage."""
        head = self.read(pos + 9, min(length, 28 + 4 + 64))
        try:
            start, end, usize, crc = struct.unpack_from("<QQQI", head, 0)
            compression, p = _str(head, 28)
            (csize,) = struct.unpack_from("<Q", head, p)
        except (struct.error, UnicodeDecodeError) as exc:
            self.damage(pos, f"unreadable chunk header: {type(exc).__name__}: {exc}")
            return
        where = f"the chunk at byte {pos}"
        if p + 8 + csize > length:
            self.damage(pos, f"{where} declares {csize} compressed bytes, more than its record holds", None, start, end)
            return
        if usize > self.reader.max_chunk_bytes:
            self.damage(pos, f"{where} declares {usize} bytes uncompressed, more than the cap of "
                             f"{self.reader.max_chunk_bytes} (BagReader max_chunk_bytes); refused unread",
                        None, start, end)
            return
        try:
            inner = _decompress(self.read(pos + 9 + p + 8, csize), compression, usize)
        except Exception as exc:  # noqa: BLE001 - zstd/lz4 errors, size mismatch, unknown compression
            self.damage(pos, f"{where}: {type(exc).__name__}: {exc}", None, start, end)
            return
        if crc and zlib.crc32(inner) != crc:
            lost = sum(1 for op, _, body in _records(inner) if op == 0x05 and body is not None)
            self.damage(pos, f"{where} fails its CRC check (stored 0x{crc:08x}, computed 0x{zlib.crc32(inner):08x}): "
                             f"its {lost} message(s) are skipped", lost, start, end)
            return
        base = pos + 9 + p + 8 if compression == "" else None
        msgs: list[tuple[str, str, int, bytes]] = []
        for op, off, body in _records(inner):
            if body is None:
                self.damage(pos if base is None else base + off, f"incomplete record inside {where}", None, start, end)
                break
            msgs.extend(self.handle(op, body, pos if base is None else base + off))
        msgs.sort(key=lambda m: m[2])
        yield from msgs

    def partial_chunk(self, pos: int) -> Iterator[tuple[str, str, int, bytes]]:
        """Messages of an uncompressed chunk cut short by the end of the file (a compressed one is lost whole).

        Returns the byte offset of the first record that could not be read (the chunk's own offset if none could).
        """
        body = self.read(pos + 9, self.size - pos - 9)
        try:
            compression, p = _str(body, 28)
        except (struct.error, UnicodeDecodeError):  # even the chunk header is cut
            return pos
        if compression != "":
            return pos
        inner = pos + 9 + p + 8
        for op, off, rec in _records(body[p + 8:], inner):
            if rec is None:
                return off
            yield from self.handle(op, rec, off)
        return self.size  # cut exactly between two records: the damage starts at the end of the file


# sqlite3 ---------------------------------------------------------------------------------------------------


class _Unreadable(Exception):
    """Internal: a page or payload of a damaged sqlite file that cannot be read."""


@dataclass(frozen=True)
class _Cell:
    """A recovered message row: rowid, topic id, timestamp, and where its payload (``size`` bytes, the data blob at
    ``data_at``, ``data_len`` bytes long) starts: page number and byte offset in the file."""

    rowid: int
    topic_id: int
    timestamp: int
    page: int
    offset: int
    size: int
    data_at: int
    data_len: int


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    """sqlite's big-endian varint at ``pos``: (value, position after it)."""
    v = 0
    for i in range(8):
        b = buf[pos + i]
        v = (v << 7) | (b & 0x7F)
        if b < 0x80:
            return v, pos + i + 1
    return (v << 8) | buf[pos + 8], pos + 9


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


#: bytes of sqlite record serial types 0..9 (1-6: big-endian integers, 7: float, 8/9: the constants 0/1)
_SERIAL_SIZE = (0, 1, 2, 3, 4, 6, 8, 8, 0, 0)


class _SqlitePages:
    """Reads rows straight from the table b-tree leaf pages of a (damaged) sqlite file, as ``sqlite3 .recover``
    does: every page whose header says "table leaf" (0x0d) and is not on the free list is parsed cell by cell,
    payloads are followed through their overflow pages, and a page number outside the file, or a record that
    does not parse, makes only that row unreadable. Pages missing from a truncated file are simply absent."""

    def __init__(self, buf: Any) -> None:
        self.buf = buf
        if len(buf) < 100 or buf[:16] != b"SQLite format 3\x00":
            raise _Unreadable("not an sqlite file")
        (ps,) = struct.unpack_from(">H", buf, 16)
        self.page_size = 65536 if ps == 1 else ps
        self.usable = self.page_size - buf[20]
        self.npages = len(buf) // self.page_size

    def page(self, n: int) -> int:
        """Byte offset of page ``n`` (1-based); _Unreadable when the file does not hold it."""
        if not 1 <= n <= self.npages:
            raise _Unreadable(f"page {n} is not in the file ({self.npages} pages)")
        return (n - 1) * self.page_size

    def free_pages(self) -> set[int]:
        """Pages on the free list (stale copies of rows may lie there); as much of it as is readable."""
        free: set[int] = set()
        (trunk,) = struct.unpack_from(">I", self.buf, 32)
        try:
            while trunk and trunk not in free:
                free.add(trunk)
                base = self.page(trunk)
                nxt, count = struct.unpack_from(">II", self.buf, base)
                count = min(count, (self.usable - 8) // 4)
                free.update(struct.unpack_from(f">{count}I", self.buf, base + 8))
                trunk = nxt
        except (_Unreadable, struct.error):
            pass
        return free

    def cells(self) -> Iterator[tuple[int, int, int, int]]:
        """(page, cell offset, payload size, rowid) of every cell on a table leaf page."""
        free = self.free_pages()
        for n in range(1, self.npages + 1):
            base = self.page(n)
            hdr = base + (100 if n == 1 else 0)
            if self.buf[hdr] != 0x0D or n in free:
                continue
            (count,) = struct.unpack_from(">H", self.buf, hdr + 3)
            for k in range(min(count, (self.page_size - 8) // 2)):
                (ptr,) = struct.unpack_from(">H", self.buf, hdr + 8 + 2 * k)
                if not hdr - base + 8 + 2 * count <= ptr < self.usable:
                    continue
                try:
                    size, p = _varint(self.buf, base + ptr)
                    rowid, p = _varint(self.buf, p)
                except IndexError:
                    continue
                yield n, p, size, rowid

    def payload(self, page: int, offset: int, size: int, limit: int | None = None) -> bytes:
        """The first ``limit`` (default all) bytes of the payload of ``size`` bytes starting at ``offset``."""
        u = self.usable
        x, m = u - 35, ((u - 12) * 32) // 255 - 23
        k = m + (size - m) % (u - 4)
        local = size if size <= x else (k if k <= x else m)
        want = size if limit is None else min(size, limit)
        end = self.page(page) + self.page_size
        if offset + local + (4 if local < size else 0) > end:
            raise _Unreadable("cell runs past its page")
        parts = [bytes(self.buf[offset:offset + min(local, want)])]
        got = len(parts[0])
        if got < want:
            (nxt,) = struct.unpack_from(">I", self.buf, offset + local)
            while got < want:
                if nxt == 0:
                    raise _Unreadable(f"overflow chain ends after {got} of {size} bytes")
                base = self.page(nxt)
                take = min(want - got, u - 4)
                parts.append(bytes(self.buf[base + 4:base + 4 + take]))
                got += take
                (nxt,) = struct.unpack_from(">I", self.buf, base)
        return b"".join(parts)

    def message_cells(self) -> list[_Cell]:
        """Rows shaped like rosbag2's ``messages`` table: (id = rowid, topic_id int, timestamp int, data blob);
        the first readable copy of each rowid."""
        out: dict[int, _Cell] = {}
        for page, offset, size, rowid in self.cells():
            try:
                head = self.payload(page, offset, size, 64)
                cols = _columns(head, size)
                ints = [c for c in cols[1:3] if 1 <= c[0] <= 6 or c[0] in (8, 9)]
                if len(cols) != 4 or cols[0][0] != 0 or len(ints) != 2 or cols[3][0] < 12 or cols[3][0] % 2:
                    continue
                tid, ts = (_int(head[at:at + _SERIAL_SIZE[st]]) if st < 8 else st - 8 for st, at in ints)
            except (_Unreadable, IndexError, struct.error):
                continue
            out.setdefault(rowid, _Cell(rowid, tid, ts, page, offset, size, cols[3][1], (cols[3][0] - 12) // 2))
        return list(out.values())

    def topics(self) -> dict[int, tuple[str, str]]:
        """topic id -> (name, type) from rows shaped like ``topics`` (id = rowid, name '/...', type, ...)."""
        out: dict[int, tuple[str, str]] = {}
        for page, offset, size, rowid in self.cells():
            try:
                cols = _columns(self.payload(page, offset, size, 64), size)
                if len(cols) < 5 or cols[0][0] != 0 or not all(c[0] >= 13 and c[0] % 2 for c in cols[1:3]):
                    continue
                raw = self.payload(page, offset, size)
                name, msgtype = (raw[at:at + (st - 13) // 2].decode() for st, at in cols[1:3])
            except (_Unreadable, IndexError, struct.error, UnicodeDecodeError):
                continue
            if name.startswith("/"):
                out.setdefault(rowid, (name, msgtype))
        return out

    def blob(self, cell: _Cell) -> bytes:
        """The data blob of a recovered message row (through its overflow pages)."""
        return self.payload(cell.page, cell.offset, cell.size)[cell.data_at:cell.data_at + cell.data_len]


def _columns(head: bytes, size: int) -> list[tuple[int, int]]:
    """(serial type, value offset in the payload) of each column of a record whose payload (``size`` bytes)
    starts with ``head``; _Unreadable when the header does not add up to the payload size."""
    hsize, p = _varint(head, 0)
    cols, at = [], hsize
    while p < hsize:
        st, p = _varint(head, p)
        cols.append((st, at))
        at += _SERIAL_SIZE[st] if st < 10 else (st - 12) // 2 if st % 2 == 0 else (st - 13) // 2
    if at != size:
        raise _Unreadable("record header does not match the payload size")
    return cols


def _missing_rows(cells: Sequence[_Cell], known: int) -> list[tuple[int, int, int | None, int | None, int]]:
    """Gaps in the rowids 1..max(largest recovered rowid, ``known`` rows): (first, last, start ns, stop ns, count)
    in rowid order (= write order), the span bounded by the timestamps of the recovered rows around the gap."""
    gaps = []
    prev_id, prev_ts = 0, None
    for c in sorted(cells, key=lambda c: c.rowid):
        if c.rowid > prev_id + 1:
            gaps.append((prev_id + 1, c.rowid - 1, prev_ts, c.timestamp, c.rowid - 1 - prev_id))
        prev_id, prev_ts = c.rowid, c.timestamp
    if known > prev_id:
        gaps.append((prev_id + 1, known, prev_ts, None, known - prev_id))
    return gaps
