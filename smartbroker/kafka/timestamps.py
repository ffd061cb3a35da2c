"""A topic's record timestamp configs at Produce, as Kafka's LogValidator applies them.

``message.timestamp.type=LogAppendTime``: the broker's clock, not the producer's, is every
record's timestamp.

Kafka does not touch the records: it sets the batch's timestamp-type attribute bit and its
maxTimestamp to the append time and recomputes the CRC; readers then give every record of
the batch that time (the Java client, librdkafka, kafka-python, and our AMQP readers,
``queues/kafka_batch.py``). So a batch is copied with two header fields rewritten: no
record is decoded. Produce answers with that time in ``log_append_time_ms`` (-1 for
CreateTime topics). A compacted topic stores its records one by one (``produce._entries``):
each gets the append time as its timestamp there. Control batches keep theirs.

``message.timestamp.before.max.ms`` / ``after.max.ms`` (and the deprecated
``difference.max.ms``, which stands in for either left at its default, as in Kafka 3.6+):
with CreateTime, a record whose timestamp is further than that from the broker's clock
refuses the partition's data with INVALID_TIMESTAMP and per-record errors. Only topics
that set one pay for it: their batches' records are decoded to read each timestamp
(``queues/kafka_batch.records``), the header alone does not bound them.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from typing import Any

from smartbroker.kafka import batches, codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues.kafka_batch import TIMESTAMP_LOG_APPEND, BatchError, records

# stored_configs.py's keys for the configs
TIMESTAMP_TYPE = "x-message-timestamp-type"
BEFORE, AFTER = "x-message-timestamp-before-max-ms", "x-message-timestamp-after-max-ms"
DIFFERENCE = "x-message-timestamp-difference-max-ms"
_UNSET = 2**63 - 1  # Kafka's default for the three: Long.MAX_VALUE, no bound
_ATTRIBUTES, _MAX_TS, _CRC = struct.Struct(">h"), struct.Struct(">q"), struct.Struct(">I")


def append_time(stream: Any) -> int:
    """Now in ms if ``stream``'s topic stamps records with the log append time, else -1.
    Called only for streams with overrides (the produce path is hot)."""
    if stream.meta.overrides.get(TIMESTAMP_TYPE) == "LogAppendTime":
        return int(time.time() * 1000)
    return -1


def stamp(checked: list[batches.Batch], now_ms: int) -> list[batches.Batch]:
    """``checked`` with every data batch marked LogAppendTime at ``now_ms``."""
    out = []
    for batch in checked:
        if batch.control:
            out.append(batch)
            continue
        data = bytearray(batch.data)
        (attributes,) = _ATTRIBUTES.unpack_from(data, 21)
        _ATTRIBUTES.pack_into(data, 21, attributes | TIMESTAMP_LOG_APPEND)
        _MAX_TS.pack_into(data, 35, now_ms)
        _CRC.pack_into(data, 17, codec.crc32c(memoryview(data)[21:]))
        out += batches.split(bytes(data))
    return out


def bounds(overrides: Mapping[str, Any]) -> tuple[int, int] | None:
    """(before, after) ms a CreateTime record may be from now, or None: unbounded."""
    if overrides.get(TIMESTAMP_TYPE) == "LogAppendTime":
        return None
    difference = overrides.get(DIFFERENCE, _UNSET)
    before, after = overrides.get(BEFORE, _UNSET), overrides.get(AFTER, _UNSET)
    before = difference if before == _UNSET else before
    after = difference if after == _UNSET else after
    return None if before == after == _UNSET else (before, after)


def out_of_range(checked: list[batches.Batch], before: int, after: int,
                 now_ms: int) -> list[tuple[int, str]]:
    """Kafka's record errors (index, message) for the records of ``checked`` whose
    timestamp lies outside [now - before, now + after]; raises BatchRefused if a batch's
    records cannot be read."""
    low, high = now_ms - before, now_ms + after
    errors: list[tuple[int, str]] = []
    index = 0
    for batch in checked:
        if batch.control:
            continue
        try:
            found = records(bytes(batch.data))
        except BatchError as exc:
            raise batches.BatchRefused(ErrorCode.CORRUPT_MESSAGE, f"record batch: {exc}") from None
        for offset, ts, *_ in found:
            if ts != -1 and not low <= ts <= high:
                errors.append((index, f"Timestamp {ts} of message with offset {offset} is out "
                                      f"of range. The timestamp should be within [{low}, {high}]"))
            index += 1
    return errors
