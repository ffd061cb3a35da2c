"""Frame encoding: length-prefixed, CRC-checked frames holding one record or an atomic batch.

A frame is ``prefix | head | entries``:

* prefix ``<4sII``: magic ``b"\\xa7SB1"``, body length (bytes after the prefix), CRC of
  the body: CRC-32C when the head's flags have ``FLAG_CRC32C`` (every frame written now:
  the ``crc32c`` package hashes 1 KiB in ~0.04 us, zlib's CRC-32 in ~0.23 us, which was
  a tenth of a stream publish), else zlib's CRC-32 (frames written before). The flags
  byte is covered by the CRC either way, so a flipped flag fails the check. The magic
  lets recovery resynchronise after a corrupt length.
* head ``<QqBI``: base offset, timestamp (ms), flags, entry count.
* each entry ``<iI``: key length (-1 = no key), payload length; then key, payload bytes.

A batch is one frame with count > 1, so one CRC covers it: after a crash it is either
entirely there or entirely cut/skipped. Entry i has offset ``base + i``.

A Kafka frame (flag ``FLAG_KAFKA``) holds one entry, a Kafka RecordBatch v2 exactly as
the producer sent it (baseOffset patched), covering ``count`` offsets; its timestamp is the
batch's max timestamp (what retention and the time index need). Its frame CRC covers the
head, the entry and the batch up to the batch's own CRC field; the rest is covered by that
field, Kafka's CRC-32C (checked by Produce, rechecked here on every read: 3-4 times cheaper
than zlib's over the same bytes, and nothing is hashed twice on append). The store never parses the
batch: Fetch serves its bytes, and whoever needs records registers a ``batch_reader``
(``queues/kafka_batch.py``), so store/ stays free of Kafka code.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from crc32c import crc32c as _crc32c

from .api import Record

MAGIC = b"\xa7SB1"
PREFIX = struct.Struct("<4sII")
HEAD = struct.Struct("<QqBI")
ENTRY = struct.Struct("<iI")
SINGLE = struct.Struct("<QqBIiI")  # HEAD + one ENTRY, packed in one call on the hot path
PREFIX_SIZE = PREFIX.size
HEAD_SIZE = HEAD.size
ENTRY_SIZE = ENTRY.size
OVERHEAD = PREFIX_SIZE + HEAD_SIZE + ENTRY_SIZE  # bytes added to a single record
MAX_BODY = 1 << 30
FLAG_BATCH = 1
FLAG_KAFKA = 2
FLAG_CRC32C = 4  # the frame's CRC is CRC-32C, not zlib's CRC-32 (a Kafka frame's is zlib's)
_KAFKA_HEAD = struct.Struct("<QqBIiI")  # HEAD + the one ENTRY of a Kafka frame
KAFKA_BATCH_CRC = 21  # the batch's bytes before its CRC-32C covers the rest
_KAFKA_COVERED = _KAFKA_HEAD.size + KAFKA_BATCH_CRC  # what the frame CRC covers
_KAFKA_MIN = _KAFKA_HEAD.size + 61  # a RecordBatch v2 header at least
_BATCH_CRC = struct.Struct(">I")

OK, INCOMPLETE, BAD = 0, 1, 2

_crc = zlib.crc32
_prefix_pack = PREFIX.pack
_prefix_pack_into = PREFIX.pack_into
_head_pack = HEAD.pack
_BLANK_PREFIX = bytes(PREFIX_SIZE)
_join = bytearray().join  # a bytearray, so the prefix is packed in place after the CRC
_single_pack = SINGLE.pack


def frame_size(payload_len: int, key_len: int = 0) -> int:
    """Bytes a single-record frame occupies (used to decide segment rolls)."""
    return OVERHEAD + payload_len + key_len


def encode_into(buf: bytearray, offset: int, ts: int, key: bytes | None, payload: bytes) -> None:
    """Append one single-record frame to ``buf`` (no intermediate copies)."""
    if key is None:
        head = _single_pack(offset, ts, FLAG_CRC32C, 1, -1, len(payload))
        crc = _crc32c(payload, _crc32c(head))
        buf += _prefix_pack(MAGIC, SINGLE.size + len(payload), crc)
        buf += head
        buf += payload
    else:
        head = _single_pack(offset, ts, FLAG_CRC32C, 1, len(key), len(payload))
        crc = _crc32c(payload, _crc32c(key, _crc32c(head)))
        buf += _prefix_pack(MAGIC, SINGLE.size + len(key) + len(payload), crc)
        buf += head
        buf += key
        buf += payload


def encode_batch(base: int, ts: int, items: list[tuple[bytes | None, bytes]]) -> bytes:
    """One frame holding several records; offsets are ``base .. base+len(items)-1``."""
    parts = [HEAD.pack(base, ts, FLAG_BATCH | FLAG_CRC32C, len(items))]
    for key, payload in items:
        parts.append(ENTRY.pack(-1 if key is None else len(key), len(payload)))
        if key is not None:
            parts.append(key)
        parts.append(payload)
    body = b"".join(parts)
    return _prefix_pack(MAGIC, len(body), _crc32c(body)) + body


def encode_parts(base: int, ts: int, count: int, parts: list[bytes]) -> bytearray:
    """A batch frame of ``count`` records whose entries (entry headers, keys, payloads) are
    ``parts[1:]``; ``parts[0]`` is a slot this fills with the prefix and head, so the frame
    is one join (each record's bytes copied once, none joined beforehand) and one CRC."""
    parts[0] = _BLANK_PREFIX + _head_pack(base, ts, FLAG_BATCH | FLAG_CRC32C, count)
    frame = _join(parts)
    with memoryview(frame) as mv:
        crc = _crc32c(mv[PREFIX_SIZE:])
    _prefix_pack_into(frame, 0, MAGIC, len(frame) - PREFIX_SIZE, crc)
    return frame


def kafka_head(base: int, ts: int, count: int, batch: bytes | bytearray | memoryview) -> bytes:
    """A Kafka frame up to the batch's CRC-32C field: prefix, head, entry and the batch's
    first 21 bytes with baseOffset and partitionLeaderEpoch (both outside Kafka's CRC)
    patched. The rest of the frame is ``batch[21:]`` as it is."""
    first = bytearray(batch[:KAFKA_BATCH_CRC])
    _BASE_OFFSET.pack_into(first, 0, base)
    _LEADER_EPOCH.pack_into(first, 12, 0)
    head = _KAFKA_HEAD.pack(base, ts, FLAG_KAFKA, count, -1, len(batch)) + first
    return _prefix_pack(MAGIC, _KAFKA_HEAD.size + len(batch), _crc(head)) + head


def encode_kafka_into(buf: bytearray, base: int, ts: int, count: int,
                      batch: bytes | bytearray | memoryview) -> None:
    """Append a Kafka frame holding ``batch`` at offset ``base`` to ``buf`` (the batch is
    copied once)."""
    buf += kafka_head(base, ts, count, batch)
    with memoryview(batch) as mv:
        buf += mv[KAFKA_BATCH_CRC:]


_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
BatchReader = Callable[[bytes, int, int], list[Record]]
_batch_reader: list[BatchReader] = []


def set_batch_reader(reader: BatchReader) -> None:
    """Register how a Kafka batch becomes records: ``reader(batch, base, frame_ts)`` returns
    the Records it holds (absolute offsets, their own timestamps; control records none)."""
    _batch_reader[:] = [reader]


def kafka_batch(data: bytes | bytearray | memoryview, pos: int) -> bytes:
    """The batch bytes of a checked Kafka frame at ``pos``."""
    start = pos + PREFIX_SIZE + HEAD_SIZE + ENTRY_SIZE
    plen = ENTRY.unpack_from(data, pos + PREFIX_SIZE + HEAD_SIZE)[1]
    return bytes(data[start : start + plen])


def records_of(data: bytes | bytearray | memoryview, pos: int) -> list[Record]:
    """The records of a checked frame of either kind (a Kafka frame's through the
    registered batch reader)."""
    base, ts, flags, _count = HEAD.unpack_from(data, pos + PREFIX_SIZE)
    if flags & FLAG_KAFKA:
        return expand_batch(kafka_batch(data, pos), base, ts)
    return [Record(base + i, ts, key, payload) for i, (key, payload) in enumerate(entries(data, pos))]


def expand_batch(batch: bytes, base: int, ts: int) -> list[Record]:
    """The records of a stored Kafka batch (needs a registered reader)."""
    if not _batch_reader:
        raise RuntimeError("no Kafka batch reader registered (import smartbroker.queues.kafka_batch)")
    return _batch_reader[0](batch, base, ts)


def check(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Classify the frame at ``data[pos:]``: (OK, size), (INCOMPLETE, size needed), (BAD, 0)."""
    avail = len(data) - pos
    if avail < PREFIX_SIZE:
        return INCOMPLETE, PREFIX_SIZE
    magic, length, crc = PREFIX.unpack_from(data, pos)
    if magic != MAGIC or length < HEAD_SIZE + ENTRY_SIZE or length > MAX_BODY:
        return BAD, 0
    size = PREFIX_SIZE + length
    if avail < size:
        return INCOMPLETE, size
    start = pos + PREFIX_SIZE
    flags = data[start + 16]  # the flags byte of HEAD
    if flags & FLAG_KAFKA:
        return (OK, size) if _check_kafka(data, start, length, crc) == OK else (BAD, 0)
    with memoryview(data) as mv:
        if (_crc32c if flags & FLAG_CRC32C else _crc)(mv[start : pos + size]) != crc:
            return BAD, 0
    # CRC matched; still make sure the entries add up, so decode() cannot run off the end.
    _base, _ts, flags, count = HEAD.unpack_from(data, start)
    p, end = start + HEAD_SIZE, pos + size
    for _ in range(1 if flags & FLAG_KAFKA else count):
        if p + ENTRY_SIZE > end:
            return BAD, 0
        klen, plen = ENTRY.unpack_from(data, p)
        p += ENTRY_SIZE + max(klen, 0) + plen
    if p != end or count == 0:
        return BAD, 0
    return OK, size


def _check_kafka(data: bytes | bytearray | memoryview, start: int, length: int, crc: int) -> int:
    """OK or BAD for a Kafka frame's body at ``start``: the frame CRC over its head, then
    the batch's own CRC-32C over the rest."""
    if length < _KAFKA_MIN:
        return BAD
    with memoryview(data) as mv:
        if _crc(mv[start : start + _KAFKA_COVERED]) != crc:
            return BAD
        _base, _ts, _flags, count, klen, plen = _KAFKA_HEAD.unpack_from(data, start)
        if count < 1 or klen != -1 or plen != length - _KAFKA_HEAD.size:
            return BAD
        batch = start + _KAFKA_HEAD.size
        if _crc32c(mv[batch + KAFKA_BATCH_CRC : start + length]) != _BATCH_CRC.unpack_from(data, batch + 17)[0]:
            return BAD
    return OK


def head(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int, int, int]:
    """(base_offset, timestamp_ms, flags, count) of a checked frame at ``pos``."""
    return HEAD.unpack_from(data, pos + PREFIX_SIZE)


def entries(data: bytes | bytearray | memoryview, pos: int) -> list[tuple[bytes | None, bytes]]:
    """(key, payload) pairs of a checked frame at ``pos``."""
    count = HEAD.unpack_from(data, pos + PREFIX_SIZE)[3]
    p = pos + PREFIX_SIZE + HEAD_SIZE
    out: list[tuple[bytes | None, bytes]] = []
    for _ in range(count):
        klen, plen = ENTRY.unpack_from(data, p)
        p += ENTRY_SIZE
        key = None
        if klen >= 0:
            key = bytes(data[p : p + klen])
            p += klen
        out.append((key, bytes(data[p : p + plen])))
        p += plen
    return out
