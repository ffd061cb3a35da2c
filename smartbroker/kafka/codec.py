"""The Kafka wire codec: the ONE module that imports kafka-python's ``kafka.protocol`` and
``kafka.record``.

kafka-python 3.x generates its request and response classes from Kafka's own JSON
schemas (flexible versions and tagged fields included), so nothing here is hand-written
field by field. Everything else in ``smartbroker.kafka`` goes through these functions, so
another codec (e.g. ``kio``) can replace this module alone.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kafka.codec import gzip_encode, lz4_encode, snappy_encode, zstd_encode
from kafka.protocol import admin, consumer, metadata, producer, sasl
from kafka.protocol.api_message import ApiMessage
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c

from smartbroker.kafka.null_fields import refused_null
from smartbroker.recordbatch import HEADER as BATCH_HEADER

_FIXED_HEADER = struct.Struct(">hhi")  # api_key, api_version, correlation_id
_SIZE = struct.Struct(">i")


def _message_classes() -> tuple[dict[int, type[ApiMessage]], dict[int, type[ApiMessage]]]:
    """api_key -> request class and -> response class, from every schema the library has
    (which of them we serve is the handlers' business, not the codec's)."""
    requests: dict[int, type[ApiMessage]] = {}
    responses: dict[int, type[ApiMessage]] = {}
    for module in (metadata, producer, consumer, admin, sasl):
        for name in getattr(module, "__all__", ()):
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, ApiMessage) and cls.json is not None:
                (requests if cls.is_request() else responses)[cls.API_KEY] = cls
    return requests, responses


REQUESTS, RESPONSES = _message_classes()
API_VERSIONS = metadata.ApiVersionsRequest.API_KEY  # 18
METADATA = metadata.MetadataRequest.API_KEY  # 3
FETCH = consumer.FetchRequest.API_KEY  # 1


class DecodeError(ValueError):
    """A request that does not parse: Kafka closes the connection."""


@dataclass(frozen=True, slots=True)
class Header:
    """What every request starts with (the request header)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request: its header and the library's message object (``body``)."""

    header: Header
    body: Any

    @property
    def api_key(self) -> int:
        return self.header.api_key

    @property
    def api_version(self) -> int:
        return self.header.api_version


