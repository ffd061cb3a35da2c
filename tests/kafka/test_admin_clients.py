"""CreatePartitions, DeleteRecords, AlterConfigs / IncrementalAlterConfigs and
DescribeCluster through real admin clients (kafka-python's KafkaAdminClient, confluent-kafka's
AdminClient), with what they change seen by Kafka consumers and AMQP readers, and kept
across a restart together with the topic id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from smartbroker.queues.partitioner import kafka_partition


def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def kp_admin(kafka_broker: BrokerProcess) -> Iterator[Any]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             request_timeout_ms=10000)
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture
def ck_admin(kafka_broker: BrokerProcess) -> Any:
    pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_broker.kafka_bootstrap})


def produce(bootstrap: str, topic: str, partition: int, count: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=-1, enable_idempotence=False)
    try:
        for i in range(count):
            producer.send(topic, f"r{i}".encode(), partition=partition)
        producer.flush(timeout=10)
    finally:
        producer.close()


def first_amqp_offset(url: str, queue: str) -> int:
    """The offset an AMQP reader from ``first`` is given first."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    got: list[int] = []
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(queue, lambda _ch, _m, props, _b: got.append(
            int(props.headers["x-stream-offset"])), arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
    finally:
        conn.close()
    assert got, "nothing delivered"
    return got[0]


def ck_error_code(future: Any) -> int:
    import confluent_kafka as ck

    with pytest.raises(ck.KafkaException) as info:
        future.result(timeout=10)
    return info.value.args[0].code()


# -- kafka-python ---------------------------------------------------------------------------

def test_kafka_python_create_partitions(kafka_broker: BrokerProcess, kp_admin: Any) -> None:
    from kafka.errors import InvalidPartitionsError

    name = f"grow-kp-{uid()}"
    kp_admin.create_topics({name: {"num_partitions": 2}})
    kp_admin.create_partitions({name: 4})
    [described] = kp_admin.describe_topics([name])
    assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2, 3]
    with pytest.raises(InvalidPartitionsError):
        kp_admin.create_partitions({name: 3})
    kp_admin.create_partitions({name: 6}, validate_only=True)
    assert len(kp_admin.describe_topics([name])[0]["partitions"]) == 4
    kp_admin.delete_topics([name])


@pytest.mark.extension
def test_amqp_keyed_publishes_hash_over_the_grown_count(kafka_broker: BrokerProcess,
                                                       kp_admin: Any) -> None:
    from kafka import KafkaConsumer, TopicPartition

    name = f"grow-amqp-{uid()}"
    kp_admin.create_topics({name: {"num_partitions": 1}})
    kp_admin.create_partitions({name: 3})
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    try:
        ch = conn.channel()
        # the declaration it was created with is still equivalent
        ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream",
                                                        "x-partitions": 1})
        keys = [f"key-{i}" for i in range(12)]
        for k in keys:
            ch.basic_publish("", name, k.encode(),
                             pika.BasicProperties(headers={"x-message-key": k}))
    finally:
        conn.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             consumer_timeout_ms=3000)
    try:
        consumer.assign([TopicPartition(name, p) for p in range(3)])
        consumer.seek_to_beginning()
        got = {r.key.decode(): r.partition for r in consumer}
    finally:
        consumer.close()
    assert got == {k: kafka_partition(k.encode(), 3) for k in keys}
    kp_admin.delete_topics([name])


def test_kafka_python_delete_records(kafka_broker: BrokerProcess, kp_admin: Any) -> None:
    from kafka import KafkaConsumer, TopicPartition

    name = f"trim-kp-{uid()}"
    kp_admin.create_topics({name: {"num_partitions": 2}})
    produce(kafka_broker.kafka_bootstrap, name, 0, 10)
    tp = TopicPartition(name, 0)
    result = kp_admin.delete_records({tp: 6})
    assert result[tp]["low_watermark"] == 6
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             consumer_timeout_ms=3000)
    try:
        assert consumer.beginning_offsets([tp]) == {tp: 6}
        consumer.assign([tp])
        consumer.seek_to_beginning()
        assert [r.offset for r in consumer] == [6, 7, 8, 9]
    finally:
        consumer.close()
    with pytest.raises(Exception, match="OffsetOutOfRange"):
        kp_admin.delete_records({tp: 11})
    kp_admin.delete_topics([name])


@pytest.mark.extension
def test_amqp_readers_start_at_the_new_log_start(kafka_broker: BrokerProcess,
                                                 kp_admin: Any) -> None:
    from kafka import TopicPartition

    name = f"trim-amqp-{uid()}"
    kp_admin.create_topics({name: {"num_partitions": 1}})
    produce(kafka_broker.kafka_bootstrap, name, 0, 5)
    kp_admin.delete_records({TopicPartition(name, 0): 3})
    assert first_amqp_offset(kafka_broker.url, name) == 3
    kp_admin.delete_topics([name])


