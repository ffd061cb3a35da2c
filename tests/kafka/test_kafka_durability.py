"""Durability across kill -9: a Kafka producer (acks=all) and an AMQP publisher with
confirms write into the same partition at once; the broker is killed mid-stream and
restarted. Every record the producer was acknowledged is there at the offset it was told,
every confirmed AMQP message is there once, offsets run without holes up to ListOffsets
latest, and a Kafka consumer group's committed offsets survive."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from tests.kafka.cross_protocol_readers import kafka_python_records
from tests.kafka.kafka_brokers import own_kafka

pytestmark = pytest.mark.extension


@pytest.fixture
def own_kafka_broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-kill-",
                   why="kills a smartbroker subprocess of its own") as proc:
        yield proc


class KafkaWriter(threading.Thread):
    """Sends until told to stop (or the broker is gone); keeps what was acknowledged:
    offset -> value."""

    def __init__(self, broker: BrokerProcess, topic: str) -> None:
        super().__init__(daemon=True)
        kafka = pytest.importorskip("kafka")
        # what is in flight when the broker dies fails within 6 s, so that close() can
        # flush and stop the producer's thread (its flush raises while a batch is pending,
        # and the thread then went on retrying a dead broker under the next tests)
        self.producer = kafka.KafkaProducer(
            bootstrap_servers=broker.kafka_bootstrap, acks="all", enable_idempotence=False,
            linger_ms=2, retries=0, request_timeout_ms=5000, max_block_ms=5000,
            delivery_timeout_ms=6000)
        self.topic = topic
        self.acked: dict[int, bytes] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            value = b"kafka-%d" % i
            i += 1
            try:
                future = self.producer.send(self.topic, value=value, partition=0)
                future.add_callback(lambda meta, v=value: self.acked.__setitem__(meta.offset, v))
            except Exception:  # the broker is gone: nothing more is acknowledged
                return
            if i % 20 == 0:
                time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        with contextlib.suppress(Exception):  # closing against a dead broker may complain
            self.producer.close(timeout=10)


class AmqpWriter(threading.Thread):
    """Publishes with confirms until the connection drops; keeps the confirmed bodies."""

    def __init__(self, broker: BrokerProcess, queue: str) -> None:
        super().__init__(daemon=True)
        self.conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.queue = queue
        self.confirmed: list[bytes] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                body = b"amqp-%d" % i
                self.ch.basic_publish("", self.queue, body)  # returns once confirmed
                self.confirmed.append(body)
                i += 1
        except Exception:  # noqa: S110 - the broker was killed: this publish is unconfirmed
            return


def committed(broker: BrokerProcess, group: str, topic: str) -> int:
    ck = pytest.importorskip("confluent_kafka")
    consumer = ck.Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": group,
                            "enable.auto.commit": False})
    try:
        [tp] = consumer.committed([ck.TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def test_acknowledged_records_survive_kill_9(own_kafka_broker: BrokerProcess) -> None:
    ck = pytest.importorskip("confluent_kafka")
    kafka = pytest.importorskip("kafka")
    broker = own_kafka_broker
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    conn.channel().queue_declare(topic, durable=True, arguments={"x-queue-type": "stream"})
    conn.close()

    kafka_writer, amqp_writer = KafkaWriter(broker, topic), AmqpWriter(broker, topic)
    kafka_writer.start()
    amqp_writer.start()
    deadline = time.monotonic() + 30
    while (len(kafka_writer.acked) < 300 or len(amqp_writer.confirmed) < 100) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    consumer = ck.Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": group,
                            "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[ck.TopicPartition(topic, 0, 123, metadata="before kill")],
                        asynchronous=False)
    finally:
        consumer.close()
    broker.kill()  # mid-stream: both writers are still sending
    kafka_writer.close()
    amqp_writer.stop.set()
    amqp_writer.join(10)
    acked, confirmed = dict(kafka_writer.acked), list(amqp_writer.confirmed)
    assert len(acked) >= 300 and len(confirmed) >= 100

    broker.start()
    tp = kafka.TopicPartition(topic, 0)
    reader = kafka.KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap)
    try:
        latest = reader.end_offsets([tp])[tp]
        assert reader.beginning_offsets([tp])[tp] == 0
    finally:
        reader.close()
    found = kafka_python_records(broker.kafka_bootstrap, topic, 1, latest, timeout=60)
    # kafka-python may still deliver a batch it was never acknowledged for once the broker
    # is back (its sender outlives close() against a dead broker): such records land after
    # ``latest`` and are not the broker's to account for; only unacknowledged Kafka sends
    # may be there
    late = [r for r in found if r[1] >= latest]
    assert all(r[3].startswith(b"kafka-") and r[3] not in acked.values() for r in late)
    records = [r for r in found if r[1] < latest]
    assert [r[1] for r in records] == list(range(latest))  # no holes, ends at latest
    stored = {r[1]: r[3] for r in records}
    lost = {o: v for o, v in acked.items() if stored.get(o) != v}
    assert not lost, f"{len(lost)} acknowledged Kafka records lost or moved"
    values = [r[3] for r in records]
    assert all(values.count(body) == 1 for body in confirmed), "confirmed AMQP publish lost"
    assert {v[:5] for v in values} == {b"kafka", b"amqp-"}  # mixed in one partition
    assert committed(broker, group, topic) == 123

    # the partition takes new writes after the recovery, from both sides
    amqp = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = amqp.channel()
        ch.confirm_delivery()
        ch.basic_publish("", topic, b"after")
    finally:
        amqp.close()
    producer = kafka.KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, acks="all",
                                   enable_idempotence=False)
    try:
        meta: Any = producer.send(topic, value=b"after-kafka", partition=0).get(timeout=30)
    finally:
        producer.close(timeout=10)
    # the old producer's late batches (see above) may land in between: the new writes
    # follow ``latest``, once each, in the order they were made, and nothing else but
    # unacknowledged Kafka sends comes with them
    assert meta.offset > latest
    after = [r for r in kafka_python_records(broker.kafka_bootstrap, topic, 1,
                                             meta.offset + 1, timeout=60)
             if latest <= r[1] <= meta.offset]
    assert [r[1] for r in after] == list(range(latest, meta.offset + 1))
    bodies = [r[3] for r in after]
    assert bodies[-1] == b"after-kafka" and bodies.count(b"after") == 1
    assert all(b.startswith(b"kafka-") and b not in acked.values()
               for b in bodies if b not in (b"after", b"after-kafka"))


def test_a_compacted_topic_after_kill_9(own_kafka_broker: BrokerProcess) -> None:
    """Compacted segments swapped in before the kill stay compacted after it: no
    superseded record comes back, offsets and the newest values are where they were, and
    a Kafka consumer and an AMQP reader agree."""
    from tests.kafka.test_kafka_compaction import (
        amqp_offsets,
        create_topic,
        produce_rounds,
        read_until,
    )

    broker = own_kafka_broker
    name = f"compact-kill-{uuid.uuid4().hex[:8]}"
    create_topic(broker, name, {"cleanup.policy": "compact", "segment.bytes": "4096"})
    newest, pads = produce_rounds(broker, name)
    want = set(newest.values()) | pads
    before = read_until(broker, name, want, timeout=30)
    assert {r[1] for r in before} == want
    broker.kill()
    broker.start()
    after = kafka_python_records(broker.kafka_bootstrap, name, 1, len(want), timeout=30)
    assert [(r[1], r[2], r[3]) for r in after] == [(r[1], r[2], r[3]) for r in before]
    assert set(amqp_offsets(broker, name, len(want))) == want


def test_what_a_consumer_saw_survives_kill_9(own_kafka_broker: BrokerProcess) -> None:
    """A Kafka consumer tails a stream that an AMQP publisher (no confirms) fills; after
    kill -9 every record the consumer was served is stored at the offset it saw, so no
    offset it consumed is reused for another record (a Fetch used to serve records still
    in the broker's write buffer, which a crash loses)."""
    kafka = pytest.importorskip("kafka")
    broker = own_kafka_broker
    name = f"seen-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    seen: dict[int, bytes] = {}
    stop = threading.Event()

    def tail() -> None:
        consumer = kafka.KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap,
                                       fetch_max_wait_ms=10)
        tp = kafka.TopicPartition(name, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        with contextlib.suppress(Exception):  # the broker goes away under it
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=50).values():
                    seen.update((r.offset, r.value) for r in records)
        with contextlib.suppress(Exception):
            consumer.close(timeout_ms=1000)

    reader = threading.Thread(target=tail, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    i = 0
    with contextlib.suppress(Exception):
        while len(seen) < 5000 and time.monotonic() < deadline:
            ch.basic_publish("", name, b"m%d" % i)
            i += 1
            if i % 200 == 0:
                conn.process_data_events(0)
    broker.kill()  # while publishes are in flight
    stop.set()
    reader.join(10)
    assert len(seen) >= 5000
    broker.start()
    stored = {r[1]: r[3] for r in kafka_python_records(broker.kafka_bootstrap, name, 1,
                                                      len(seen), timeout=30)}
    phantom = {o: v for o, v in seen.items() if stored.get(o) != v}
    assert not phantom, f"{len(phantom)} records served before the kill are gone"
