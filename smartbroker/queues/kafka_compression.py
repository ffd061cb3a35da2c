"""Kafka's four record-batch codecs, inflated in bounded steps: what Produce validates a
compressed batch with (``kafka/batches.py``) and what AMQP readers and compaction decode
stored batches with (``kafka_batch.py``).

A compressed batch is a promise about its inflated size that only inflating checks: a few
KiB of zstd or lz4 can claim GiBs. So every codec yields its output a step (1 MiB) at a
time and stops once the caller's limit is passed, never holding more than the limit plus a
step, as Kafka validates compressed batches by iterating them.

Formats as Kafka's clients write them: gzip (one member), snappy either in xerial's framing
(the Java client, kafka-python) or raw (librdkafka), lz4 frames (KIP-57, magic 2 has the
right header checksum), zstd frames (possibly several, read across).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import lz4.frame
import snappy
import zstandard

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CODECS = frozenset({NONE, GZIP, SNAPPY, LZ4, ZSTD})
NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}
STEP = 1 << 20
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16  # magic, then version and min compatible version (int32 each)
_BLOCK_LENGTH = struct.Struct(">i")
# snappy's densest op (a 3-byte copy of 64 bytes) inflates about 21x: a block claiming
# more than 22x its own size is corrupt, refused before the library sizes a buffer by it
_SNAPPY_MAX_RATIO = 22
_ZSTD = zstandard.ZstdDecompressor()


class CompressionError(ValueError):
    """A compressed payload that does not inflate (corrupt, truncated)."""


class TooLarge(ValueError):
    """A compressed payload that inflates past the caller's limit."""


def _gzip(data: memoryview) -> Iterator[bytes]:
    inflater = zlib.decompressobj(47)  # gzip header and trailer checked
    rest: bytes | memoryview = data
    try:
        while not inflater.eof:
            out = inflater.decompress(rest, STEP)
            rest = inflater.unconsumed_tail
            if not out and not rest:
                raise CompressionError("gzip stream is truncated")
            yield out
    except zlib.error as exc:
        raise CompressionError(f"gzip: {exc}") from None


def _uvarint(data: memoryview, pos: int = 0) -> int:
    """snappy's preamble: the block's inflated length, an unsigned varint."""
    value = shift = 0
    while pos < len(data) and shift < 35:
        b = data[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value
        pos += 1
        shift += 7
    raise CompressionError("snappy block length is not a varint")


def _snappy_block(block: memoryview, room: int) -> bytes:
    claimed = _uvarint(block)
    if claimed > len(block) * _SNAPPY_MAX_RATIO:
        raise CompressionError(f"snappy block of {len(block)} bytes claims {claimed}")
    if claimed > room:
        raise TooLarge(f"snappy block inflates to {claimed} bytes")
    try:
        return snappy.decompress(bytes(block))
    except Exception as exc:  # python-snappy's (cramjam's) errors share no base class
        raise CompressionError(f"snappy: {type(exc).__name__} {exc}") from None


def _snappy(data: memoryview, limit: int) -> Iterator[bytes]:
    if bytes(data[:8]) != _XERIAL_MAGIC or len(data) < _XERIAL_HEADER:
        yield _snappy_block(data, limit + 1)  # raw snappy, as librdkafka writes it
        return
    pos, size = _XERIAL_HEADER, 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise CompressionError("xerial snappy block length is cut")
        (length,) = _BLOCK_LENGTH.unpack_from(data, pos)
        if length < 1 or pos + 4 + length > len(data):
            raise CompressionError(f"xerial snappy block of {length} bytes does not fit")
        out = _snappy_block(data[pos + 4:pos + 4 + length], limit + 1 - size)
        size += len(out)
        pos += 4 + length
        yield out


def _lz4(data: memoryview) -> Iterator[bytes]:
    rest = bytes(data)
    try:
        while rest:
            frame = lz4.frame.LZ4FrameDecompressor()
            out = frame.decompress(rest, STEP)
            while True:
                yield out
                if frame.eof or frame.needs_input:
                    break
                out = frame.decompress(b"", STEP)
            if not frame.eof:
                raise CompressionError("lz4 frame is truncated")
            rest = frame.unused_data
    except RuntimeError as exc:  # lz4's LZ4F errors
        raise CompressionError(f"lz4: {exc}") from None


def _zstd_frames(data: memoryview) -> None:
    """Walks the frames' block headers to their ends: zstandard's stream reader answers a
    truncated frame (or bytes that are no frame) with less output, not an error."""
    pos, end = 0, len(data)
    try:
        while pos < end:
            magic = int.from_bytes(data[pos:pos + 4], "little")
            if magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame
                pos += 8 + int.from_bytes(data[pos + 4:pos + 8], "little")
                continue
            checksum = zstandard.get_frame_parameters(data[pos:]).has_checksum
            pos += zstandard.frame_header_size(data[pos:])
            last = 0
            while not last:
                if pos + 3 > end:
                    raise CompressionError("zstd frame is truncated")
                head = int.from_bytes(data[pos:pos + 3], "little")
                last, kind, size = head & 1, (head >> 1) & 3, head >> 3
                if kind == 3:
                    raise CompressionError("zstd block type 3 is reserved")
                pos += 3 + (1 if kind == 1 else size)
            pos += 4 if checksum else 0
    except zstandard.ZstdError as exc:
        raise CompressionError(f"zstd: {exc}") from None
    if pos != end:
        raise CompressionError("zstd frame is truncated")


def _zstd(data: memoryview) -> Iterator[bytes]:
    _zstd_frames(data)
    try:
        with _ZSTD.stream_reader(data, read_across_frames=True) as reader:
            while out := reader.read(STEP):
                yield out
    except zstandard.ZstdError as exc:
        raise CompressionError(f"zstd: {exc}") from None


def _steps(codec: int, data: memoryview, limit: int) -> Iterator[bytes]:
    if not data:
        raise CompressionError(f"{NAMES.get(codec, codec)} payload is empty")
    if codec == GZIP:
        return _gzip(data)
    if codec == SNAPPY:
        return _snappy(data, limit)
    if codec == LZ4:
        return _lz4(data)
    if codec == ZSTD:
        return _zstd(data)
    raise CompressionError(f"compression type {codec} is not one of Kafka's")


def inflated_size(codec: int, data: bytes | memoryview, limit: int) -> int:
    """The inflated size of ``data``, checked by inflating it without keeping it; raises
    TooLarge past ``limit`` (as soon as it is passed), CompressionError if corrupt."""
    size = 0
    for out in _steps(codec, memoryview(data), limit):
        size += len(out)
        if size > limit:
            raise TooLarge(f"{NAMES[codec]} record batch inflates past {limit} bytes")
    return size


def inflate(codec: int, data: bytes | memoryview, limit: int) -> bytes:
    """``data`` inflated; raises TooLarge past ``limit``, CompressionError if corrupt."""
    parts: list[bytes] = []
    size = 0
    for out in _steps(codec, memoryview(data), limit):
        size += len(out)
        if size > limit:
            raise TooLarge(f"{NAMES[codec]} record batch inflates past {limit} bytes")
        parts.append(out)
    return parts[0] if len(parts) == 1 else b"".join(parts)
