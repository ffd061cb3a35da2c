"""CreatePartitions, DeleteRecords, AlterConfigs, IncrementalAlterConfigs and
DescribeCluster against an in-memory broker, encoded and decoded at every version as a
client reads them; topic ids in Metadata and DeleteTopics; refusals with Kafka's codes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.broker.permissions import Permission
from smartbroker.errors import AMQPError
from smartbroker.kafka import codec
from smartbroker.kafka.admin import BROKER, TOPIC
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers, Node
from tests.unit.kafka.kafka_fixtures import broker_with
from tests.unit.kafka.test_admin_handlers import roundtrip
from tests.unit.queues.test_stream import fill

PARTS, RECORDS, ALTER, INCREMENTAL, CLUSTER = (codec.REQUESTS[k] for k in (37, 21, 33, 44, 60))
DESCRIBE, DELETE_TOPICS = codec.REQUESTS[32], codec.REQUESTS[20]
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": {"x-queue-type": "stream", "x-partitions": 2,
                                       "x-max-age": "7D"},
                            "classic": None})


@pytest.fixture
def h(broker: Broker) -> KafkaHandlers:
    return KafkaHandlers(broker, Node("kafka.example", 9092, Node.cluster_id_for("x"), "/"))


def orders(broker: Broker) -> Any:
    return broker.vhosts["/"].queues["orders"]


def grow(h: KafkaHandlers, *topics: tuple[str, int], version: int = 3,
         validate_only: bool = False, assignments: Any = None) -> list[tuple[str, int]]:
    t = PARTS.CreatePartitionsTopic
    body = PARTS(version=version, timeout_ms=1000, validate_only=validate_only, topics=[
        t(name=n, count=c, assignments=assignments) for n, c in topics])
    return [(r.name, r.error_code) for r in roundtrip(h, 37, version, body).results]


def delete_records(h: KafkaHandlers, topic: str, parts: list[tuple[int, int]],
                   version: int = 2) -> list[tuple[int, int, int]]:
    t = RECORDS.DeleteRecordsTopic
    body = RECORDS(version=version, timeout_ms=1000, topics=[t(name=topic, partitions=[
        t.DeleteRecordsPartition(partition_index=p, offset=o) for p, o in parts])])
    [topic_result] = roundtrip(h, 21, version, body).topics
    return [(p.partition_index, p.low_watermark, p.error_code) for p in topic_result.partitions]


def alter(h: KafkaHandlers, name: str, cfg: dict[str, str | None], *, kind: int = TOPIC,
          version: int = 2, validate_only: bool = False) -> tuple[int, str | None]:
    r = ALTER.AlterConfigsResource
    body = ALTER(version=version, validate_only=validate_only, resources=[r(
        resource_type=kind, resource_name=name,
        configs=[r.AlterableConfig(name=k, value=v) for k, v in cfg.items()])])
    [resp] = roundtrip(h, 33, version, body).responses
    return resp.error_code, resp.error_message


def incremental(h: KafkaHandlers, name: str, ops: list[tuple[str, int, str | None]], *,
                kind: int = TOPIC, version: int = 1) -> tuple[int, str | None]:
    r = INCREMENTAL.AlterConfigsResource
    body = INCREMENTAL(version=version, validate_only=False, resources=[r(
        resource_type=kind, resource_name=name,
        configs=[r.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in ops])])
    [resp] = roundtrip(h, 44, version, body).responses
    return resp.error_code, resp.error_message


def described(h: KafkaHandlers, name: str) -> dict[str, tuple[str, int]]:
    """name -> (value, source) of the topic's configs (DescribeConfigs v4)."""
    r = DESCRIBE.DescribeConfigsResource
    body = DESCRIBE(version=4, include_synonyms=False, include_documentation=False,
                    resources=[r(resource_type=TOPIC, resource_name=name,
                                 configuration_keys=None)])
    [res] = roundtrip(h, 32, 4, body).results
    assert res.error_code == 0, res.error_message
    return {c.name: (c.value, c.config_source) for c in res.configs}


# -- CreatePartitions ----------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_create_partitions_grows_a_topic(h: KafkaHandlers, broker: Broker, version: int) -> None:
    assert grow(h, ("orders", 5), version=version) == [("orders", 0)]
    assert len(orders(broker).logs) == 5
    assert h.topic("orders").partitions == 5  # what Metadata says
    # the declaration is unchanged: an AMQP redeclare with it is still equivalent
    broker.vhosts["/"].declare_queue("orders", durable=True, arguments={
        "x-queue-type": "stream", "x-partitions": 2, "x-max-age": "7D"})


