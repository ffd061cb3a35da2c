"""AMQP in, Kafka out: pika and aio-pika publish keyed messages with headers of every AMQP
field type, properties and timestamps to a 3-partition stream; kafka-python,
confluent-kafka, aiokafka and kcat read the same partitions, offsets, keys, values,
headers and timestamps, which are those AMQP readers see; the partition an AMQP publish
landed in is the one each Kafka client's murmur2 partitioner picks for the key."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from smartbroker.queues.partitioner import kafka_partition
from tests.kafka.amqp_streams import amqp_positions
from tests.kafka.cross_protocol_readers import (
    Record,
    aiokafka_records,
    confluent_records,
    kafka_python_records,
    kcat_lines,
)

pytestmark = pytest.mark.extension
PARTITIONS = 3
AMQP_TS = 1_600_000_000  # seconds: the timestamp property, far from the append time
KEYS = [f"sensor-{i}" for i in range(12)]
# header values of every AMQP field type pika encodes, and the Kafka header bytes each
# becomes (kafka_mapping.py: strings and bytes as they are, void as null, others as text)
TYPED_HEADERS: dict[str, tuple[Any, bytes | None]] = {
    "h-str": ("text é", "text é".encode()),
    "h-bytes": (b"\x00\x01raw", b"\x00\x01raw"),
    "h-int": (42, b"42"),
    "h-long": (2**40, str(2**40).encode()),
    "h-neg": (-7, b"-7"),
    "h-bool": (True, b"True"),
    "h-void": (None, None),
    "h-decimal": (decimal.Decimal("3.14"), b"3.14"),
}


async def aio_pika_publish(url: str, topic: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        for i, key in enumerate(KEYS):
            await ch.default_exchange.publish(aio_pika.Message(
                b"aio-%d" % i, headers={"x-message-key": key, "via": "aio-pika",
                                        "n": i, "blob": bytearray(b"\xff\xfe")},
                content_type="text/plain", message_id=f"aio-{i}"), routing_key=topic)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def topic(kafka_broker: BrokerProcess) -> Iterator[tuple[str, float, float]]:
    """The stream, and the wall-clock window (seconds) its messages were published in."""
    name = f"x-amqp-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True,
                     arguments={"x-queue-type": "stream", "x-partitions": PARTITIONS})
    ch.confirm_delivery()
    start = time.time()
    for i, key in enumerate(KEYS):
        headers = {name_: value for name_, (value, _) in TYPED_HEADERS.items()}
        headers.update({"x-message-key": key, "seq": f"{i}"})
        ch.basic_publish("", name, b"pika-%d" % i, pika.BasicProperties(
            headers=headers, content_type="application/json", correlation_id=f"c{i}",
            message_id=f"m{i}", priority=5, delivery_mode=2, app_id="sensors",
            type="reading", timestamp=AMQP_TS))
    asyncio.run(aio_pika_publish(kafka_broker.url, name))
    end = time.time()
    try:
        yield name, start, end
    finally:
        ch.queue_delete(name)
        conn.close()


COUNT = 2 * len(KEYS)


def test_every_kafka_client_reads_what_amqp_readers_see(
        kafka_broker: BrokerProcess, topic: tuple[str, float, float]) -> None:
    name, start, end = topic
    bootstrap = kafka_broker.kafka_bootstrap
    reference = kafka_python_records(bootstrap, name, PARTITIONS, COUNT)
    assert len(reference) == COUNT
    assert confluent_records(bootstrap, name, PARTITIONS, COUNT) == reference
    assert aiokafka_records(bootstrap, name, PARTITIONS, COUNT) == reference
    amqp = amqp_positions(kafka_broker, name, COUNT)
    assert set(amqp) == {(r[0], r[1]) for r in reference}
    for partition, offset, key, value, headers, ts in reference:
        props, body = amqp[partition, offset]
        assert value == body
        assert key is not None and key.decode() == props.headers["x-message-key"]
        assert partition == kafka_partition(key, PARTITIONS)  # murmur2, as Kafka's clients
        assert start * 1000 - 1000 <= ts <= end * 1000 + 1000  # the append time, in ms
        assert props.timestamp == (AMQP_TS if value.startswith(b"pika-") else None)
        assert check_headers(value, dict(headers), props)


def check_headers(value: bytes | None, headers: dict[str, bytes | None], props: Any) -> bool:
    """Every AMQP header and property set at publish is a Kafka header, typed values as
    the mapping's text (the key is the record key, never a header)."""
    assert "x-message-key" not in headers
    assert value is not None
    if value.startswith(b"pika-"):
        for name, (_, expected) in TYPED_HEADERS.items():
            assert headers[name] == expected, name
        assert headers["seq"] == value[5:]
        assert headers["x-amqp-content-type"] == b"application/json"
        assert headers["x-amqp-correlation-id"] == b"c" + value[5:]
        assert headers["x-amqp-message-id"] == b"m" + value[5:]
        assert headers["x-amqp-priority"] == b"5"
        assert headers["x-amqp-delivery-mode"] == b"2"
        assert headers["x-amqp-app-id"] == b"sensors"
        assert headers["x-amqp-type"] == b"reading"
        # the property differs from the append time: it travels as a header
        assert headers["x-amqp-timestamp"] == str(AMQP_TS).encode()
        assert props.timestamp == AMQP_TS and props.priority == 5
    else:
        assert headers["via"] == b"aio-pika"
        assert headers["n"] == value[4:]
        assert headers["blob"] == b"\xff\xfe"
        assert headers["x-amqp-content-type"] == b"text/plain"
        assert "x-amqp-timestamp" not in headers
    return True


