"""RecordBatch v2 bytes bent on purpose for the unit tests of Produce's batch checks
(``smartbroker/kafka/batches.py``): a real batch's header over other records, a codec
and a record count of the test's choosing, with length and CRC made right again."""

from __future__ import annotations

import struct

from smartbroker.kafka import batches, codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.recordbatch import HEADER_SIZE


def with_records(batch: bytes, records: bytes, kind: int, count: int) -> bytes:
    """``batch``'s header over ``records`` (the records section), saying compression
    ``kind`` and ``count`` records (lastOffsetDelta and recordCount), with its length and
    CRC-32C recomputed so that only what the test bent is wrong."""
    data = bytearray(batch[:HEADER_SIZE]) + records
    struct.pack_into(">i", data, 8, len(data) - 12)
    struct.pack_into(">h", data, 21, kind)
    struct.pack_into(">i", data, 23, count - 1)
    struct.pack_into(">i", data, 57, count)
    struct.pack_into(">I", data, 17, codec.crc32c(memoryview(data)[21:]))
    return bytes(data)


def refusal(data: bytes, limit: int = 1 << 20) -> ErrorCode | None:
    """The error code Produce's checks refuse ``data`` with; None when it is accepted."""
    try:
        batches.check_size(batches.split(data), limit)
    except batches.BatchRefused as exc:
        return exc.code
    return None
