"""Kafka's RecordBatch v2 header layout, the one definition shared by the Kafka codec
(``kafka/codec.py``, which may not import ``queues/``) and the stream side that reads
stored batches (``queues/kafka_batch.py``, which may not import ``kafka/``)."""

from __future__ import annotations

import struct

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# first and max timestamp, producer id and epoch, base sequence, record count: 61 bytes
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size
FIELDS = ("baseOffset", "batchLength", "partitionLeaderEpoch", "magic", "crc", "attributes",
          "lastOffsetDelta", "firstTimestamp", "maxTimestamp", "producerId", "producerEpoch",
          "baseSequence", "recordsCount")  # HEADER's, in order, as Kafka names them


def fields(*names: str) -> struct.Struct:
    """A struct over the same 61 bytes that unpacks only ``names`` (in header order), the
    rest skipped as pad bytes: a loop over many headers needing a few fields (counting a
    Fetch's batches) pays half of what unpacking all thirteen costs."""
    unknown = set(names) - set(FIELDS)
    if unknown:
        raise ValueError(f"no RecordBatch header field {sorted(unknown)}")
    codes = [code if name in names else f"{struct.calcsize('>' + code)}x"
             for name, code in zip(FIELDS, HEADER.format[1:], strict=True)]
    return struct.Struct(">" + "".join(codes))
