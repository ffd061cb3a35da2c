"""Kafka's RecordBatch v2 header layout, the one definition shared by the Kafka codec
(``kafka/codec.py``, which may not import ``queues/``) and the stream side that reads
stored batches (``queues/kafka_batch.py``, which may not import ``kafka/``)."""

from __future__ import annotations

import struct

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# first and max timestamp, producer id and epoch, base sequence, record count: 61 bytes
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size
