"""A topic's ``compression.type`` other than ``producer``: Produce re-encodes each batch of
another codec to the topic's before storing it, as Kafka's LogValidator does when the
source and target codecs differ, so Fetch serves (and the segment files hold) batches in
the codec the topic names, whoever produced them.

A v2 batch compresses its records section as a whole (the 61-byte header, record count
included, stays plain), so re-encoding is inflating that section (``kafka_compression``,
bounded: ``batches.check_size`` already checked what it inflates to), compressing it again
(``codec.compress``, kafka-python's codecs) and rewriting three header fields: length,
the attributes' codec bits and the CRC. No record is decoded: C codecs at their speed,
not a Python loop per record on the event loop (a batch of 100k small records took about
a second that way). The producer id, epoch and sequence, the transactional bit, offsets
and timestamps stay, so idempotence and transactions see the same batch; its records are
left to the producer's CRC as on the fast path. Control batches and batches already in
the topic's codec are stored as sent. A compacted topic stores its records one by one
(``produce._entries``), never as batches, so nothing is re-encoded there. The re-encoded
batch must fit ``max.message.bytes`` too, else MESSAGE_TOO_LARGE, as Kafka's
RecordTooLargeException.

Topics left at ``producer`` (the default) never get here: their overrides are empty, or
hold no ``compression.type`` (``configs.target_codec``).
"""

from __future__ import annotations

import struct
from typing import Any

from smartbroker.kafka import batches, codec, configs
from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues import kafka_compression
from smartbroker.queues.kafka_batch import COMPRESSION_MASK, HEADER_SIZE, NONE

_LENGTH, _ATTRIBUTES, _CRC = struct.Struct(">i"), struct.Struct(">h"), struct.Struct(">I")


def to_topic_codec(stream: Any, checked: list[batches.Batch], limit: int) -> list[batches.Batch]:
    """``checked`` with every batch in ``stream``'s codec; raises BatchRefused."""
    target = configs.target_codec(stream)
    if target is None or stream.stream.compact:
        return checked
    out = []
    for batch in checked:
        if batch.control or batch.header.attributes & COMPRESSION_MASK == target:
            out.append(batch)
            continue
        data = reencode(batch.data, target, limit)
        if len(data) > limit:
            raise batches.BatchRefused(ErrorCode.MESSAGE_TOO_LARGE, f"record batch of "
                                       f"{len(data)} bytes re-encoded as {_name(target)} "
                                       f"is over the limit of {limit} bytes")
        out += batches.split(data)
    return out


def reencode(batch: memoryview | bytes, target: int, limit: int) -> bytes:
    """One RecordBatch v2 with its records section in codec ``target`` (0: none)."""
    view = memoryview(batch)
    (attributes,) = _ATTRIBUTES.unpack_from(view, 21)
    records: bytes | memoryview = view[HEADER_SIZE:]
    source = attributes & COMPRESSION_MASK
    try:
        if source != NONE:
            records = kafka_compression.inflate(source, records, limit)
        if target != NONE:
            records = codec.compress(target, records)
    except (kafka_compression.CompressionError, kafka_compression.TooLarge) as exc:
        raise batches.BatchRefused(ErrorCode.CORRUPT_MESSAGE, f"record batch: {exc}") from None
    except Exception as exc:  # the compression libraries' own errors
        raise batches.BatchRefused(ErrorCode.CORRUPT_MESSAGE, "record batch cannot be "
                                   f"re-encoded: {type(exc).__name__}: {exc}") from None
    out = bytearray(view[:HEADER_SIZE])
    out += records
    _LENGTH.pack_into(out, 8, len(out) - 12)  # batchLength: from the leader epoch on
    _ATTRIBUTES.pack_into(out, 21, (attributes & ~COMPRESSION_MASK) | target)
    _CRC.pack_into(out, 17, codec.crc32c(memoryview(out)[21:]))
    return bytes(out)


def _name(target: int) -> str:
    return next(name for name, code in configs.CODECS.items() if code == target)
