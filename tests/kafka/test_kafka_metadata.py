"""Metadata through real Kafka clients: a stream queue declared over AMQP is a topic with
its partitions; a classic queue is not a topic (kafka-python, confluent-kafka, kcat)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pika
import pytest

from smartbroker.launcher import BrokerProcess

pytestmark = pytest.mark.extension


@pytest.fixture(scope="module")
def streams(kafka_broker: BrokerProcess) -> Iterator[dict[str, int]]:
    """Two streams (name -> partitions) declared over AMQP, and a classic queue beside
    them (``classic``, which must not be a topic)."""
    uid = uuid.uuid4().hex[:8]
    names = {f"orders-{uid}": 3, f"single.{uid}": 1}
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    for name, partitions in names.items():
        ch.queue_declare(name, durable=True,
                         arguments={"x-queue-type": "stream", "x-partitions": partitions})
    ch.queue_declare(classic_name(uid), durable=True)
    try:
        yield names
    finally:
        for name in (*names, classic_name(uid)):
            ch.queue_delete(name)
        conn.close()


def classic_name(uid: str) -> str:
    return f"classic-{uid}"


def classic(streams: dict[str, int]) -> str:
    return classic_name(next(iter(streams)).split("-", 1)[1])


def test_kafka_python_sees_the_streams(kafka_broker: BrokerProcess, streams: dict[str, int]) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             request_timeout_ms=10000)
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    assert set(streams) <= topics
    assert classic(streams) not in topics
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap)
    try:
        for name, partitions in streams.items():
            assert consumer.partitions_for_topic(name) == set(range(partitions))
        assert not consumer.partitions_for_topic(classic(streams))  # unknown: empty
    finally:
        consumer.close()


def test_confluent_kafka_sees_the_streams(kafka_broker: BrokerProcess, streams: dict[str, int]) -> None:
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_broker.kafka_bootstrap})
    meta = admin.list_topics(timeout=10)
    assert [(b.id, b.host, b.port) for b in meta.brokers.values()] == [
        (0, "127.0.0.1", kafka_broker.kafka_port)]
    for name, partitions in streams.items():
        topic = meta.topics[name]
        assert topic.error is None
        assert sorted(topic.partitions) == list(range(partitions))
        assert {(p.leader, tuple(p.replicas), tuple(p.isrs))
                for p in topic.partitions.values()} == {(0, (0,), (0,))}
    assert classic(streams) not in meta.topics
    # a missing name would be auto-created (librdkafka's admin asks to, and Kafka's
    # auto.create.topics.enable is on): a classic queue's name cannot be, nor is a topic
    missing = admin.list_topics(topic=classic(streams), timeout=10)
    (only,) = missing.topics.values()
    assert only.error is not None
    assert only.error.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_lists_the_streams(kafka_broker: BrokerProcess, streams: dict[str, int]) -> None:
    out = subprocess.run(["kcat", "-L", "-J", "-b", kafka_broker.kafka_bootstrap, "-m", "10"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    meta = json.loads(out)
    topics = {t["topic"]: t for t in meta["topics"]}
    for name, partitions in streams.items():
        assert "error" not in topics[name] or not topics[name]["error"]
        assert sorted(p["partition"] for p in topics[name]["partitions"]) == list(range(partitions))
    assert classic(streams) not in topics
    assert [(b["id"], b["name"]) for b in meta["brokers"]] == [
        (0, f"127.0.0.1:{kafka_broker.kafka_port}")]


def test_aiokafka_sees_the_streams(kafka_broker: BrokerProcess, streams: dict[str, int]) -> None:
    """aiokafka speaks old versions (Metadata v0/v1): the same answer there."""
    aiokafka = pytest.importorskip("aiokafka")
    import asyncio

    async def partitions() -> dict[str, set[int]]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap)
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap)
        await consumer.start()
        await producer.start()
        try:
            topics = await consumer.topics()
            assert set(streams) <= topics and classic(streams) not in topics
            return {name: await producer.partitions_for(name) for name in streams}
        finally:
            await producer.stop()
            await consumer.stop()

    assert asyncio.run(partitions()) == {name: set(range(n)) for name, n in streams.items()}