def peek_header(payload: bytes | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id): the fixed 8 bytes every header version
    starts with, readable even when the version is one we cannot decode."""
    if len(payload) < _FIXED_HEADER.size:
        raise DecodeError("request shorter than its header")
    return _FIXED_HEADER.unpack_from(payload)


def max_version(api_key: int) -> int | None:
    """The newest version of ``api_key`` the codec can decode, None for an unknown key."""
    cls = REQUESTS.get(api_key)
    return None if cls is None else cls.max_version


def is_flexible(api_key: int, api_version: int) -> bool:
    """Whether this request version uses compact fields and tagged fields (header v2)."""
    cls = REQUESTS.get(api_key)
    if cls is not None:
        return cls.flexible_version_q(api_version)
    return api_key == API_VERSIONS and api_version >= 3  # KIP-511: any ApiVersions v3+


def decode_header(payload: bytes | memoryview) -> tuple[Header, int]:
    """The request header and where the body starts. Works for versions the codec
    cannot decode too (given ``is_flexible``): an unsupported ApiVersions needs its
    correlation id and client id to be answered."""
    api_key, api_version, correlation_id = peek_header(payload)
    data = memoryview(payload)
    pos = _FIXED_HEADER.size
    if len(data) < pos + 2:
        raise DecodeError("request header without client id")
    (n,) = struct.unpack_from(">h", data, pos)
    pos += 2
    client_id = None
    if n >= 0:
        if len(data) < pos + n:
            raise DecodeError("request header: client id truncated")
        client_id = bytes(data[pos:pos + n]).decode("utf-8", "replace")
        pos += n
    if is_flexible(api_key, api_version):
        pos = _skip_tagged_fields(data, pos)
    return Header(api_key, api_version, correlation_id, client_id), pos


def _uvarint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise DecodeError("bad varint in request header")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _skip_tagged_fields(data: memoryview, pos: int) -> int:
    count, pos = _uvarint(data, pos)
    for _ in range(count):
        _tag, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        pos += size
        if pos > len(data):
            raise DecodeError("tagged field past the end of the request header")
    return pos


def decode_request(payload: bytes | memoryview) -> Request:
    """One request (the bytes after the 4-byte size) into the library's object for its
    api_key and version. Raises DecodeError for an unknown key or version, or bad bytes."""
    api_key, api_version, _ = peek_header(payload)
    cls = REQUESTS.get(api_key)
    if cls is None or not 0 <= api_version <= cls.max_version:
        raise DecodeError(f"unsupported api_key {api_key} version {api_version}")
    header, pos = decode_header(payload)
    try:
        body = cls.decode(memoryview(payload)[pos:], version=header.api_version)
    except Exception as exc:  # the library raises whatever its generated code hits
        raise DecodeError(f"malformed {cls.name} v{header.api_version}: "
                          f"{type(exc).__name__}: {exc}") from None
    null = refused_null(cls._struct._fields, body, header.api_version)  # null_fields.py
    if null is not None:
        raise DecodeError(f"{cls.name} v{header.api_version}: null {null}, not nullable")
    return Request(header, body)


def response_class(api_key: int) -> type[ApiMessage]:
    """The response message class of ``api_key`` (construct it with the fields of the
    version being answered; nested structs are attributes of the class)."""
    return RESPONSES[api_key]


def encode_response(api_key: int, api_version: int, correlation_id: int, body: Any) -> bytes:
    """A framed response (size, response header, body) in the request's version; the
    library picks the header version (ApiVersions always answers with header v0)."""
    body.API_VERSION = api_version  # before the header: the library's setter would touch it
    body.with_header(correlation_id=correlation_id)
    return bytes(body.encode(header=True, framed=True))


def api_versions_error(correlation_id: int, error_code: int,
                       api_keys: Iterable[tuple[int, int, int]]) -> bytes:
    """An ApiVersions v0 response carrying an error (KIP-511: the answer to an ApiVersions
    version the broker does not know, so the client can retry with one it does)."""
    cls = RESPONSES[API_VERSIONS]
    body = cls(version=0, error_code=error_code,
               api_keys=[cls.ApiVersion(api_key=k, min_version=lo, max_version=hi)
                         for k, lo, hi in api_keys])
    return encode_response(API_VERSIONS, 0, correlation_id, body)


def frame_size(buffer: bytes | bytearray | memoryview, pos: int = 0) -> int | None:
    """The size prefix of the frame at ``pos``, None until its 4 bytes are in."""
    if len(buffer) - pos < 4:
        return None
    return _SIZE.unpack_from(buffer, pos)[0]


# -- RecordBatch v2 (for Produce and Fetch) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One record as the mapping to AMQP needs it (key, value, headers, timestamp)."""

    offset: int
    timestamp: int  # milliseconds
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def read_batches(data: bytes | memoryview) -> Iterator[DefaultRecordBatch]:
    """The v2 batches of a records field, CRC-checked (a bad CRC is a DecodeError: Kafka
    answers CORRUPT_MESSAGE). Older magic values are refused the same way."""
    records = MemoryRecords(bytes(data))
    while records.has_next():
        batch = records.next_batch()
        if batch is None:  # a trailing partial batch, which Fetch responses may carry
            return
        if not isinstance(batch, DefaultRecordBatch):
            raise DecodeError(f"record batch magic {batch.magic} is not v2")
        if not batch.validate_crc():
            raise DecodeError("record batch CRC mismatch")
        yield batch


def read_records(data: bytes | memoryview) -> list[Record]:
    """Every record of every batch in ``data`` (control batches included)."""
    out = []
    for batch in read_batches(data):
        for rec in batch:
            out.append(Record(rec.offset, rec.timestamp, rec.key, rec.value,
                              list(rec.headers)))
    return out


def write_batch(records: Iterable[tuple[int, bytes | None, bytes | None,
                                        list[tuple[str, bytes | None]]]],
                base_offset: int = 0, *, producer_id: int = -1, producer_epoch: int = -1,
                base_sequence: int = -1, transactional: bool = False) -> bytes:
    """One uncompressed RecordBatch v2 from (timestamp_ms, key, value, headers) tuples,
    its first record at ``base_offset``."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=transactional,
        producer_id=producer_id, producer_epoch=producer_epoch,
        base_sequence=base_sequence, batch_size=2**31 - 1)
    for delta, (timestamp, key, value, headers) in enumerate(records):
        builder.append(delta, timestamp=timestamp, key=key, value=value, headers=headers)
    batch = builder.build()
    struct.pack_into(">q", batch, 0, base_offset)  # baseOffset lies outside the CRC
    return bytes(batch)


BATCH_OVERHEAD = 61  # the RecordBatch v2 header, before its first record
# gzip at zlib's default level 6, as Kafka's (the library's default is 9: twice the CPU)
_ENCODERS = {1: functools.partial(gzip_encode, compresslevel=6), 2: snappy_encode,
             3: lz4_encode, 4: zstd_encode}


def compress(compression: int, payload: bytes | memoryview) -> bytes:
    """A batch's records section compressed with codec ``compression`` (1-4: gzip, snappy
    in xerial framing as Kafka's Java client writes it, lz4 frames, zstd), by kafka-python's
    codec functions: what the broker stores when a topic's compression.type says so."""
    return _ENCODERS[compression](bytes(payload))


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """Kafka's CRC-32C (the ``crc32c`` C package through the library)."""
    return calc_crc32c(data)


