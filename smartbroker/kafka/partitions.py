"""CreatePartitions: a topic's stream grows to more partitions, never fewer.

As in Kafka, a count not above the current one is INVALID_PARTITIONS (37), manual
assignments must name one replica list per new partition (this node alone: broker 0, or
its own id in cluster mode), and
from then on keyed records hash over the new count (Kafka's producers re-partition by the
count Metadata gives them; AMQP publishes by the stream's partition count). The count is stored
with the stream (``StreamMeta``) and survives a restart; the queue's declared
``x-partitions`` does not change, so an AMQP redeclare with the value it was declared with
is still equivalent (one with the new count is not: arguments are immutable, as a RabbitMQ
policy does not change them either). Growing needs ``configure`` on the topic (Kafka's
ALTER), TOPIC_AUTHORIZATION_FAILED otherwise.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.admin import MAX_PARTITIONS, TopicAdmin, TopicError
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues.stream_admin import add_partitions

log = logging.getLogger("smartbroker.kafka")
CREATE_PARTITIONS, PARTITIONS_VERSIONS = 37, (0, 3)


class PartitionAdmin:
    """The CreatePartitions handler, on the topic lookups of ``TopicAdmin``."""

    def __init__(self, admin: TopicAdmin) -> None:
        self.admin = admin

    def create_partitions(self, request: Request, session: Any) -> Any:
        body = request.body
        cls = codec.response_class(CREATE_PARTITIONS)
        names = Counter(t.name for t in body.topics)  # not list.count per topic: O(n^2)
        results = []
        for topic in body.topics:
            code, message = ErrorCode.NONE, None
            try:
                if names[topic.name] > 1:
                    raise TopicError(ErrorCode.INVALID_REQUEST, "Duplicate topic in request.")
                self._grow(topic, bool(body.validate_only))
            except TopicError as exc:
                code, message = exc.code, str(exc)
            results.append(cls.CreatePartitionsTopicResult(name=topic.name, error_code=code,
                                                           error_message=message))
        return cls(version=request.api_version, throttle_time_ms=0, results=results)

    def _grow(self, topic: Any, validate_only: bool) -> None:
        name, count = topic.name, topic.count
        self.admin.require("configure", name)
        stream = self.admin.stream_of(name)
        current = len(stream.partitions)
        spread = self.admin.streams.partition_elsewhere  # cluster: partitions on other nodes
        if spread is not None and any(spread(name, i) for i in range(current)):
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic {name!r} has its partitions spread over the cluster's "
                             "nodes: adding partitions to it is not supported yet.")
        if getattr(stream, "replication", None) is not None:  # copied on several nodes
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic {name!r} is replicated over the cluster's nodes: adding "
                             "partitions to it is not supported yet.")
        if count < current:
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic currently has {current} partitions, which is higher than "
                             f"the requested {count}.")
        if count == current:
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic already has {current} partitions.")
        if count > MAX_PARTITIONS:
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"Number of partitions {count} is over smartbroker's limit of "
                             f"{MAX_PARTITIONS}")
        assignments = topic.assignments
        if assignments is not None:
            if len(assignments) != count - current:
                raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                 f"Increasing the number of partitions by {count - current} "
                                 f"but {len(assignments)} assignments provided.")
            for a in assignments:
                if list(a.broker_ids) != [self.admin.node_id]:
                    raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                     f"this node (broker {self.admin.node_id}) is the only "
                                     "replica, got "
                                     f"{list(a.broker_ids)}")
        if validate_only:
            return
        try:
            add_partitions(stream, count)
        except OSError as exc:
            raise TopicError(ErrorCode.KAFKA_STORAGE_ERROR, f"cannot grow topic: {exc}") from None
        log.info("Kafka topic %r grown from %d to %d partitions", name, current, count)
