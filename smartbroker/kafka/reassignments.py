"""AlterPartitionReassignments (45) and ListPartitionReassignments (46): how Kafka's
``kafka-reassign-partitions`` and admin clients (kafka-python's
``alter_partition_reassignments`` / ``list_partition_reassignments``) change the
replicas of a topic's partitions.

A topic here is a stream; its partitions' replica sets are those of a replicated stream
(docs/replication.md). In cluster mode a ``Reassigner`` (``cluster/kafka_reassign.py``)
does the work on etcd's records, as Kafka's controller does: the new replicas are added,
catch up and join the ISR, the leadership leaves a replica being removed, and then the
replica set becomes the target. The answer comes once the reassignment is under way,
not done (Kafka's); ListPartitionReassignments shows it until it is done.

On a single node this node is the only broker (id 0): a target of ``[0]`` changes
nothing, any other broker id is not registered.

Permissions, as Kafka's: ALTER on the cluster (an ``administrator``, ``authz``) for the
change, DESCRIBE on the cluster (access to the Kafka vhost) for the list; otherwise
CLUSTER_AUTHORIZATION_FAILED. Errors per partition are Kafka's:
UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT (an empty list, a broker twice,
a broker that is not registered, another partition than 0 of a topic without replicas
yet), INVALID_REPLICATION_FACTOR
(v1's ``allow_replication_factor_change`` false and another size),
NO_REASSIGNMENT_IN_PROGRESS (a cancel with none under way).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from smartbroker.kafka import codec, slices
from smartbroker.kafka.authz import ALTER, DESCRIBE, cluster_operations
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode

ALTER_REASSIGNMENTS, LIST_REASSIGNMENTS = 45, 46
VERSIONS = {ALTER_REASSIGNMENTS: (0, 1), LIST_REASSIGNMENTS: (0, 0)}
NO_REASSIGNMENT_IN_PROGRESS = 85  # Kafka's Errors.NO_REASSIGNMENT_IN_PROGRESS
log = logging.getLogger("smartbroker.kafka")
_REFUSED = "Cluster authorization failed."  # Kafka's ClusterAuthorizationException text


class ReassignError(Exception):
    """A partition's reassignment refused with a Kafka error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Ongoing:
    """A reassignment under way, as ListPartitionReassignments reports it."""

    topic: str
    partition: int
    replicas: tuple[int, ...]  # the current replica set (target and those leaving)
    adding: tuple[int, ...]
    removing: tuple[int, ...]


class Reassigner(Protocol):
    """Who carries reassignments out (``cluster/kafka_reassign.py`` in cluster mode)."""

    async def alter(self, topic: str, partition: int, replicas: list[int] | None,
                    allow_factor_change: bool) -> None:
        """Start moving ``partition`` to ``replicas`` (broker ids), or (None) cancel the
        move under way; ReassignError when it cannot be."""

    async def ongoing(self) -> list[Ongoing]:
        """Every reassignment under way."""


def check_target(replicas: list[int], brokers: set[int]) -> None:
    """Kafka's checks of a manual assignment (ReplicationControlManager)."""
    if not replicas:
        raise ReassignError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                            "The manual partition assignment includes an empty replica list.")
    for broker, count in Counter(replicas).items():
        if count > 1:
            raise ReassignError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                "The manual partition assignment includes the broker "
                                f"{broker} more than once.")
    for broker in replicas:
        if broker not in brokers:
            raise ReassignError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                f"The manual partition assignment includes broker {broker}, "
                                "but no such broker is registered.")


class SingleNode:
    """A single node: broker 0 holds every partition, so nothing can move."""

    def __init__(self, partitions: Any) -> None:
        self.partitions = partitions  # topic name -> partition count, or None

    async def alter(self, topic: str, partition: int, replicas: list[int] | None,
                    allow_factor_change: bool) -> None:
        count = self.partitions(topic)
        if count is None or not 0 <= partition < count:
            raise ReassignError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                "This server does not host this topic-partition.")
        if replicas is None:
            raise ReassignError(NO_REASSIGNMENT_IN_PROGRESS,
                                f"Unable to find an ongoing reassignment for {topic}-{partition}.")
        check_target(replicas, {0})
        if len(replicas) != 1 and not allow_factor_change:
            raise ReassignError(ErrorCode.INVALID_REPLICATION_FACTOR,
                                "The replication factor is changed from 1 to "
                                f"{len(replicas)} but AllowReplicationFactorChange is false")

    async def ongoing(self) -> list[Ongoing]:
        return []


