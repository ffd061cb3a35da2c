"""The part of a stored Kafka RecordBatch v2 that the producer-state rules read: the
61-byte header and, for a control batch, its marker type.

Nothing past the header is decoded (a control record's 4-byte key aside), so reading a
batch here needs no Kafka codec and ``queues/`` stays free of ``kafka/``. Produce
(``kafka/batches.py``) builds a ``BatchHeader`` from the fields it already unpacked; a
stream rebuilding its producers at load (``producer_state.rebuild``) parses it here.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from smartbroker.queues.kafka_batch import CONTROL, HEADER, HEADER_SIZE, TRANSACTIONAL

MAX_SEQUENCE = 2**31 - 1  # sequences wrap to 0 past this (Kafka's DefaultRecordBatch)


class BatchHeader(NamedTuple):
    """What the producer-state rules read from a RecordBatch v2 header."""

    base_offset: int
    last_offset_delta: int
    attributes: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    count: int

    @property
    def transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL)

    @property
    def control(self) -> bool:
        return bool(self.attributes & CONTROL)

    @property
    def last_sequence(self) -> int:
        """Kafka's DefaultRecordBatch.lastSequence: the base sequence plus the last offset
        delta, wrapping past 2^31-1 to 0."""
        if self.base_sequence < 0:
            return -1
        return (self.base_sequence + self.last_offset_delta) % (MAX_SEQUENCE + 1)


def parse_header(batch: bytes | bytearray | memoryview) -> BatchHeader:
    """The header of one RecordBatch v2 (``batch`` starts at its baseOffset)."""
    (base, _len, _epoch, _magic, _crc, attributes, delta, _first_ts, max_ts, pid, epoch,
     seq, count) = HEADER.unpack_from(batch, 0)
    return BatchHeader(base, delta, attributes, max_ts, pid, epoch, seq, count)


def control_type(batch: bytes | bytearray | memoryview) -> int:
    """A control batch's marker type (0 abort, 1 commit; Kafka's ControlRecordType), read
    from its first record's key (version int16, type int16); -1 when unreadable."""
    pos = HEADER_SIZE
    try:
        for _ in range(4):  # record length, (attributes byte), timestamp and offset deltas
            if _ == 1:
                pos += 1
                continue
            pos = _skip_varint(batch, pos)
        pos = _skip_varint(batch, pos)  # key length (4)
        return struct.unpack_from(">h", batch, pos + 2)[0]
    except (IndexError, struct.error):
        return -1


def _skip_varint(data: bytes | bytearray | memoryview, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1
