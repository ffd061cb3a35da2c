"""Live traffic between the protocols: an AMQP consumer waiting at the end of a stream gets
records a Kafka producer sends, at the partitions and offsets the producer was told; a
subscribed Kafka consumer group gets messages AMQP publishes through a topic exchange bound
to the stream; large values cross both ways (a 2 MiB Kafka value to AMQP, a 3 MiB AMQP
body to a Kafka consumer whose fetch size is 1 MiB, as KIP-74 allows)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from tests.kafka.amqp_streams import stream_arguments
from tests.kafka.cross_protocol_readers import kafka_python_records

pytestmark = pytest.mark.extension
PARTITIONS = 3


def declare_stream(ch: Any, name: str, partitions: int = PARTITIONS) -> None:
    ch.queue_declare(name, durable=True, arguments=stream_arguments(partitions))


class AmqpTail(threading.Thread):
    """A stream consumer from ``next`` on a connection of its own, collecting deliveries
    as (partition, offset, key, body) until ``count`` came."""

    def __init__(self, broker: BrokerProcess, queue: str, count: int) -> None:
        super().__init__(daemon=True)
        self.conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        self.ch = self.conn.channel()
        self.ch.basic_qos(prefetch_count=50)
        self.got: list[tuple[int, int, str | None, bytes]] = []
        self.count = count
        self.ready = threading.Event()

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            h = props.headers
            self.got.append((h["x-stream-partition"], h["x-stream-offset"],
                             h.get("x-message-key"), body))
            ch.basic_ack(method.delivery_tag)
            if len(self.got) >= self.count:
                ch.stop_consuming()

        self.ch.basic_consume(queue, on_message, arguments={"x-stream-offset": "next"})

    def run(self) -> None:
        self.ready.set()
        self.ch.start_consuming()


def test_amqp_consumer_gets_live_kafka_records(kafka_broker: BrokerProcess) -> None:
    ck = pytest.importorskip("confluent_kafka")
    name = f"live-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    declare_stream(ch, name)
    ch.basic_publish("", name, b"before", pika.BasicProperties(headers={"x-message-key": "k0"}))
    count = 30
    tail = AmqpTail(kafka_broker, name, count)
    tail.start()
    tail.ready.wait(5)  # attached already: basic_consume returned after consume-ok
    reports: list[tuple[int, int, str, bytes]] = []
    producer = ck.Producer({"bootstrap.servers": kafka_broker.kafka_bootstrap,
                            "partitioner": "murmur2_random", "linger.ms": 5})
    for i in range(count):
        producer.produce(name, key=f"k{i % 6}".encode(), value=b"live-%d" % i,
                         on_delivery=lambda err, msg: reports.append((
                             msg.partition(), msg.offset(), msg.key().decode(), msg.value()))
                         if err is None else None)
    assert producer.flush(30) == 0
    tail.join(30)
    try:
        assert sorted(tail.got) == sorted(reports), "each record at the producer's offset"
        assert b"before" not in {g[3] for g in tail.got}  # from next: not the old one
    finally:
        if tail.is_alive():
            tail.conn.add_callback_threadsafe(tail.ch.stop_consuming)
            tail.join(5)
        tail.conn.close()
        ch.queue_delete(name)
        conn.close()


def test_kafka_group_gets_amqp_publishes_through_an_exchange(kafka_broker: BrokerProcess) -> None:
    ck = pytest.importorskip("confluent_kafka")
    name = f"routed-{uuid.uuid4().hex[:8]}"
    exchange = f"ex-{name}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    declare_stream(ch, name)
    ch.exchange_declare(exchange, "topic", durable=True)
    ch.queue_bind(name, exchange, "orders.#")
    consumer = ck.Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap,
                            "group.id": f"g-{name}", "auto.offset.reset": "earliest",
                            "enable.auto.commit": False})
    try:
        consumer.subscribe([name])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert len(consumer.assignment()) == PARTITIONS
        ch.confirm_delivery()
        for i in range(12):
            ch.basic_publish(exchange, f"orders.eu.{i}", b"order-%d" % i, pika.BasicProperties(
                headers={"x-message-key": f"customer-{i % 4}"}))
        got: dict[bytes, tuple[int, bytes]] = {}
        while len(got) < 12 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got[msg.value()] = (msg.partition(), msg.key())
        assert set(got) == {b"order-%d" % i for i in range(12)}
        by_key: dict[bytes, set[int]] = {}
        for partition, key in got.values():
            by_key.setdefault(key, set()).add(partition)
        assert all(len(parts) == 1 for parts in by_key.values())  # a key, one partition
    finally:
        consumer.close()
        ch.queue_delete(name)
        ch.exchange_delete(exchange)
        conn.close()


def test_large_values_cross_both_ways(kafka_broker: BrokerProcess) -> None:
    kafka = pytest.importorskip("kafka")
    name = f"large-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    declare_stream(ch, name, partitions=1)
    big_kafka = bytes(range(256)) * (8 * 1024)  # 2 MiB
    big_amqp = b"\xab" * (3 * 1024 * 1024)
    try:
        producer = kafka.KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                                       acks="all", enable_idempotence=False,
                                       max_request_size=4 * 1024 * 1024)
        try:
            meta = producer.send(name, key=b"big", value=big_kafka).get(timeout=30)
        finally:
            producer.close(timeout=10)
        ch.confirm_delivery()
        ch.basic_publish("", name, big_amqp)
        ch.basic_qos(prefetch_count=2)
        got = []
        last = None
        for method, props, body in ch.consume(name, arguments={"x-stream-offset": "first"},
                                              inactivity_timeout=10):
            if method is None:
                break
            got.append((props.headers["x-stream-offset"], body))
            last = method.delivery_tag
            if len(got) == 2:
                break
        ch.cancel()
        if last is not None:
            ch.basic_ack(last, multiple=True)
        assert got == [(meta.offset, big_kafka), (meta.offset + 1, big_amqp)]
        records = kafka_python_records(kafka_broker.kafka_bootstrap, name, 1, 2)
        assert [(r[1], r[3]) for r in records] == [(0, big_kafka), (1, big_amqp)]
    finally:
        ch.queue_delete(name)
        conn.close()