def record_size(key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes | None]]) -> int:
    """An upper bound of one record's size inside a batch (every varint at its widest), so
    Fetch can stop before max_bytes without encoding twice. Plain arithmetic, not the
    library's exact ``size_of``: it runs once per fetched record."""
    # attributes 1, timestamp and offset deltas 10 each, length 5, header count 5
    size = 31 + (5 + len(key) if key is not None else 1) + (
        5 + len(value) if value is not None else 1)
    for name, data in headers:
        size += 10 + 4 * len(name) + (len(data) if data is not None else 0)  # UTF-8 <= 4/char
    return size


def write_batch_at(records: list[tuple[int, int, bytes | None, bytes | None,
                                       list[tuple[str, bytes | None]]]]) -> bytes:
    """One uncompressed RecordBatch v2 from (offset, timestamp_ms, key, value, headers)
    tuples in offset order, offsets kept as they are (compaction leaves gaps, so they are
    not always consecutive): what Fetch sends for records read from a partition log.

    Encoded here rather than with the library's ``DefaultRecordBatchBuilder`` (whose
    output it matches byte for byte, see the unit test): Fetch runs this once per record,
    and the builder's type checks and per-record buffers cost twice as much."""
    base, first_ts = records[0][0], records[0][1]
    max_ts = first_ts
    varint = _varint
    parts: list[bytes] = [bytes(BATCH_HEADER.size)]
    for offset, timestamp, key, value, headers in records:
        if timestamp > max_ts:
            max_ts = timestamp
        body = [b"\x00", varint(timestamp - first_ts), varint(offset - base)]
        if key is None:
            body.append(b"\x01")  # varint -1: null
        else:
            body += (varint(len(key)), key)
        if value is None:
            body.append(b"\x01")
        else:
            body += (varint(len(value)), value)
        body.append(varint(len(headers)))
        for name, data in headers:
            raw = name.encode()
            body += (varint(len(raw)), raw)
            if data is None:
                body.append(b"\x01")
            else:
                body += (varint(len(data)), data)
        record = b"".join(body)
        parts += (varint(len(record)), record)
    batch = bytearray(b"".join(parts))
    BATCH_HEADER.pack_into(batch, 0, base, len(batch) - 12, 0, 2, 0, 0,
                            records[-1][0] - base, first_ts, max_ts, -1, -1, -1, len(records))
    struct.pack_into(">I", batch, 17, calc_crc32c(memoryview(batch)[21:]))  # attributes on
    return bytes(batch)


def control_batch(producer_id: int, producer_epoch: int, commit: bool,
                  coordinator_epoch: int, timestamp_ms: int) -> bytes:
    """A transaction marker: a control batch (attributes transactional and control) of one
    control record, key (version 0, type 1 commit / 0 abort), value (version 0,
    coordinator epoch), as Kafka's EndTransactionMarker; base offset 0 until stored."""
    key = struct.pack(">hh", 0, 1 if commit else 0)
    value = struct.pack(">hi", 0, coordinator_epoch)
    batch = bytearray(write_batch_at([(0, timestamp_ms, key, value, [])]))
    struct.pack_into(">h", batch, 21, 0x30)  # transactional | control, CreateTime
    struct.pack_into(">qhi", batch, 43, producer_id, producer_epoch, -1)
    struct.pack_into(">I", batch, 17, calc_crc32c(memoryview(batch)[21:]))
    return bytes(batch)


_SMALL_VARINTS: list[bytes] = []


def _varint(n: int) -> bytes:
    """Kafka's zigzag varint (Protobuf sint64); small values come from a table."""
    v = (n << 1) ^ (n >> 63)
    if v < 16384:
        return _SMALL_VARINTS[v]
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


_SMALL_VARINTS.extend(bytes([v]) if v < 128 else bytes([(v & 0x7F) | 0x80, v >> 7])
                      for v in range(16384))


__all__ = ["API_VERSIONS", "BATCH_OVERHEAD", "crc32c", "FETCH", "METADATA", "REQUESTS", "RESPONSES", "DecodeError", "Header",
           "Record", "Request", "api_versions_error", "control_batch", "decode_header", "decode_request",
           "encode_response", "frame_size", "is_flexible", "max_version",
           "peek_header", "read_batches", "read_records", "compress", "record_size",
           "response_class",
           "write_batch", "write_batch_at"]