def test_kcat_reads_the_same(kafka_broker: BrokerProcess, topic: tuple[str, float, float]) -> None:
    name = topic[0]
    reference: list[Record] = kafka_python_records(kafka_broker.kafka_bootstrap, name,
                                                   PARTITIONS, COUNT)
    rows = kcat_lines(kafka_broker.kafka_bootstrap, name)
    assert [(int(p), int(o), k.encode(), int(ts)) for p, o, k, ts, _h, _v in rows] == [
        (r[0], r[1], r[2], r[5]) for r in reference]
    for (p, o, _k, _ts, kcat_headers, value), record in zip(rows, reference, strict=True):
        assert value.encode() == record[3], (p, o)
        if value.startswith("pika-"):  # kcat prints headers as name=value,...
            assert f"seq={value[5:]}" in kcat_headers.split(",")
            assert "x-amqp-app-id=sensors" in kcat_headers.split(",")
        else:
            assert "via=aio-pika" in kcat_headers.split(",")


def test_kafka_partitioners_agree_with_amqp_publishes(
        kafka_broker: BrokerProcess, topic: tuple[str, float, float]) -> None:
    """kafka-python's and aiokafka's default partitioner and librdkafka's murmur2_random
    put each key in the partition its AMQP publishes landed in. (They produce to a stream
    of their own with as many partitions: the module's topic must keep what the other tests
    read, whichever runs first.)"""
    kafka = pytest.importorskip("kafka")
    ck = pytest.importorskip("confluent_kafka")
    amqp_partition = {props.headers["x-message-key"]: p for (p, _), (props, _)
                      in amqp_positions(kafka_broker, topic[0], COUNT).items()}
    assert set(amqp_partition) == set(KEYS)
    name = f"x-kafka-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream",
                                                    "x-partitions": PARTITIONS})
    try:
        landed = produced_to(kafka, ck, kafka_broker.kafka_bootstrap, name)
    finally:
        ch.queue_delete(name)
        conn.close()
    assert landed == {k: {amqp_partition[k]} for k in KEYS}


def produced_to(kafka: Any, ck: Any, bootstrap: str, name: str) -> dict[str, set[int]]:
    """Each key produced to ``name`` by the three client libraries: where it landed."""
    landed: dict[str, set[int]] = {k: set() for k in KEYS}
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    try:
        futures = [(k, producer.send(name, key=k.encode(), value=b"kp")) for k in KEYS]
        for k, future in futures:
            landed[k].add(future.get(timeout=30).partition)
    finally:
        producer.close(timeout=10)
    reports: list[tuple[str, int]] = []
    cproducer = ck.Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for k in KEYS:
        cproducer.produce(name, key=k.encode(), value=b"ck", on_delivery=lambda err, msg: (
            reports.append((msg.key().decode(), msg.partition())) if err is None else None))
    assert cproducer.flush(30) == 0
    for k, p in reports:
        landed[k].add(p)
    assert len(reports) == len(KEYS)
    asyncio.run(aiokafka_send(bootstrap, name, landed))
    return landed


async def aiokafka_send(bootstrap: str, name: str, landed: dict[str, set[int]]) -> None:
    import aiokafka

    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for k in KEYS:
            meta = await producer.send_and_wait(name, key=k.encode(), value=b"aio")
            landed[k].add(meta.partition)
    finally:
        await producer.stop()


def test_typed_headers_and_dates(kafka_broker: BrokerProcess) -> None:
    """A timestamp-typed, float, table and array header (published by aio-pika: pika
    cannot encode floats) reach Kafka as their text, not dropped: AMQP types Kafka has no
    word for."""
    import aio_pika

    name = f"x-typed-{uuid.uuid4().hex[:8]}"
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    async def publish() -> None:
        conn = await aio_pika.connect(kafka_broker.url)
        try:
            ch = await conn.channel(publisher_confirms=True)
            await ch.declare_queue(name, durable=True, arguments={"x-queue-type": "stream"})
            await ch.default_exchange.publish(aio_pika.Message(b"typed", headers={
                "h-date": when, "h-float": 1.5, "h-table": {"a": 1}, "h-array": [1, "x"]}),
                routing_key=name)
        finally:
            await conn.close()

    asyncio.run(publish())
    try:
        [record] = kafka_python_records(kafka_broker.kafka_bootstrap, name, 1, 1)
        headers = dict(record[4])
        assert {"h-date", "h-float", "h-table", "h-array"} <= set(headers)
        assert headers["h-float"] == b"1.5"
        assert headers["h-date"] == str(int(when.timestamp())).encode()  # epoch seconds
        assert headers["h-table"] and headers["h-array"]
    finally:
        conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
        conn.channel().queue_delete(name)
        conn.close()