class Reassignments:
    """The two handlers; ``reassigner`` is replaced in cluster mode."""

    def __init__(self, broker: Any, vhost: str, reassigner: Reassigner) -> None:
        self.broker = broker
        self.vhost = vhost
        self.reassigner = reassigner

    def _may(self, operation: int) -> bool:
        return operation in cluster_operations(self.broker, self.vhost)

    def alter(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(ALTER_REASSIGNMENTS)
        if not self._may(ALTER):  # Kafka's error response: every partition refused too
            return self._alter_answer(request, cls, {}, ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                                      _REFUSED)
        return slices.detached(self._alter(request, cls))

    async def _alter(self, request: Request, cls: Any) -> Any:
        body = request.body
        allow = bool(getattr(body, "allow_replication_factor_change", True)) \
            if request.api_version >= 1 else True
        results: dict[tuple[str, int], tuple[int, str | None]] = {}
        for topic in body.topics:
            # partition 0 first: a topic without replicas gains them there first (its
            # replicas hold the group offsets: cluster/stream_members.py)
            for part in sorted(topic.partitions, key=lambda one: one.partition_index):
                replicas = None if part.replicas is None else list(part.replicas)
                try:
                    await self.reassigner.alter(topic.name, part.partition_index, replicas,
                                                allow)
                    results[(topic.name, part.partition_index)] = (ErrorCode.NONE, None)
                except ReassignError as exc:
                    results[(topic.name, part.partition_index)] = (exc.code, str(exc))
                except Exception as exc:  # etcd away: one line, never a traceback
                    log.warning("reassigning %s-%d failed: %s", topic.name,
                                part.partition_index, exc)
                    results[(topic.name, part.partition_index)] = (
                        ErrorCode.UNKNOWN_SERVER_ERROR, str(exc))
        return self._alter_answer(request, cls, results, ErrorCode.NONE, None)

    @staticmethod
    def _alter_answer(request: Request, cls: Any, results: dict[tuple[str, int], Any],
                      code: int, message: str | None) -> Any:
        topic_cls = cls.ReassignableTopicResponse
        part_cls = topic_cls.ReassignablePartitionResponse
        topics = []
        for topic in request.body.topics:
            parts = []
            for part in topic.partitions:
                got, text = results.get((topic.name, part.partition_index), (code, message))
                parts.append(part_cls(partition_index=part.partition_index, error_code=got,
                                      error_message=text))
            topics.append(topic_cls(name=topic.name, partitions=parts))
        return cls(version=request.api_version, throttle_time_ms=0,
                   allow_replication_factor_change=True, error_code=code,
                   error_message=message, responses=topics)

    def list(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(LIST_REASSIGNMENTS)
        if not self._may(DESCRIBE):
            return cls(version=request.api_version, throttle_time_ms=0,
                       error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                       error_message=_REFUSED, topics=[])
        return slices.detached(self._list(request, cls))

    async def _list(self, request: Request, cls: Any) -> Any:
        wanted = request.body.topics
        asked = None if wanted is None else {
            (t.name, i) for t in wanted for i in t.partition_indexes}
        topic_cls = cls.OngoingTopicReassignment
        part_cls = topic_cls.OngoingPartitionReassignment
        by_topic: dict[str, list[Any]] = {}
        try:
            ongoing = await self.reassigner.ongoing()
        except Exception as exc:  # etcd away: one line, never a traceback
            log.warning("listing the partition reassignments failed: %s", exc)
            return cls(version=request.api_version, throttle_time_ms=0,
                       error_code=ErrorCode.UNKNOWN_SERVER_ERROR, error_message=str(exc),
                       topics=[])
        for one in sorted(ongoing, key=lambda o: (o.topic, o.partition)):
            if asked is None or (one.topic, one.partition) in asked:
                by_topic.setdefault(one.topic, []).append(part_cls(
                    partition_index=one.partition, replicas=list(one.replicas),
                    adding_replicas=list(one.adding), removing_replicas=list(one.removing)))
        return cls(version=request.api_version, throttle_time_ms=0, error_code=ErrorCode.NONE,
                   error_message=None,
                   topics=[topic_cls(name=n, partitions=p) for n, p in by_topic.items()])
