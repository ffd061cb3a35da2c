"""Produce through real Kafka clients, read back over AMQP: kafka-python (acks 0, 1, all;
keys, headers, timestamps), confluent-kafka with enable.idempotence=false, kcat -P. A key
lands in the same partition from AMQP and Kafka; a topic produced to is auto-created as a
durable stream visible over AMQP and /api/queues."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from smartbroker.queues.partitioner import kafka_partition
from tests.kafka.amqp_streams import amqp_positions, declare_stream

pytestmark = pytest.mark.extension
PARTITIONS = 3
TS = 1_700_000_000_123


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def read_amqp(broker: BrokerProcess, queue: str, count: int) -> list[tuple[int, int, Any, bytes]]:
    """(partition, offset, properties, body) of the first ``count`` messages of every
    partition, as an AMQP stream consumer from ``first`` gets them, sorted."""
    return [(p, o, props, body) for (p, o), (props, body)
            in sorted(amqp_positions(broker, queue, count).items())]


def kafka_python_producer(broker: BrokerProcess, **config: Any) -> Any:
    kafka = pytest.importorskip("kafka")
    return kafka.KafkaProducer(bootstrap_servers=broker.kafka_bootstrap,
                               enable_idempotence=False, **config)


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_kafka_python_produce_read_over_amqp(kafka_broker: BrokerProcess, acks: Any) -> None:
    topic = name("produce")
    declare_stream(kafka_broker, topic, PARTITIONS)
    producer = kafka_python_producer(kafka_broker, acks=acks)
    sent = []
    try:
        for i in range(12):
            key = f"user-{i % 4}".encode()
            future = producer.send(topic, value=b"value-%d" % i, key=key,
                                   headers=[("trace", b"t%d" % i), ("empty", b"")],
                                   timestamp_ms=TS + i)
            sent.append((key, b"value-%d" % i, TS + i, future))
        producer.flush(timeout=30)
        metas = [f.get(timeout=30) for *_, f in sent]
    finally:
        producer.close(timeout=10)
    got = read_amqp(kafka_broker, topic, len(sent))
    by_value = {body: (p, off, props) for p, off, props, body in got}
    for (key, value, ts, _), meta in zip(sent, metas, strict=True):
        p, off, props = by_value[value]
        assert p == kafka_partition(key, PARTITIONS) == meta.partition
        if acks != 0:  # acks=0: the client never learns the offset
            assert off == meta.offset
        assert props.headers["x-message-key"] == key.decode()
        assert props.headers["trace"] == f"t{ts - TS}"
        assert props.headers["empty"] == ""
        assert props.timestamp == ts // 1000
    for p in range(PARTITIONS):  # offsets dense from 0 in each partition
        offsets = [off for q, off, _, _ in got if q == p]
        assert offsets == list(range(len(offsets)))


def test_same_key_same_partition_from_amqp_and_kafka(kafka_broker: BrokerProcess) -> None:
    topic = name("cross")
    declare_stream(kafka_broker, topic, partitions=5)
    keys = [f"device-{i}" for i in range(10)]
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for key in keys:
            ch.basic_publish("", topic, b"amqp:" + key.encode(),
                             pika.BasicProperties(headers={"x-message-key": key}))
    finally:
        conn.close()
    producer = kafka_python_producer(kafka_broker, acks="all")
    try:
        for key in keys:  # the client partitions (murmur2); the broker keeps its choice
            producer.send(topic, value=b"kafka:" + key.encode(), key=key.encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    got = read_amqp(kafka_broker, topic, 2 * len(keys))
    partition_of: dict[str, set[int]] = {}
    for p, _, props, _ in got:
        partition_of.setdefault(props.headers["x-message-key"], set()).add(p)
    assert partition_of == {k: {kafka_partition(k.encode(), 5)} for k in keys}


def test_confluent_producer_auto_creates_the_topic(kafka_broker: BrokerProcess) -> None:
    ck = pytest.importorskip("confluent_kafka")
    topic = name("auto")
    producer = ck.Producer({"bootstrap.servers": kafka_broker.kafka_bootstrap,
                            "enable.idempotence": False, "acks": "all",
                            "partitioner": "murmur2_random"})
    reports: list[Any] = []
    for i in range(5):
        producer.produce(topic, value=b"c%d" % i, key=b"k%d" % i,
                         headers=[("h", b"v%d" % i), ("nothing", None)], timestamp=TS + i,
                         on_delivery=lambda err, msg: reports.append((err, msg)))
    assert producer.flush(30) == 0
    assert [err for err, _ in reports] == [None] * 5
    # Kafka's num.partitions = 1: everything in partition 0, offsets 0..4
    assert sorted((m.partition(), m.offset()) for _, m in reports) == [(0, i) for i in range(5)]
    queues = {q["name"]: q for q in kafka_broker.get_json("/api/queues")}
    assert queues[topic]["type"] == "stream" and queues[topic]["durable"] is True
    got = read_amqp(kafka_broker, topic, 5)
    assert [(p, off, body) for p, off, _, body in got] == [(0, i, b"c%d" % i) for i in range(5)]
    props = got[1][2]
    assert props.headers["x-message-key"] == "k1"
    assert props.headers["h"] == "v1" and props.headers["nothing"] is None
    assert props.timestamp == (TS + 1) // 1000


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_produce(kafka_broker: BrokerProcess) -> None:
    topic = name("kcat")
    declare_stream(kafka_broker, topic, partitions=2)
    lines = "".join(f"key{i}:line {i}\n" for i in range(6))
    subprocess.run(["kcat", "-P", "-b", kafka_broker.kafka_bootstrap, "-t", topic, "-p", "1",
                    "-K", ":", "-H", "via=kcat", "-X", "enable.idempotence=false"],
                   input=lines, text=True, timeout=30, check=True)
    got = read_amqp(kafka_broker, topic, 6)
    assert [(p, off, body) for p, off, _, body in got] == [
        (1, i, b"line %d" % i) for i in range(6)]  # -p 1: the partition kcat chose
    assert [g[2].headers["x-message-key"] for g in got] == [f"key{i}" for i in range(6)]
    assert {g[2].headers["via"] for g in got} == {"kcat"}


def test_aiokafka_produce_and_offsets(kafka_broker: BrokerProcess) -> None:
    """aiokafka negotiates older versions: produce (auto-creating the topic) and ListOffsets."""
    aiokafka = pytest.importorskip("aiokafka")
    import asyncio

    topic = name("aio")

    async def run() -> tuple[Any, ...]:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                                             acks="all")
        await producer.start()
        try:
            sent = [await producer.send_and_wait(topic, b"v%d" % i, key=b"k", timestamp_ms=TS + i,
                                                 headers=[("h", b"%d" % i)]) for i in range(3)]
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap)
        await consumer.start()
        try:
            tp = aiokafka.TopicPartition(topic, 0)
            return (sent, await consumer.beginning_offsets([tp]), await consumer.end_offsets([tp]),
                    await consumer.offsets_for_times({tp: TS + 1}), tp)
        finally:
            await consumer.stop()

    sent, first, end, times, tp = asyncio.run(asyncio.wait_for(run(), 60))
    assert [(m.partition, m.offset) for m in sent] == [(0, 0), (0, 1), (0, 2)]
    assert (first[tp], end[tp]) == (0, 3)
    assert (times[tp].offset, times[tp].timestamp) == (1, TS + 1)
    got = read_amqp(kafka_broker, topic, 3)
    assert [(body, props.headers["h"]) for _, _, props, body in got] == [
        (b"v0", "0"), (b"v1", "1"), (b"v2", "2")]


def test_auto_created_topic_and_records_survive_a_restart(tmp_path: Any) -> None:
    """Auto-creation goes through the vhost's declare path, so the stream is recorded."""
    kafka = pytest.importorskip("kafka")
    proc = BrokerProcess(tmp_path / "data", kafka=True).start()
    try:
        topic = name("kept")
        producer = kafka_python_producer(proc, acks="all")
        try:
            for i in range(3):
                producer.send(topic, value=b"r%d" % i, key=b"k", timestamp_ms=TS + i)
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=10)
        proc.restart()
        consumer = kafka.KafkaConsumer(bootstrap_servers=proc.kafka_bootstrap)
        try:
            tp = kafka.TopicPartition(topic, 0)
            assert consumer.end_offsets([tp]) == {tp: 3}
        finally:
            consumer.close()
        got = read_amqp(proc, topic, 3)
        assert [(off, body, props.headers["x-message-key"]) for _, off, props, body in got] == [
            (i, b"r%d" % i, "k") for i in range(3)]
    finally:
        proc.stop()
    assert proc.tracebacks() == []
