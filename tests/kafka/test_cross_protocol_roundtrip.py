"""AMQP in, Kafka out, and back: a message published over AMQP is read by a Kafka consumer
that produces its key, value, headers and timestamp unchanged to a second topic (what a
Kafka Streams-style relay does); an AMQP reader of that topic gets the original body, key,
properties (carried as ``x-amqp-*`` headers) and string headers, and the same partition
for the key. Then the other way: Kafka in, AMQP relay (re-publishing body and headers),
Kafka out, with key, headers and value intact."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from smartbroker.queues.partitioner import kafka_partition
from tests.kafka.amqp_streams import Delivery, deliveries, stream_arguments
from tests.kafka.cross_protocol_readers import kafka_python_records

pytestmark = pytest.mark.extension
PARTITIONS = 3
AMQP_TS = 1_650_000_000


def stream(ch: Any, name: str) -> None:
    ch.queue_declare(name, durable=True, arguments=stream_arguments(PARTITIONS))


def amqp_all(ch: Any, name: str, count: int) -> list[Delivery]:
    return deliveries(ch, name, count, **{"x-stream-offset": "first"})


def test_amqp_kafka_relay_amqp(kafka_broker: BrokerProcess) -> None:
    kafka = pytest.importorskip("kafka")
    uid = uuid.uuid4().hex[:8]
    source, target = f"rt-in-{uid}", f"rt-out-{uid}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    stream(ch, source)
    stream(ch, target)
    ch.confirm_delivery()
    count = 9
    for i in range(count):
        ch.basic_publish("", source, b"payload-%d" % i, pika.BasicProperties(
            headers={"x-message-key": f"user-{i % 3}", "tenant": "acme", "n": i},
            content_type="application/json", content_encoding="utf-8", correlation_id=f"c{i}",
            message_id=f"m{i}", reply_to="replies", priority=3, delivery_mode=2,
            app_id="shop", type="order", user_id="guest", timestamp=AMQP_TS + i))
    records = kafka_python_records(kafka_broker.kafka_bootstrap, source, PARTITIONS, count)
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, acks="all")
    try:
        for _p, _o, key, value, headers, ts in records:  # the relay: everything unchanged
            producer.send(target, key=key, value=value, headers=list(headers), timestamp_ms=ts)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    try:
        original = {body: (props, p) for props, body in amqp_all(ch, source, count)
                    for p in [props.headers["x-stream-partition"]]}
        relayed = amqp_all(ch, target, count)
        assert len(relayed) == count
        for props, body in relayed:
            before, partition = original[body]
            h = props.headers
            assert h["x-message-key"] == before.headers["x-message-key"]
            assert h["x-stream-partition"] == partition  # the key's partition both times
            assert partition == kafka_partition(h["x-message-key"].encode(), PARTITIONS)
            assert h["tenant"] == "acme"
            assert h["n"] == str(before.headers["n"])  # Kafka headers are bytes: text now
            for prop in ("content_type", "content_encoding", "correlation_id", "message_id",
                         "reply_to", "priority", "delivery_mode", "app_id", "type", "user_id",
                         "timestamp"):
                assert getattr(props, prop) == getattr(before, prop), prop
            assert not any(k.startswith("x-amqp-") for k in h), h  # properties again
    finally:
        ch.queue_delete(source)
        ch.queue_delete(target)
        conn.close()


def test_kafka_amqp_relay_kafka(kafka_broker: BrokerProcess) -> None:
    kafka = pytest.importorskip("kafka")
    uid = uuid.uuid4().hex[:8]
    source, target = f"rk-in-{uid}", f"rk-out-{uid}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    stream(ch, source)
    stream(ch, target)
    sent = [(b"k%d" % (i % 4), b"v%d" % i, [("trace", b"t%d" % i), ("bin", b"\x00\xff")])
            for i in range(8)]
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, acks="all")
    try:
        for key, value, headers in sent:
            producer.send(source, key=key, value=value, headers=headers)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    try:
        ch.confirm_delivery()
        for props, body in amqp_all(ch, source, len(sent)):  # the AMQP relay
            headers = {k: v for k, v in props.headers.items()
                       if k not in ("x-stream-offset", "x-stream-partition")}
            ch.basic_publish("", target, body, pika.BasicProperties(headers=headers))
        out = kafka_python_records(kafka_broker.kafka_bootstrap, target, PARTITIONS, len(sent))
        assert sorted((k, v, list(h)) for _p, _o, k, v, h, _ts in out) == sorted(
            (k, v, h) for k, v, h in sent)
        assert all(p == kafka_partition(k, PARTITIONS) for p, _o, k, *_ in out)
    finally:
        ch.queue_delete(source)
        ch.queue_delete(target)
        conn.close()


def test_amqp_transactions_seen_by_kafka_on_commit_only(kafka_broker: BrokerProcess) -> None:
    """tx.select publishes to a stream are invisible to Kafka (ListOffsets latest, Fetch)
    until tx.commit; a rollback leaves no offsets behind."""
    kafka = pytest.importorskip("kafka")
    name = f"rt-tx-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    tp = kafka.TopicPartition(name, 0)
    consumer = kafka.KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap)
    try:
        ch.tx_select()
        for i in range(3):
            ch.basic_publish("", name, b"rolled-back-%d" % i)
        assert consumer.end_offsets([tp]) == {tp: 0}
        ch.tx_rollback()
        for i in range(2):
            ch.basic_publish("", name, b"committed-%d" % i)
        assert consumer.end_offsets([tp]) == {tp: 0}
        ch.tx_commit()
        assert consumer.end_offsets([tp]) == {tp: 2}
        records = kafka_python_records(kafka_broker.kafka_bootstrap, name, 1, 2)
        assert [(r[1], r[3]) for r in records] == [(0, b"committed-0"), (1, b"committed-1")]
    finally:
        consumer.close()
        ch.queue_delete(name)
        conn.close()
