"""offsets_for_times inside Kafka batches: a batch holds records with different (and out of
order) timestamps, and a lookup answers the exact record, Kafka's earliest offset whose
timestamp is at or after the target, with that record's timestamp, not the batch's start;
the same over a gzip batch, past an AMQP publish (stamped with its append time), through
kafka-python and confluent-kafka, and after a restart (the time index rebuilt)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from smartbroker.queues.partitioner import kafka_partition
from tests.kafka.cross_protocol_readers import kafka_python_records
from tests.kafka.kafka_brokers import own_kafka

pytestmark = pytest.mark.extension
TS = 1_700_000_000_000
BATCH_A = [0, 10, 20, 30, 40]  # partition 0, offsets 0-4 (TS + these)
BATCH_B = [100, 90, 120]  # partition 0, offsets 5-7: out of order inside the batch
BATCH_GZIP = [5, 15, 25]  # partition 1, offsets 0-2, gzip
# target (TS + ms) -> (offset, timestamp) Kafka answers in partition 0; None: the AMQP
# message at offset 8, stamped with its append time
EXPECTED: dict[int, tuple[int, int | None]] = {
    -TS: (0, TS), 15: (2, TS + 20), 40: (4, TS + 40), 41: (5, TS + 100), 91: (5, TS + 100),
    95: (5, TS + 100), 100: (5, TS + 100), 101: (7, TS + 120), 120: (7, TS + 120),
    121: (8, None),
}


@pytest.fixture(scope="module")
def broker_and_topic() -> Iterator[tuple[BrokerProcess, str, int]]:
    """A broker of its own (restarted by the last test), a 2-partition topic with the
    batches above, and the AMQP message's append time (ms)."""
    kafka = pytest.importorskip("kafka")
    with own_kafka("smartbroker-kafka-times-",
                   why="restarts a smartbroker subprocess of its own") as proc:
        topic = f"times-{uuid.uuid4().hex[:8]}"
        conn = pika.BlockingConnection(pika.URLParameters(proc.url))
        ch = conn.channel()
        ch.queue_declare(topic, durable=True,
                         arguments={"x-queue-type": "stream", "x-partitions": 2})
        for compression, partition, batches in ((None, 0, [BATCH_A, BATCH_B]),
                                                ("gzip", 1, [BATCH_GZIP])):
            producer = kafka.KafkaProducer(bootstrap_servers=proc.kafka_bootstrap, acks="all",
                                           enable_idempotence=False, linger_ms=10_000,
                                           compression_type=compression)
            try:
                for batch in batches:  # linger, then flush: one batch each
                    futures = [producer.send(topic, value=b"t+%d" % ms, partition=partition,
                                             timestamp_ms=TS + ms) for ms in batch]
                    producer.flush(timeout=30)
                    assert [f.get(timeout=10).offset for f in futures] == \
                        list(range(futures[0].get().offset, futures[0].get().offset + len(batch)))
            finally:
                producer.close(timeout=10)
        ch.confirm_delivery()
        key = next(k for k in (f"k{i}" for i in range(100)) if kafka_partition(k.encode(), 2) == 0)
        ch.basic_publish("", topic, b"amqp", pika.BasicProperties(headers={"x-message-key": key}))
        conn.close()
        records = kafka_python_records(proc.kafka_bootstrap, topic, 2, 12)
        amqp = [r for r in records if r[3] == b"amqp"]
        assert [(r[0], r[1]) for r in amqp] == [(0, 8)]
        yield proc, topic, amqp[0][5]


def stored_batches(records: list[Any]) -> None:
    """The records are where the batches put them (a sanity check of the setup)."""
    p0 = [(r[1], r[5]) for r in records if r[0] == 0][:8]
    assert p0 == [(i, TS + ms) for i, ms in enumerate(BATCH_A + BATCH_B)]


def kafka_python_lookup(proc: BrokerProcess, topic: str, amqp_ts: int) -> None:
    kafka = pytest.importorskip("kafka")
    tp0, tp1 = kafka.TopicPartition(topic, 0), kafka.TopicPartition(topic, 1)
    consumer = kafka.KafkaConsumer(bootstrap_servers=proc.kafka_bootstrap)
    try:
        for target, (offset, ts) in EXPECTED.items():
            found = consumer.offsets_for_times({tp0: TS + target})[tp0]
            assert found is not None, target
            assert (found.offset, found.timestamp) == (offset, ts or amqp_ts), target
        assert consumer.offsets_for_times({tp0: amqp_ts + 1})[tp0] is None
        found = consumer.offsets_for_times({tp1: TS + 6})[tp1]
        assert (found.offset, found.timestamp) == (1, TS + 15)  # inside the gzip batch
        found = consumer.offsets_for_times({tp1: TS + 25})[tp1]
        assert (found.offset, found.timestamp) == (2, TS + 25)
    finally:
        consumer.close()


def confluent_lookup(proc: BrokerProcess, topic: str) -> None:
    ck = pytest.importorskip("confluent_kafka")
    consumer = ck.Consumer({"bootstrap.servers": proc.kafka_bootstrap,
                            "group.id": f"t-{uuid.uuid4().hex[:6]}"})
    try:
        for target in EXPECTED:  # one lookup per target: librdkafka asks once per partition
            [tp] = consumer.offsets_for_times([ck.TopicPartition(topic, 0, TS + target)],
                                              timeout=10)
            assert tp.offset == EXPECTED[target][0], target
        [tp] = consumer.offsets_for_times([ck.TopicPartition(topic, 1, TS + 16)], timeout=10)
        assert tp.offset == 2
    finally:
        consumer.close()


def test_kafka_python_finds_the_record_inside_the_batch(
        broker_and_topic: tuple[BrokerProcess, str, int]) -> None:
    proc, topic, amqp_ts = broker_and_topic
    stored_batches(kafka_python_records(proc.kafka_bootstrap, topic, 2, 12))
    kafka_python_lookup(proc, topic, amqp_ts)


def test_confluent_finds_the_record_inside_the_batch(
        broker_and_topic: tuple[BrokerProcess, str, int]) -> None:
    proc, topic, _ = broker_and_topic
    confluent_lookup(proc, topic)


def test_after_a_restart(broker_and_topic: tuple[BrokerProcess, str, int]) -> None:
    proc, topic, amqp_ts = broker_and_topic
    proc.kill()  # no index saved on the way down
    proc.start()
    kafka_python_lookup(proc, topic, amqp_ts)
    confluent_lookup(proc, topic)


def test_kcat_starts_at_a_timestamp(broker_and_topic: tuple[BrokerProcess, str, int]) -> None:
    """kcat -o s@<ms> (librdkafka 2.0's offsets_for_times) starts at the record inside
    the batch."""
    import shutil
    import subprocess

    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed")
    proc, topic, _ = broker_and_topic
    for target in (15, 41, 101):
        out = subprocess.run(["kcat", "-C", "-b", proc.kafka_bootstrap, "-t", topic, "-p", "0",
                              "-o", f"s@{TS + target}", "-c", "1", "-e", "-q", "-f", "%o %T\\n"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        offset, ts = EXPECTED[target]
        assert out.split() == [str(offset), str(ts)], target