def test_kafka_python_alter_configs(kafka_broker: BrokerProcess, kp_admin: Any) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    name = f"conf-kp-{uid()}"
    kp_admin.create_topics({name: {"num_partitions": 1, "configs": {"retention.ms": "86400000"}}})
    resource = ConfigResource(ConfigResourceType.TOPIC, name,
                              configs={"retention.bytes": "1048576"})
    kp_admin.alter_configs([resource], incremental=True)
    described = kp_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    got = described["topic"][name]
    assert got["retention.bytes"]["value"] == "1048576"
    assert got["retention.bytes"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert got["retention.ms"]["value"] == "86400000"  # incremental: left as it was
    resource = ConfigResource(ConfigResourceType.TOPIC, name,
                              configs={"cleanup.policy": "compact"})
    kp_admin.alter_configs([resource], incremental=False, raise_on_unknown=False)
    got = kp_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)],
                                    config_filter="all")["topic"][name]
    assert got["cleanup.policy"]["value"] == "compact"
    assert got["retention.bytes"]["value"] in ("1048576", "-1")  # the client may refill it
    kp_admin.delete_topics([name])


def test_kafka_python_describe_cluster(kafka_broker: BrokerProcess, kp_admin: Any) -> None:
    cluster = kp_admin.describe_cluster()
    assert cluster["controller_id"] == 0
    assert [(b["node_id"] if "node_id" in b else b["broker_id"], b["port"])
            for b in cluster["brokers"]] == [(0, int(kafka_broker.kafka_bootstrap.rsplit(":")[1]))]
    assert cluster["cluster_id"]


# -- confluent-kafka ------------------------------------------------------------------------

def test_confluent_kafka_create_partitions_and_delete_records(kafka_broker: BrokerProcess,
                                                              ck_admin: Any) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import NewPartitions, NewTopic

    name = f"grow-ck-{uid()}"
    assert ck_admin.create_topics([NewTopic(name, 1)])[name].result(timeout=10) is None
    assert ck_admin.create_partitions([NewPartitions(name, 3)])[name].result(timeout=10) is None
    assert sorted(ck_admin.list_topics(topic=name, timeout=10).topics[name].partitions) == [0, 1, 2]
    assert ck_error_code(ck_admin.create_partitions([NewPartitions(name, 2)])[name]) == \
        ck.KafkaError.INVALID_PARTITIONS
    produce(kafka_broker.kafka_bootstrap, name, 2, 8)
    tp = ck.TopicPartition(name, 2, 5)
    [(_, future)] = ck_admin.delete_records([tp]).items()
    assert future.result(timeout=10).low_watermark == 5
    consumer = ck.Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap,
                            "group.id": f"g-{uid()}"})
    try:
        assert consumer.get_watermark_offsets(ck.TopicPartition(name, 2), timeout=10) == (5, 8)
    finally:
        consumer.close()
    [(_, future)] = ck_admin.delete_records([ck.TopicPartition(name, 2, 99)]).items()
    assert ck_error_code(future) == ck.KafkaError.OFFSET_OUT_OF_RANGE
    ck_admin.delete_topics([name])[name].result(timeout=10)


