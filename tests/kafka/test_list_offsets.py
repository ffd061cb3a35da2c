"""ListOffsets through real clients: kafka-python's beginning_offsets, end_offsets and
offsets_for_times, confluent-kafka's get_watermark_offsets and offsets_for_times, on a
stream filled by Kafka producers with chosen timestamps and by AMQP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pika
import pytest

from smartbroker.launcher import BrokerProcess

pytestmark = pytest.mark.extension
TS = 1_700_000_000_000
COUNT = 5  # records per partition, TS + 10 * i (partition 1: + 5)


@pytest.fixture(scope="module")
def topic(kafka_broker: BrokerProcess) -> Iterator[str]:
    kafka = pytest.importorskip("kafka")
    name = f"offsets-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream", "x-partitions": 3})
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, acks="all",
                                   enable_idempotence=False)
    try:
        for i in range(COUNT):
            producer.send(name, value=b"a%d" % i, partition=0, timestamp_ms=TS + 10 * i)
            producer.send(name, value=b"b%d" % i, partition=1, timestamp_ms=TS + 10 * i + 5)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    try:
        yield name  # partition 2 stays empty
    finally:
        ch.queue_delete(name)
        conn.close()


def test_kafka_python_offsets(kafka_broker: BrokerProcess, topic: str) -> None:
    kafka = pytest.importorskip("kafka")
    tps = [kafka.TopicPartition(topic, p) for p in range(3)]
    consumer = kafka.KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap)
    try:
        assert consumer.beginning_offsets(tps) == dict.fromkeys(tps, 0)
        assert consumer.end_offsets(tps) == {tps[0]: COUNT, tps[1]: COUNT, tps[2]: 0}
        found = consumer.offsets_for_times({tps[0]: TS + 15, tps[1]: TS + 15, tps[2]: TS})
        assert (found[tps[0]].offset, found[tps[0]].timestamp) == (2, TS + 20)
        assert (found[tps[1]].offset, found[tps[1]].timestamp) == (1, TS + 15)
        assert found[tps[2]] is None  # empty partition
        early = consumer.offsets_for_times({tps[0]: 0})
        assert (early[tps[0]].offset, early[tps[0]].timestamp) == (0, TS)
        assert consumer.offsets_for_times({tps[0]: TS + 10 * COUNT})[tps[0]] is None
    finally:
        consumer.close()


def test_confluent_offsets(kafka_broker: BrokerProcess, topic: str) -> None:
    ck = pytest.importorskip("confluent_kafka")
    consumer = ck.Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap,
                            "group.id": f"g-{uuid.uuid4().hex[:6]}"})
    try:
        assert consumer.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=10) == (0, COUNT)
        assert consumer.get_watermark_offsets(ck.TopicPartition(topic, 2), timeout=10) == (0, 0)
        found = consumer.offsets_for_times([ck.TopicPartition(topic, 0, TS + 21),
                                            ck.TopicPartition(topic, 1, TS + 45)], timeout=10)
        assert [(tp.partition, tp.offset) for tp in found] == [(0, 3), (1, 4)]
        late = consumer.offsets_for_times([ck.TopicPartition(topic, 1, TS + 46)], timeout=10)
        assert late[0].offset == -1  # nothing at or after: librdkafka's OFFSET_END
    finally:
        consumer.close()


def test_amqp_publishes_count_too(kafka_broker: BrokerProcess) -> None:
    """The latest offset moves with AMQP publishes to the same partition. (On a stream of
    its own: the module's topic must look the same to the tests before and after this.)"""
    kafka = pytest.importorskip("kafka")
    name = f"offsets-amqp-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    consumer = kafka.KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap)
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream",
                                                        "x-partitions": 3})
        tps = [kafka.TopicPartition(name, p) for p in range(3)]
        assert sum(consumer.end_offsets(tps).values()) == 0
        ch.confirm_delivery()
        ch.basic_publish("", name, b"amqp")  # no key: the routing key's partition
        assert sum(consumer.end_offsets(tps).values()) == 1
        ch.queue_delete(name)
    finally:
        consumer.close()
        conn.close()
