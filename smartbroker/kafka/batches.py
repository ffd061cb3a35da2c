"""Produce's check of RecordBatch v2 bytes, header only: what lets a batch be stored as it
arrived without decoding a record.

Per batch: whole (its length inside the data), magic 2, Kafka's CRC-32C over attributes to
the end, at least one record and ``lastOffsetDelta + 1`` records (dense offsets), a
compression Kafka defines (none, gzip, snappy, lz4, zstd; ``queues/kafka_compression.py``). The
records themselves are left to the producer's CRC: a batch whose record fields do not parse
is served to Kafka readers as sent, and AMQP readers skip it.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from smartbroker.kafka import codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues import kafka_compression
from smartbroker.queues.batch_header import BatchHeader
from smartbroker.queues.kafka_batch import (
    COMPRESSION_MASK,
    HEADER,
    HEADER_SIZE,
    NONE,
    SUPPORTED_COMPRESSION,
)

_LENGTH = struct.Struct(">i")
_MIN_LENGTH = HEADER_SIZE - 12  # batchLength counts from the partition leader epoch on
# the smallest record: length, attributes, timestamp and offset deltas, key and value
# lengths, header count, a byte each. A header claiming more records than fit is a lie
# (Kafka finds it iterating the records) that would open a gap of offsets readers step over
MIN_RECORD = 7


class BatchRefused(Exception):
    """A batch Produce refuses: its Kafka error code and message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Batch:
    """One checked batch: its bytes and its header, unpacked once here and read again by
    the producer-state rules (``idempotence.py``, ``queues/partition_producers.py``)."""

    data: memoryview
    max_ts: int  # its max timestamp, or the arrival time if it has none
    header: BatchHeader

    @property
    def count(self) -> int:
        """The offsets it covers (its records: ``split`` checked lastOffsetDelta + 1)."""
        return self.header.count

    @property
    def control(self) -> bool:
        return self.header.control


def check_size(checked: list[Batch], limit: int) -> None:
    """Kafka's ``max.message.bytes`` limits a batch (``max_message_size`` here), and the
    same limit what a compressed batch inflates to: a few KiB of gzip, lz4 or zstd can
    inflate to GiBs in whoever decodes it (AMQP readers, compaction); inflated here 1 MiB
    at a time and not kept, as Kafka inflates compressed batches to validate them."""
    for batch in checked:
        if len(batch.data) > limit:
            raise BatchRefused(ErrorCode.MESSAGE_TOO_LARGE, f"record batch of {len(batch.data)} "
                               f"bytes is over the limit of {limit} bytes")
        compression = batch.header.attributes & COMPRESSION_MASK
        if compression == NONE or batch.control:
            continue
        try:
            size = kafka_compression.inflated_size(compression, batch.data[HEADER_SIZE:], limit)
        except kafka_compression.CompressionError as exc:
            raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, f"record batch: {exc}") from None
        except kafka_compression.TooLarge:
            raise BatchRefused(ErrorCode.MESSAGE_TOO_LARGE, f"{kafka_compression.NAMES[compression]}"
                               f" record batch inflates past the limit of {limit} bytes") from None
        if batch.count > size // MIN_RECORD:
            raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, f"{batch.count} records cannot "
                               f"fit in {size} bytes")


def split(data: bytes | memoryview | None) -> list[Batch]:
    """The checked batches of a partition's records field; raises BatchRefused."""
    if not data:
        raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, "no record batch")
    view = memoryview(data)
    end = len(view)
    pos = 0
    out: list[Batch] = []
    now = -1
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, "truncated record batch header")
        (length,) = _LENGTH.unpack_from(view, pos + 8)
        size = 12 + length
        if length < _MIN_LENGTH or pos + size > end:
            raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, f"record batch length {length} "
                               f"does not fit the {end - pos} bytes left")
        (base, _length, _epoch, magic, crc, attributes, last_delta, _first_ts, max_ts,
         pid, pepoch, seq, count) = HEADER.unpack_from(view, pos)
        if magic != 2:
            raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, f"record batch magic {magic} is not v2")
        batch = view[pos:pos + size]
        if codec.crc32c(batch[21:]) != crc:
            raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, "record batch CRC mismatch")
        if count < 1:
            raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, "no records")
        if last_delta + 1 != count:
            raise BatchRefused(ErrorCode.INVALID_RECORD, f"record count {count} does not match "
                               f"lastOffsetDelta {last_delta}")
        compression = attributes & COMPRESSION_MASK
        if compression == NONE and count > (size - HEADER_SIZE) // MIN_RECORD:
            raise BatchRefused(ErrorCode.CORRUPT_MESSAGE, f"{count} records cannot fit in "
                               f"{size - HEADER_SIZE} bytes")
        if compression not in SUPPORTED_COMPRESSION:
            raise BatchRefused(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
                               f"compression type {compression} is not one of Kafka's (0-4)")
        header = BatchHeader(base, last_delta, attributes, max_ts, pid, pepoch, seq, count)
        if max_ts < 0:
            now = now if now >= 0 else int(time.time() * 1000)
            max_ts = now
        out.append(Batch(batch, max_ts, header))
        pos += size
    return out
