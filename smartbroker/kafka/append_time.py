"""A topic's ``message.timestamp.type=LogAppendTime``: the broker's clock, not the
producer's, is every record's timestamp, as Kafka's LogValidator does for v2 batches.

Kafka does not touch the records: it sets the batch's timestamp-type attribute bit and its
maxTimestamp to the append time and recomputes the CRC; readers then give every record of
the batch that time (the Java client, librdkafka, kafka-python, and our AMQP readers,
``queues/kafka_batch.py``). So a batch is copied with two header fields rewritten: no
record is decoded. Produce answers with that time in ``log_append_time_ms`` (-1 for
CreateTime topics). A compacted topic stores its records one by one (``produce._entries``):
each gets the append time as its timestamp there. Control batches keep theirs.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from smartbroker.kafka import batches, codec
from smartbroker.queues.kafka_batch import TIMESTAMP_LOG_APPEND

TIMESTAMP_TYPE = "x-message-timestamp-type"  # stored_configs.py's key for the config
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
