"""A topic's ``compression.type`` other than ``producer``: Produce re-encodes each batch of
another codec to the topic's before storing it, as Kafka's LogValidator does when the
source and target codecs differ, so Fetch serves (and the segment files hold) batches in
the codec the topic names, whoever produced them.

Only the records are re-encoded (``codec.recompress``): producer id, epoch and sequence,
the transactional bit, offset deltas and timestamps stay, so idempotence and transactions
see the same batch. Control batches and batches already in the topic's codec are stored as
sent. A compacted topic stores its records one by one (``produce._entries``), never as
batches, so nothing is re-encoded there. What a batch inflates to was bounded before
(``batches.check_size``); the re-encoded batch must fit ``max.message.bytes`` too, else
MESSAGE_TOO_LARGE, as Kafka's RecordTooLargeException.

Topics left at ``producer`` (the default) never get here: their overrides are empty, or
hold no ``compression.type`` (``configs.target_codec``).
"""

from __future__ import annotations

from typing import Any

from smartbroker.kafka import batches, codec, configs
from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues.kafka_batch import COMPRESSION_MASK


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
        try:
            data = codec.recompress(batch.data, target)
        except Exception as exc:  # records that do not parse under a good CRC
            raise batches.BatchRefused(ErrorCode.CORRUPT_MESSAGE, "record batch cannot be "
                                       f"re-encoded: {type(exc).__name__}: {exc}") from None
        if len(data) > limit:
            raise batches.BatchRefused(ErrorCode.MESSAGE_TOO_LARGE, f"record batch of "
                                       f"{len(data)} bytes re-encoded as {_name(target)} "
                                       f"is over the limit of {limit} bytes")
        out += batches.split(data)
    return out


def _name(target: int) -> str:
    return next(name for name, code in configs.CODECS.items() if code == target)