def test_create_partitions_refusals(h: KafkaHandlers, broker: Broker) -> None:
    assert grow(h, ("orders", 1), ("nope", 3), ("classic", 3)) == [
        ("orders", ErrorCode.INVALID_PARTITIONS), ("nope", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("classic", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
    assert grow(h, ("orders", 2)) == [("orders", ErrorCode.INVALID_PARTITIONS)]  # same count
    assert grow(h, ("orders", 3), ("orders", 4)) == [("orders", ErrorCode.INVALID_REQUEST)] * 2
    assert grow(h, ("orders", 5000)) == [("orders", ErrorCode.INVALID_PARTITIONS)]
    assert grow(h, ("orders", 4), validate_only=True) == [("orders", 0)]
    a = PARTS.CreatePartitionsTopic.CreatePartitionsAssignment
    assert grow(h, ("orders", 4), assignments=[a(broker_ids=[0])]) == [
        ("orders", ErrorCode.INVALID_REPLICA_ASSIGNMENT)]  # two new partitions, one list
    assert grow(h, ("orders", 3), assignments=[a(broker_ids=[1])]) == [
        ("orders", ErrorCode.INVALID_REPLICA_ASSIGNMENT)]
    assert len(orders(broker).logs) == 2  # none of it changed anything
    assert grow(h, ("orders", 3), assignments=[a(broker_ids=[0])]) == [("orders", 0)]
    assert len(orders(broker).logs) == 3


def test_create_partitions_messages_are_kafkas(h: KafkaHandlers) -> None:
    t = PARTS.CreatePartitionsTopic
    body = PARTS(version=3, timeout_ms=1, validate_only=False,
                 topics=[t(name="orders", count=1, assignments=None)])
    [r] = roundtrip(h, 37, 3, body).results
    assert r.error_message == ("Topic currently has 2 partitions, which is higher than the "
                               "requested 1.")


# -- DeleteRecords -------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, 2])
def test_delete_records_moves_the_low_watermark(h: KafkaHandlers, broker: Broker,
                                                version: int) -> None:
    fill(orders(broker), 20)
    high = [lg.next_offset for lg in orders(broker).logs]
    p = 0 if high[0] >= 3 else 1
    assert delete_records(h, "orders", [(p, 3)], version) == [(p, 3, 0)]
    assert orders(broker).partitions[p].bounds() == (3, high[p])
    assert delete_records(h, "orders", [(p, 1)], version) == [(p, 3, 0)]  # never backwards
    assert delete_records(h, "orders", [(p, -1)], version) == [(p, high[p], 0)]


def test_fetch_below_the_new_log_start_is_out_of_range(h: KafkaHandlers, broker: Broker) -> None:
    from tests.unit.kafka.test_fetch import fetch, only, request

    fill(orders(broker), 20)
    p = max(range(2), key=lambda i: orders(broker).logs[i].next_offset)
    delete_records(h, "orders", [(p, 2)])
    tid = h.topic_id("orders")
    part = only(fetch(broker, request(11, topic="orders", partition=p, offset=1, topic_id=tid)))
    assert part.error_code == ErrorCode.OFFSET_OUT_OF_RANGE
    part = only(fetch(broker, request(11, topic="orders", partition=p, offset=2, topic_id=tid)))
    assert part.error_code == 0 and part.log_start_offset == 2


def test_delete_records_refusals(h: KafkaHandlers, broker: Broker) -> None:
    fill(orders(broker), 4)
    high = orders(broker).logs[0].next_offset
    assert delete_records(h, "orders", [(0, high + 1), (0, -2), (7, 0)]) == [
        (0, -1, ErrorCode.OFFSET_OUT_OF_RANGE), (0, -1, ErrorCode.OFFSET_OUT_OF_RANGE),
        (7, -1, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
    assert delete_records(h, "nope", [(0, 0)]) == [(0, -1, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
    assert delete_records(h, "classic", [(0, 0)])[0][2] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert orders(broker).partitions[0].log_start == 0
    assert alter(h, "orders", {"cleanup.policy": "compact"}) == (0, None)
    assert delete_records(h, "orders", [(0, 1)]) == [(0, -1, ErrorCode.POLICY_VIOLATION)]
    assert alter(h, "orders", {"cleanup.policy": "compact,delete"}) == (0, None)
    assert delete_records(h, "orders", [(0, -1)]) == [(0, high, 0)]


# -- AlterConfigs / IncrementalAlterConfigs ------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, 2])
def test_alter_configs_replaces_the_whole_set(h: KafkaHandlers, broker: Broker,
                                              version: int) -> None:
    assert alter(h, "orders", {"retention.bytes": "5000", "cleanup.policy": "compact"},
                 version=version) == (0, None)
    got = described(h, "orders")
    assert got["retention.bytes"] == ("5000", 1)  # DYNAMIC_TOPIC_CONFIG
    assert got["cleanup.policy"] == ("compact", 1)
    assert got["retention.ms"] == ("-1", 5)  # the declared 7D went back to the default
    q = orders(broker)
    assert (q.stream.max_length_bytes, q.stream.compact, q.stream.max_age) == (5000, True, None)
    assert q.arguments["x-max-age"] == "7D"  # the declaration, for AMQP redeclares


def test_incremental_alter_configs_operations(h: KafkaHandlers, broker: Broker) -> None:
    assert incremental(h, "orders", [("retention.bytes", SET, "9000"),
                                     ("cleanup.policy", APPEND, "compact")]) == (0, None)
    got = described(h, "orders")
    assert got["retention.ms"][0] == "604800000"  # left as declared
    assert got["retention.bytes"][0] == "9000"
    assert got["cleanup.policy"][0] == "delete,compact"
    assert incremental(h, "orders", [("cleanup.policy", SUBTRACT, "delete"),
                                     ("retention.ms", DELETE, None)]) == (0, None)
    got = described(h, "orders")
    assert got["cleanup.policy"][0] == "compact"
    assert got["retention.ms"] == ("-1", 5)  # DEFAULT_CONFIG
    q = orders(broker)
    assert (q.stream.compact, q.stream.delete, q.stream.max_age) == (True, False, None)


def test_alter_refusals_change_nothing(h: KafkaHandlers, broker: Broker) -> None:
    before = described(h, "orders")
    code, message = alter(h, "orders", {"no.such.config": "1"})
    assert (code, message) == (ErrorCode.INVALID_CONFIG, "Unknown topic config name: no.such.config")
    assert alter(h, "orders", {"min.insync.replicas": "0"})[0] == ErrorCode.INVALID_CONFIG
    assert alter(h, "orders", {"retention.ms": "soon"})[0] == ErrorCode.INVALID_CONFIG
    assert alter(h, "orders", {"segment.bytes": "10"})[0] == ErrorCode.INVALID_CONFIG
    assert alter(h, "nope", {"retention.ms": "1000"})[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert alter(h, "classic", {})[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert alter(h, "orders", {"retention.ms": "1000"}, validate_only=True) == (0, None)
    assert incremental(h, "orders", [("retention.ms", APPEND, "1000")])[0] == \
        ErrorCode.INVALID_CONFIG  # append is for list configs
    assert incremental(h, "orders", [("retention.ms", SET, None)])[0] == ErrorCode.INVALID_REQUEST
    assert incremental(h, "orders", [("retention.ms", SET, "1000"),
                                     ("retention.ms", DELETE, None)])[0] == ErrorCode.INVALID_REQUEST
    assert incremental(h, "orders", [("cleanup.policy", APPEND, "none")])[0] == \
        ErrorCode.INVALID_CONFIG  # not a policy
    assert described(h, "orders") == before


def test_a_stream_kafka_cannot_name_is_no_topic(h: KafkaHandlers, broker: Broker) -> None:
    broker.vhosts["/"].declare_queue("a b", durable=True, arguments={"x-queue-type": "stream"})
    assert grow(h, ("a b", 3)) == [("a b", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
    assert alter(h, "a b", {"retention.ms": "1000"})[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert delete_records(h, "a b", [(0, 0)])[0][2] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert len(broker.vhosts["/"].queues["a b"].logs) == 1


def test_broker_configs_are_read_only(h: KafkaHandlers) -> None:
    code, message = alter(h, "0", {"num.partitions": "3"}, kind=BROKER)
    assert code == ErrorCode.INVALID_REQUEST and "serve" in message
    assert incremental(h, "", [("num.partitions", SET, "3")], kind=BROKER)[0] == \
        ErrorCode.INVALID_REQUEST
    assert alter(h, "7", {}, kind=BROKER)[0] == ErrorCode.INVALID_REQUEST
    assert alter(h, "0", {}, kind=BROKER) == (0, None)  # resets no dynamic config: fine


# -- authorization -------------------------------------------------------------------------

def test_each_admin_api_needs_configure_on_the_topic(h: KafkaHandlers, broker: Broker) -> None:
    broker.permissions.set(Permission("guest", "/", "^other$", ".*", ".*"))
    fill(orders(broker), 3)
    denied = ErrorCode.TOPIC_AUTHORIZATION_FAILED
    assert grow(h, ("orders", 3)) == [("orders", denied)]
    assert delete_records(h, "orders", [(0, 0)]) == [(0, -1, denied)]
    assert alter(h, "orders", {"retention.ms": "1000"})[0] == denied
    assert incremental(h, "orders", [("retention.ms", SET, "1000")])[0] == denied
    assert len(orders(broker).logs) == 2 and orders(broker).meta.overrides == {}
    r = DESCRIBE.DescribeConfigsResource
    body = DESCRIBE(version=4, include_synonyms=False, include_documentation=False,
                    resources=[r(resource_type=TOPIC, resource_name="orders",
                                 configuration_keys=None)])
    [res] = roundtrip(h, 32, 4, body).results
    assert res.error_code == denied


def test_broker_configs_are_the_values_used(h: KafkaHandlers, broker: Broker) -> None:
    r = DESCRIBE.DescribeConfigsResource
    body = DESCRIBE(version=4, include_synonyms=False, include_documentation=False,
                    resources=[r(resource_type=BROKER, resource_name="0",
                                 configuration_keys=None)])
    [res] = roundtrip(h, 32, 4, body).results
    got = {c.name: (c.value, c.read_only) for c in res.configs}
    assert got["message.max.bytes"] == (str(broker.config.max_message_size), True)
    assert got["broker.id"] == ("0", True)
    assert got["log.retention.ms"] == ("-1", True)  # a new stream keeps everything


# -- DescribeCluster -----------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, 2])
def test_describe_cluster_is_this_node(h: KafkaHandlers, version: int) -> None:
    body = CLUSTER(version=version, include_cluster_authorized_operations=False,
                   endpoint_type=1, include_fenced_brokers=False)
    r = roundtrip(h, 60, version, body)
    assert (r.error_code, r.cluster_id, r.controller_id) == (0, Node.cluster_id_for("x"), 0)
    assert [(b.broker_id, b.host, b.port) for b in r.brokers] == [(0, "kafka.example", 9092)]
    assert r.authorized_operations is None  # -2^31 on the wire: not asked for


def test_describe_cluster_operations_and_controller_endpoints(h: KafkaHandlers) -> None:
    body = CLUSTER(version=1, include_cluster_authorized_operations=True, endpoint_type=1)
    # Kafka's whole cluster set for a user allowed everything: CREATE, ALTER, DESCRIBE,
    # CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE
    assert roundtrip(h, 60, 1, body).authorized_operations == {5, 7, 8, 9, 10, 11, 12}
    body = CLUSTER(version=1, include_cluster_authorized_operations=False, endpoint_type=2)
    assert roundtrip(h, 60, 1, body).error_code == 119  # UNSUPPORTED_ENDPOINT_TYPE


# -- topic ids -----------------------------------------------------------------------------

def test_a_topic_deleted_and_created_again_gets_a_new_id(h: KafkaHandlers,
                                                         broker: Broker) -> None:
    first = h.topic_id("orders")
    assert first == orders(broker).meta.topic_id != uuid.UUID(int=0)
    body = DELETE_TOPICS(version=6, timeout_ms=1000, topics=[
        DELETE_TOPICS.DeleteTopicState(name=None, topic_id=first)])
    [r] = roundtrip(h, 20, 6, body).responses
    assert (r.name, r.topic_id, r.error_code) == ("orders", first, 0)
    broker.vhosts["/"].declare_queue("orders", durable=True,
                                     arguments={"x-queue-type": "stream"})
    assert h.topic_id("orders") not in (first, uuid.UUID(int=0))
    [r] = roundtrip(h, 20, 6, body).responses  # the old id names nothing now
    assert (r.error_code, r.topic_id) == (ErrorCode.UNKNOWN_TOPIC_ID, first)
    assert h.topic_id("classic") == uuid.UUID(int=0)


def test_a_redeclare_with_the_grown_count_is_not_equivalent(h: KafkaHandlers,
                                                            broker: Broker) -> None:
    grow(h, ("orders", 4))
    with pytest.raises(AMQPError, match="inequivalent arg 'x-partitions'"):
        broker.vhosts["/"].declare_queue("orders", durable=True, arguments={
            "x-queue-type": "stream", "x-partitions": 4, "x-max-age": "7D"})
