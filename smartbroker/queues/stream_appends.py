"""The Kafka front end's appends to a stream: Produce's batches, stored as they came.

AMQP publishes go through ``StreamQueue.publish`` (one message, encoded as a record);
Kafka producers choose the partition and send ready RecordBatch v2 bytes (or, for a
compacted topic, records with their keys), so they append to the partition log directly
and then tell the queue it grew. Plain functions of the ``StreamQueue``, split from
``stream.py`` so that module keeps the AMQP side (publish, readers, settlement).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smartbroker.queues.base import PublishResult
    from smartbroker.queues.stream import StreamQueue


def append_kafka_batches(queue: StreamQueue, partition: int,
                         batches: list[tuple[bytes | memoryview, int, int]]
                         ) -> tuple[int, PublishResult]:
    """The Kafka front end's append of checked RecordBatch v2 bytes, each ``(batch,
    offsets it covers (lastOffsetDelta + 1), max timestamp ms)``, stored as they are
    (only baseOffset and partitionLeaderEpoch are patched, both outside the CRC), to
    ``partition`` (a Kafka producer chose it). Returns the first batch's base offset
    and the result whose ``sync`` log a durable acknowledgement waits for. AMQP
    readers decode the records (``kafka_batch.py``); producer id, epoch and sequence
    stay in the stored batch headers."""
    lg = queue.logs[partition]
    first = lg.next_offset
    n = 0
    for batch, count, max_ts in batches:
        lg.append_kafka_batch(batch, count, max_ts)
        n += count
    return first, _grew(queue, partition, n)


def append_stored(queue: StreamQueue, partition: int,
                  records: list[tuple[bytes, int, bytes | None]]) -> tuple[int, PublishResult]:
    """The Kafka front end's append: ``(stored record, timestamp ms, key)`` entries go
    to ``partition`` as they are (a Kafka producer chose it). Returns the first offset
    and the result whose ``sync`` log a durable acknowledgement waits for. The
    compaction key is the Kafka key (an unkeyed record's is the topic name, as for an
    unkeyed AMQP publish)."""
    lg = queue.logs[partition]
    compact = queue.stream.compact
    first = lg.next_offset
    for payload, timestamp_ms, key in records:
        if compact and key is None:
            key = queue.name.encode("utf-8", "surrogateescape")
        lg.append(payload, timestamp_ms, key if compact else None)
    return first, _grew(queue, partition, len(records))


def _grew(queue: StreamQueue, partition: int, records: int) -> PublishResult:
    """After a Kafka append: count it, wake waiting Fetches and readers; the result
    names the log a durable acknowledgement waits for."""
    queue.stats["publish"] += records
    if queue.on_append:
        queue.appended(partition)
    if queue.consumers:
        queue.dispatch()
    return queue._published[partition]
