"""Stored Kafka batches, read without kafka-python: the records AMQP readers, compaction
and lookups by timestamp need from a RecordBatch v2 kept as it arrived.

The store keeps a Kafka batch as one frame (``store/record.py``) and asks the reader
registered here for its records. Each becomes a stream entry in ``kafka_mapping``'s form
with the route ``OWN_ROUTE`` (exchange "" and routing key "", which no publish can reach a
stream with): the stream reads it as addressed to itself, since a batch does not know its
topic's name. Control batches (transaction markers) occupy offsets but hold no records.

All of Kafka's codecs (none, gzip, snappy, lz4, zstd) are decoded through
``kafka_compression.py``; Produce refuses ids Kafka does not define.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict

from smartbroker.queues import kafka_compression
from smartbroker.queues.kafka_mapping import RecordError, route_for, stored_record
from smartbroker.recordbatch import HEADER, HEADER_SIZE  # noqa: F401 - re-exported
from smartbroker.store import record as store_record
from smartbroker.store.api import Record

OWN_ROUTE = route_for("")
NONE, GZIP = kafka_compression.NONE, kafka_compression.GZIP
SUPPORTED_COMPRESSION = kafka_compression.CODECS
# Produce refused batches inflating past max_message_size; this bounds what a reader
# inflates from a log written under a larger limit (or by an older broker)
READ_LIMIT = 1 << 30
COMPRESSION_MASK = 0x07
TIMESTAMP_LOG_APPEND = 0x08
TRANSACTIONAL = 0x10
CONTROL = 0x20
_CACHE_SIZE = 8
log = logging.getLogger(__name__)


class BatchError(ValueError):
    """A batch whose records do not parse."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Kafka's zigzag varint at ``pos``: (value, position after it)."""
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    value = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise BatchError("varint too long")


def _bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    n, pos = _varint(data, pos)
    if n < 0:
        return None, pos
    end = pos + n
    if end > len(data):
        raise BatchError("field runs past the batch")
    return data[pos:end], end


KafkaRecordTuple = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def records(batch: bytes, frame_ts: int = -1) -> list[KafkaRecordTuple]:
    """(offset, timestamp ms, key, value, headers) of every record of a v2 batch (none for
    a control batch). A record without a timestamp gets ``frame_ts``."""
    (base, _length, _epoch, magic, _crc, attributes, last_delta, first_ts, max_ts,
     _pid, _pepoch, _seq, count) = HEADER.unpack_from(batch, 0)
    if magic != 2:
        raise BatchError(f"magic {magic} is not 2")
    if attributes & CONTROL:
        return []
    codec = attributes & COMPRESSION_MASK
    if codec == NONE:
        data, pos = batch, HEADER_SIZE
    else:
        try:
            data = kafka_compression.inflate(codec, memoryview(batch)[HEADER_SIZE:], READ_LIMIT)
        except (kafka_compression.CompressionError, kafka_compression.TooLarge) as exc:
            raise BatchError(str(exc)) from None
        pos = 0
    log_append = attributes & TIMESTAMP_LOG_APPEND
    out: list[KafkaRecordTuple] = []
    prev = -1  # offset deltas rise within the batch: a reader's chunk trusts their order
    for _ in range(count):
        length, pos = _varint(data, pos)
        end = pos + length
        if length < 0 or end > len(data):
            raise BatchError("record runs past the batch")
        pos += 1  # record attributes: unused
        ts_delta, pos = _varint(data, pos)
        off_delta, pos = _varint(data, pos)
        if not prev < off_delta <= last_delta:
            raise BatchError(f"record offset delta {off_delta} out of order or past the batch")
        prev = off_delta
        key, pos = _bytes(data, pos)
        value, pos = _bytes(data, pos)
        n, pos = _varint(data, pos)
        headers: list[tuple[str, bytes | None]] = []
        for _h in range(n):
            name, pos = _bytes(data, pos)
            hvalue, pos = _bytes(data, pos)
            headers.append(((name or b"").decode("utf-8", "surrogateescape"), hvalue))
        if pos != end:
            raise BatchError("record length does not match its fields")
        ts = max_ts if log_append else first_ts + ts_delta if first_ts >= 0 else frame_ts
        out.append((base + off_delta, ts, key, value, headers))
    return out


_cache: OrderedDict[tuple[int, bytes, int], list[Record]] = OrderedDict()


def stored_records(batch: bytes, base: int, frame_ts: int) -> list[Record]:
    """The registered store reader: stream entries (route ``OWN_ROUTE``) keyed by the Kafka
    key. A few recent batches are kept decoded, since readers advancing through a large
    batch in steps ask for it again and again."""
    ident = (base, bytes(batch[:HEADER_SIZE]), len(batch))  # the header holds the CRC-32C
    found = _cache.get(ident)
    if found is not None:
        _cache.move_to_end(ident)
        return found
    try:
        decoded = records(batch, frame_ts)
    except (BatchError, IndexError, struct.error) as exc:
        # Produce checked the header and CRC, not the records: a producer's broken batch
        # is Kafka readers' to see as sent, and holds nothing an AMQP reader can take
        log.warning("stored Kafka batch at offset %d has unreadable records: %s", base, exc)
        decoded = []
    out = []
    for offset, ts, key, value, headers in decoded:
        try:
            out.append(Record(offset, ts, key, stored_record(OWN_ROUTE, ts, key, value, headers)))
        except RecordError as exc:  # e.g. a header name no AMQP table can hold
            log.warning("Kafka record at offset %d skipped for AMQP readers: %s", offset, exc)
    _cache[ident] = out
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return out


store_record.set_batch_reader(stored_records)
