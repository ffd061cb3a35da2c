"""DeleteRecords: move partitions' log start offsets (Kafka's low watermark) forward.

Offsets below the new start are gone for Kafka and AMQP readers alike: ListOffsets
``earliest``, Fetch (OFFSET_OUT_OF_RANGE below it), AMQP ``x-stream-offset=first`` and group
positions all begin there, and whole segments below it are deleted. The start is stored
with the stream (``StreamMeta``, fsynced before the answer) and survives a restart.

As in Kafka: offset -1 means the high watermark; an offset above it (or below -1) is
OFFSET_OUT_OF_RANGE; a topic whose ``cleanup.policy`` lacks ``delete`` (compact only) is
POLICY_VIOLATION; an offset below the current start changes nothing and answers the
current start; an unknown topic or partition is UNKNOWN_TOPIC_OR_PARTITION; a failed
partition's low watermark is -1. Deleting records needs ``configure`` on the topic
(Kafka's DELETE), TOPIC_AUTHORIZATION_FAILED otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.admin import TopicAdmin, TopicError
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues.stream_admin import delete_records

log = logging.getLogger("smartbroker.kafka")
DELETE_RECORDS, RECORDS_VERSIONS = 21, (0, 2)
HIGH_WATERMARK = -1  # "delete everything up to the high watermark"


class RecordsAdmin:
    """The DeleteRecords handler, on the topic lookups of ``TopicAdmin``."""

    def __init__(self, admin: TopicAdmin) -> None:
        self.admin = admin

    def delete_records(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(DELETE_RECORDS)
        result = cls.DeleteRecordsTopicResult
        part = result.DeleteRecordsPartitionResult
        topics = []
        for topic in request.body.topics:
            stream, failure = None, ErrorCode.NONE
            try:
                self.admin.require("configure", topic.name)
                stream = self.admin.stream_of(topic.name)
            except TopicError as exc:
                failure = exc.code
            partitions = []
            spread = self.admin.streams.partition_elsewhere  # cluster: another node's
            for p in topic.partitions:
                low, code = -1, failure
                if stream is not None and spread is not None \
                        and spread(topic.name, p.partition_index):
                    code = ErrorCode.NOT_LEADER_OR_FOLLOWER  # its records are on its node
                elif stream is not None:
                    low, code = self._delete(stream, p.partition_index, p.offset)
                partitions.append(part(partition_index=p.partition_index, low_watermark=low,
                                       error_code=code))
            topics.append(result(name=topic.name, partitions=partitions))
        return cls(version=request.api_version, throttle_time_ms=0, topics=topics)

    @staticmethod
    def _delete(stream: Any, partition: int, offset: int) -> tuple[int, ErrorCode]:
        """(low watermark, error code) for one partition."""
        part = stream.partitions.get(partition)
        if part is None:
            return -1, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        if not stream.stream.delete:  # Kafka: only a topic whose cleanup.policy has delete
            return -1, ErrorCode.POLICY_VIOLATION
        high = part.next_offset
        if offset == HIGH_WATERMARK:
            offset = high
        if offset < 0 or offset > high:
            return -1, ErrorCode.OFFSET_OUT_OF_RANGE
        try:
            low = delete_records(stream, partition, offset)
        except OSError as exc:
            log.error("DeleteRecords on %r partition %d failed: %s", stream.name, partition, exc)
            return -1, ErrorCode.KAFKA_STORAGE_ERROR
        log.info("Kafka DeleteRecords: %r partition %d starts at offset %d",
                 stream.name, partition, low)
        return low, ErrorCode.NONE
