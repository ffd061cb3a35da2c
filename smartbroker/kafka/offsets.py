"""ListOffsets: a partition's offsets by position or by time, from the stream's log.

Per partition and timestamp, as Kafka answers: -2 (earliest) is the first offset still
kept (the log start offset), -1 (latest) the next offset to be written (the high
watermark; read_committed, v2+, gets the last stable offset), -3 (max timestamp, v7)
the first record with the largest timestamp, found through the segments' maximum timestamps so that one segment at most is scanned; any
other value the first record whose timestamp is at or after it (offset and timestamp -1
when there is none). Kafka's v0 list of old-style offsets is not offered (v1+). No leader
epochs: -1. ListOffsets creates no topic (an unknown one, like a name Kafka forbids, is
UNKNOWN_TOPIC_OR_PARTITION, as Kafka reports a topic missing from its metadata).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.authz import topic_describable
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.produce import PartitionError, Topics
from smartbroker.queues.stream_partitions import PartitionLog

LIST_OFFSETS = 2
VERSIONS = (1, 7)
EARLIEST, LATEST, MAX_TIMESTAMP = -2, -1, -3


def max_timestamp(lg: PartitionLog) -> tuple[int, int]:
    """(offset, timestamp) of the first record with the partition's largest timestamp;
    (-1, -1) when the partition is empty."""
    best = None
    for seg in lg.segments():
        if seg.max_timestamp_ms >= 0 and (best is None or seg.max_timestamp_ms > best.max_timestamp_ms):
            best = seg
    if best is None:
        return -1, -1
    start = max(best.base_offset, lg.first_offset)
    end = min(best.next_offset, lg.next_offset)  # a replicated partition: its high watermark
    for rec in lg.scan_records(start):
        if rec.offset >= end:
            break
        if rec.timestamp_ms == best.max_timestamp_ms:
            return rec.offset, rec.timestamp_ms
    return -1, -1  # retention took the segment meanwhile


def offset_for_time(lg: PartitionLog, timestamp_ms: int) -> tuple[int, int]:
    """(offset, timestamp) of the first record at or after ``timestamp_ms``; (-1, -1)
    when every record is older."""
    offset = lg.offset_for_timestamp(timestamp_ms)
    if offset >= lg.next_offset:
        return -1, -1
    for rec in lg.scan_records(max(offset, lg.first_offset)):  # a compacted gap skips ahead
        return rec.offset, rec.timestamp_ms
    return -1, -1


def lookup(lg: PartitionLog, timestamp_ms: int) -> tuple[int, int]:
    """(offset, timestamp) ListOffsets answers for one partition and requested time."""
    if timestamp_ms == EARLIEST:
        return lg.first_offset, -1
    if timestamp_ms == LATEST:
        return lg.next_offset, -1
    if timestamp_ms == MAX_TIMESTAMP:
        return max_timestamp(lg)
    return offset_for_time(lg, timestamp_ms)


class OffsetLister:
    """The ListOffsets handler of one listener."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        # cluster mode: whether another node leads a partition of a topic held here
        self.partition_elsewhere: Callable[[str, int], bool] | None = None

    def list_offsets(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(LIST_OFFSETS)
        topic_cls = cls.ListOffsetsTopicResponse
        part_cls = topic_cls.ListOffsetsPartitionResponse
        version = request.api_version
        committed = version >= 2 and request.body.isolation_level == 1
        answers = []
        for topic in request.body.topics:
            # Kafka: ListOffsets needs DESCRIBE on the topic (any permission here), checked
            # before the topic's existence; a refusal is TOPIC_AUTHORIZATION_FAILED
            denied = not topic_describable(self.topics.broker, self.topics.vhost, topic.name)
            missing = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            try:
                queue = None if denied else self.topics.stream(topic.name, create=False)
            except PartitionError as exc:  # NOT_LEADER_OR_FOLLOWER: another node leads it
                queue = None
                if exc.code == ErrorCode.NOT_LEADER_OR_FOLLOWER:
                    missing = exc.code
            parts = []
            spread = self.partition_elsewhere if queue is not None else None
            for p in topic.partitions:
                index = p.partition_index
                part = None if queue is None else queue.partitions.get(index)
                if spread is not None and part is not None and spread(topic.name, index):
                    part, missing = None, ErrorCode.NOT_LEADER_OR_FOLLOWER  # another node's
                if part is None or (p.timestamp == MAX_TIMESTAMP and version < 7):
                    code = (ErrorCode.TOPIC_AUTHORIZATION_FAILED if denied
                            else ErrorCode.UNSUPPORTED_VERSION if part is not None
                            else missing)
                    parts.append(part_cls(partition_index=index, error_code=code,
                                          timestamp=-1, offset=-1, leader_epoch=-1,
                                          old_style_offsets=[]))
                    continue
                offset, ts = lookup(part, p.timestamp)
                if p.timestamp == EARLIEST:
                    offset = part.log_start  # a compacted topic's log start stays
                if p.timestamp == LATEST and committed and queue.txns is not None:
                    offset = queue.txns[index].lso(offset)  # read_committed: the LSO
                parts.append(part_cls(partition_index=index, error_code=ErrorCode.NONE,
                                      timestamp=ts, offset=offset, leader_epoch=-1,
                                      old_style_offsets=[]))
            answers.append(topic_cls(name=topic.name, partitions=parts))
        return cls(version=version, throttle_time_ms=0, topics=answers)