def test_confluent_kafka_alter_and_incremental_alter(kafka_broker: BrokerProcess,
                                                     ck_admin: Any) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
    )

    name = f"conf-ck-{uid()}"
    ck_admin.create_topics([NewTopic(name, 1, config={"retention.ms": "3600000"})])[
        name].result(timeout=10)
    resource = ConfigResource("topic", name, set_config={"segment.bytes": "1048576"})
    assert ck_admin.alter_configs([resource])[resource].result(timeout=10) is None
    described = ConfigResource("topic", name)
    got = ck_admin.describe_configs([described])[described].result(timeout=10)
    assert got["segment.bytes"].value == "1048576" and not got["segment.bytes"].is_default
    assert got["retention.ms"].is_default  # AlterConfigs replaced the whole set
    assert kafka_broker.get_json(f"/api/queues/%2F/{name}")["arguments"]["x-max-age"] == "1h"
    incremental = ConfigResource("topic", name, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    assert ck_admin.incremental_alter_configs([incremental])[incremental].result(
        timeout=10) is None
    got = ck_admin.describe_configs([described])[described].result(timeout=10)
    assert (got["retention.ms"].value, got["cleanup.policy"].value,
            got["segment.bytes"].value) == ("7200000", "delete,compact", "1048576")
    bad = ConfigResource("topic", name, set_config={"no.such.config": "1"})
    assert ck_error_code(ck_admin.alter_configs([bad])[bad]) == ck.KafkaError.INVALID_CONFIG
    broker = ConfigResource("broker", "0", set_config={"num.partitions": "3"})
    assert ck_error_code(ck_admin.alter_configs([broker])[broker]) == \
        ck.KafkaError.INVALID_REQUEST
    ck_admin.delete_topics([name])[name].result(timeout=10)


def test_confluent_kafka_describe_cluster(kafka_broker: BrokerProcess, ck_admin: Any) -> None:
    cluster = ck_admin.describe_cluster(request_timeout=10).result(timeout=10)
    assert cluster.controller.id == 0
    assert [(n.id, n.port) for n in cluster.nodes] == [
        (0, int(kafka_broker.kafka_bootstrap.rsplit(":")[1]))]
    assert cluster.cluster_id


# -- a restart ------------------------------------------------------------------------------

def test_admin_changes_and_the_topic_id_survive_a_restart(tmp_path: Any) -> None:
    pytest.importorskip("confluent_kafka")
    import confluent_kafka as ck
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

    from tests.conftest import EXTERNAL_URL, assert_clean_log

    if EXTERNAL_URL:
        pytest.skip("the Kafka listener is smartbroker's own")

    def topic_id(admin: Any, name: str) -> Any:
        found = admin.describe_topics(TopicCollection([name]))[name].result(timeout=10)
        return str(found.topic_id)  # confluent's Uuid compares by identity

    proc = BrokerProcess(tmp_path / "data", kafka=True).start()
    try:
        admin = AdminClient({"bootstrap.servers": proc.kafka_bootstrap})
        admin.create_topics([NewTopic("kept", 1)])["kept"].result(timeout=10)
        before = topic_id(admin, "kept")
        admin.create_partitions([NewPartitions("kept", 3)])["kept"].result(timeout=10)
        assert len(admin.list_topics(topic="kept", timeout=10).topics["kept"].partitions) == 3
        produce(proc.kafka_bootstrap, "kept", 1, 6)
        [(_, future)] = admin.delete_records([ck.TopicPartition("kept", 1, 4)]).items()
        future.result(timeout=10)
        resource = ConfigResource("topic", "kept", set_config={"retention.bytes": "2000000"})
        admin.alter_configs([resource])[resource].result(timeout=10)
        proc.restart()
        admin = AdminClient({"bootstrap.servers": proc.kafka_bootstrap})
        assert topic_id(admin, "kept") == before
        assert sorted(admin.list_topics(topic="kept", timeout=10).topics["kept"].partitions) == \
            [0, 1, 2]
        consumer = ck.Consumer({"bootstrap.servers": proc.kafka_bootstrap, "group.id": "g"})
        try:
            assert consumer.get_watermark_offsets(ck.TopicPartition("kept", 1),
                                                  timeout=10) == (4, 6)
        finally:
            consumer.close()
        described = ConfigResource("topic", "kept")
        got = admin.describe_configs([described])[described].result(timeout=10)
        assert got["retention.bytes"].value == "2000000"
        conn = pika.BlockingConnection(pika.URLParameters(proc.url))
        try:  # the declaration Kafka created it with is still what a redeclare matches
            conn.channel().queue_declare("kept", durable=True, arguments={
                "x-queue-type": "stream", "x-partitions": 1})
        finally:
            conn.close()
        admin.delete_topics(["kept"])["kept"].result(timeout=10)
        admin.create_topics([NewTopic("kept", 1)])["kept"].result(timeout=10)
        assert topic_id(admin, "kept") != before  # a new topic of the same name: a new id
    finally:
        proc.stop()
        assert_clean_log(proc)


# -- aiokafka (older protocol versions) -----------------------------------------------------

def test_aiokafka_create_partitions_delete_records_describe_cluster(
        kafka_broker: BrokerProcess) -> None:
    import asyncio

    pytest.importorskip("aiokafka")
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
    from aiokafka.structs import TopicPartition

    name = f"grow-aio-{uid()}"

    async def run() -> tuple[Any, Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 1)])
            await admin.create_partitions({name: NewPartitions(total_count=2)})
            produce(kafka_broker.kafka_bootstrap, name, 1, 5)
            low = await admin.delete_records({TopicPartition(name, 1): RecordsToDelete(3)})
            cluster = await admin.describe_cluster()
            await admin.delete_topics([name])
            return low, cluster
        finally:
            await admin.close()

    low, cluster = asyncio.run(run())
    assert low == {TopicPartition(name, 1): 3}
    assert cluster["controller_id"] == 0 and len(cluster["brokers"]) == 1
