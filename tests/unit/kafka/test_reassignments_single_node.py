"""AlterPartitionReassignments and ListPartitionReassignments on a single node (broker 0
holds everything): Kafka's error codes per partition, and the cluster permissions
(ALTER for a change, DESCRIBE for the list) as Kafka checks them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.broker.permissions import Permission
from smartbroker.kafka import codec
from smartbroker.kafka.codec import Header, Request
from smartbroker.kafka.handlers import KafkaHandlers, Node, Session
from smartbroker.kafka.reassignments import ALTER_REASSIGNMENTS, LIST_REASSIGNMENTS
from tests.unit.kafka.kafka_fixtures import ONE_PARTITION, THREE_PARTITIONS, broker_with

NONE, UNKNOWN, CLUSTER_REFUSED, FACTOR, ASSIGNMENT, NO_REASSIGNMENT = 0, 3, 31, 38, 39, 85


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS, "single": ONE_PARTITION})


def call(broker: Broker, api_key: int, version: int, user: str | None = None,
         **fields: Any) -> Any:
    handlers = KafkaHandlers(broker, Node("localhost", 9092, "c", "/"))
    request = Request(Header(api_key, version, 1, "t"),
                      codec.REQUESTS[api_key](version=version, **fields))
    session = Session("127.0.0.1:1", "127.0.0.1", user=user)

    async def run() -> Any:
        answer = handlers.handle(request, session)  # a future, or a refusal at once
        return await answer if isinstance(answer, asyncio.Future) else answer
    answer = asyncio.run(run())
    assert codec.encode_response(api_key, version, 1, answer)  # it goes on the wire
    return answer


def alter(broker: Broker, wanted: dict[tuple[str, int], list[int] | None], version: int = 1,
          user: str | None = None, allow: bool = True) -> Any:
    cls = codec.REQUESTS[ALTER_REASSIGNMENTS]
    topic_cls = cls.ReassignableTopic
    by_topic: dict[str, list[Any]] = {}
    for (topic, p), replicas in wanted.items():
        by_topic.setdefault(topic, []).append(
            topic_cls.ReassignablePartition(partition_index=p, replicas=replicas))
    extra = {"allow_replication_factor_change": allow} if version >= 1 else {}
    return call(broker, ALTER_REASSIGNMENTS, version, user, timeout_ms=1000,
                topics=[topic_cls(name=t, partitions=ps) for t, ps in by_topic.items()], **extra)


def codes(resp: Any) -> dict[tuple[str, int], int]:
    return {(t.name, p.partition_index): p.error_code for t in resp.responses
            for p in t.partitions}


def test_only_broker_0_can_hold_a_partition(broker: Broker) -> None:
    resp = alter(broker, {("orders", 0): [0], ("orders", 1): [0, 1], ("orders", 2): [],
                          ("orders", 5): [0], ("missing", 0): [0], ("single", 0): [0, 0],
                          ("single", 1): None})
    assert resp.error_code == NONE
    assert codes(resp) == {("orders", 0): NONE, ("orders", 1): ASSIGNMENT,
                           ("orders", 2): ASSIGNMENT, ("orders", 5): UNKNOWN,
                           ("missing", 0): UNKNOWN, ("single", 0): ASSIGNMENT,
                           ("single", 1): UNKNOWN}
    messages = {(t.name, p.partition_index): p.error_message for t in resp.responses
                for p in t.partitions}
    assert messages[("orders", 1)] == ("The manual partition assignment includes broker 1, "
                                       "but no such broker is registered.")
    assert "more than once" in messages[("single", 0)]


def test_cancel_without_a_reassignment_and_factor_change(broker: Broker) -> None:
    assert codes(alter(broker, {("orders", 0): None})) == {("orders", 0): NO_REASSIGNMENT}
    # v0 has no allow_replication_factor_change: a change of factor is allowed (then
    # refused for its unknown broker)
    assert codes(alter(broker, {("orders", 0): [0, 7]}, version=0)) == {
        ("orders", 0): ASSIGNMENT}
    assert codes(alter(broker, {("orders", 0): [0]}, allow=False)) == {("orders", 0): NONE}


def test_list_is_empty(broker: Broker) -> None:
    resp = call(broker, LIST_REASSIGNMENTS, 0, timeout_ms=1000, topics=None)
    assert resp.error_code == NONE and resp.topics == []


def test_cluster_permissions(broker: Broker) -> None:
    broker.users.add("alice", "pw", [])  # not an administrator: no ALTER on the cluster
    broker.permissions.set(Permission("alice", "/"))
    broker.users.add("nobody", "pw", [])  # no access to the Kafka vhost: no DESCRIBE
    resp = alter(broker, {("orders", 0): [0]}, user="alice")
    assert resp.error_code == CLUSTER_REFUSED and codes(resp) == {("orders", 0): CLUSTER_REFUSED}
    assert resp.error_message == "Cluster authorization failed."
    assert call(broker, LIST_REASSIGNMENTS, 0, "alice", timeout_ms=1, topics=None
                ).error_code == NONE
    assert call(broker, LIST_REASSIGNMENTS, 0, "nobody", timeout_ms=1, topics=None
                ).error_code == CLUSTER_REFUSED
