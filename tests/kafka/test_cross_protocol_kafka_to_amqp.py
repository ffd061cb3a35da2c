"""Kafka in, AMQP out: records produced by kafka-python and confluent-kafka (keys, headers
with repeated names and null values, a null value, an empty value, chosen timestamps,
gzip batches) reach AMQP stream readers with the body, headers, ``x-message-key``, the
timestamp property and ``x-stream-offset`` equal to the offset the producer was told;
readers starting at an offset, a timestamp or as an ``x-consumer-group`` member start
where Kafka's offsets say; a topic created by CreateTopics is a durable stream in
/api/queues with its configs as arguments; producing to a classic queue's name fails."""

from __future__ import annotations

import datetime
import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from tests.kafka.amqp_streams import amqp_read, declare_stream, delete_queue
from tests.kafka.kafka_producers import confluent_produce

pytestmark = pytest.mark.extension
TS = 1_700_000_000_000  # ms; records i get TS + 1000 * i, one second apart



# (key, value, headers) of the records kafka-python produces, in order, one partition
RECORDS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    (b"k1", b"v0", [("trace", b"t0"), ("dup", b"first"), ("dup", b"second")]),
    (b"k2", None, []),  # a tombstone: an empty body over AMQP
    (b"k3", b"", [("empty", b"")]),  # an empty value, not a tombstone
    (None, b"no-key", [("null-header", None)]),
    (b"\x00\xffbin", b"binary key", [("x-amqp-content-type", b"text/plain"),
                                     ("x-amqp-message-id", b"id-4"),
                                     ("x-amqp-priority", b"high"),  # no octet: a header
                                     ("x-amqp-timestamp", b"1234567890")]),
    (b"k1", b"v5", [("x-message-key", b"spoof")]),  # a header named like the key
]


@pytest.fixture(scope="module")
def produced(kafka_broker: BrokerProcess) -> Iterator[tuple[str, list[int]]]:
    """A one-partition topic with RECORDS (gzip batches from confluent-kafka, lingering so
    that they share batches; kafka-python refuses null header values) and the offsets the
    producer was told."""
    name = f"x-kafka-{uuid.uuid4().hex[:8]}"
    declare_stream(kafka_broker, name)
    offsets = [o for _, o in confluent_produce(
        kafka_broker, name, RECORDS, timestamps=[TS + 1000 * i for i in range(len(RECORDS))],
        **{"acks": "all", "compression.type": "gzip", "linger.ms": 50})]
    try:
        yield name, offsets
    finally:
        delete_queue(kafka_broker, name)


def test_amqp_reader_sees_every_record(kafka_broker: BrokerProcess,
                                       produced: tuple[str, list[int]]) -> None:
    name, offsets = produced
    assert offsets == list(range(len(RECORDS)))
    got = amqp_read(kafka_broker, name, len(RECORDS), **{"x-stream-offset": "first"})
    assert len(got) == len(RECORDS)
    for i, ((props, body), (key, value, _h)) in enumerate(zip(got, RECORDS, strict=True)):
        h = props.headers
        assert h["x-stream-offset"] == offsets[i]
        assert h["x-stream-partition"] == 0
        assert body == (value or b"")
        assert props.timestamp == (TS + 1000 * i) // 1000 or i == 4  # 4: x-amqp-timestamp
        if key is None:
            assert "x-message-key" not in h
        else:
            assert h["x-message-key"] in (key, key.decode(errors="surrogateescape"))
    assert got[0][0].headers["trace"] == "t0"
    assert got[0][0].headers["dup"] == "second"  # repeated names: AMQP sees the last one
    assert "x-kafka-empty-value" not in got[1][0].headers  # null: the stream's tombstone
    assert got[2][0].headers["x-kafka-empty-value"] is True
    assert got[2][0].headers["empty"] == ""
    assert got[3][0].headers["null-header"] is None
    assert got[4][0].content_type == "text/plain" and got[4][0].message_id == "id-4"
    assert "x-amqp-content-type" not in got[4][0].headers
    assert got[4][0].priority is None and got[4][0].headers["x-amqp-priority"] == "high"
    assert got[4][0].timestamp == 1234567890  # the header wins over the record's time
    assert got[5][0].headers["x-message-key"] == "k1"  # the record key, not the header
    assert got[5][0].headers["x-kafka-header:x-message-key"] == "spoof"


def test_kafka_reads_back_what_it_produced(kafka_broker: BrokerProcess,
                                           produced: tuple[str, list[int]]) -> None:
    """The round trip loses nothing: null vs empty values and keys, repeated and null
    headers, the escaped header name, timestamps (kafka-python reads)."""
    from tests.kafka.cross_protocol_readers import kafka_python_records

    name, offsets = produced
    got = kafka_python_records(kafka_broker.kafka_bootstrap, name, 1, len(RECORDS))
    assert [(o, k, v, list(h), ts) for _, o, k, v, h, ts in got] == [
        (offsets[i], k, v, h, TS + 1000 * i) for i, (k, v, h) in enumerate(RECORDS)]


def test_amqp_reader_from_an_offset_and_a_timestamp(kafka_broker: BrokerProcess,
                                                    produced: tuple[str, list[int]]) -> None:
    name, offsets = produced
    from_offset = amqp_read(kafka_broker, name, 2, **{"x-stream-offset": offsets[3]})
    assert [p.headers["x-stream-offset"] for p, _ in from_offset] == offsets[3:5]
    when = datetime.datetime.fromtimestamp((TS + 4000) / 1000, tz=datetime.UTC)
    from_time = amqp_read(kafka_broker, name, 2, **{"x-stream-offset": when})
    assert [p.headers["x-stream-offset"] for p, _ in from_time] == offsets[4:6]


def test_amqp_group_member_resumes_from_a_kafka_commit(kafka_broker: BrokerProcess,
                                                       produced: tuple[str, list[int]]) -> None:
    """A Kafka consumer of group G commits offset 2; an AMQP x-consumer-group G member
    gets the records from offset 2 on, with x-stream-offset equal to the Kafka offsets."""
    ck = pytest.importorskip("confluent_kafka")
    name, offsets = produced
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = ck.Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap,
                            "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[ck.TopicPartition(name, 0, 2)], asynchronous=False)
    finally:
        consumer.close()
    got = amqp_read(kafka_broker, name, len(RECORDS) - 2,
                    **{"x-consumer-group": group, "x-stream-offset": "first"})
    assert [(p.headers["x-stream-offset"], body) for p, body in got] == [
        (offsets[i], RECORDS[i][1] or b"") for i in range(2, len(RECORDS))]


def test_confluent_gzip_batches_reach_amqp(kafka_broker: BrokerProcess) -> None:
    name = f"x-gzip-{uuid.uuid4().hex[:8]}"
    declare_stream(kafka_broker, name, partitions=3)
    try:
        landed = produce_keyed(kafka_broker, name, "gzip", 30)
        got = amqp_read(kafka_broker, name, 30, **{"x-stream-offset": "first"})
        seen = {(p.headers["x-stream-partition"], p.headers["x-stream-offset"]):
                (p.headers["x-message-key"], body) for p, body in got}
        assert seen == landed
    finally:
        delete_queue(kafka_broker, name)


def produce_keyed(broker: BrokerProcess, name: str, compression: str,
                  count: int) -> dict[tuple[int, int], tuple[str, bytes]]:
    """Produce ``count`` keyed records; (partition, offset) -> (key, value) as reported."""
    records = [(f"key-{i % 5}".encode(), b"zipped %d " % i * 20, ()) for i in range(count)]
    landed = confluent_produce(broker, name, records, **{
        "linger.ms": 20, "compression.type": compression, "partitioner": "murmur2_random",
        "message.send.max.retries": 0})
    return {at: (k.decode(), v) for at, (k, v, _) in zip(landed, records, strict=True)}


@pytest.mark.parametrize("compression", ["snappy", "lz4", "zstd"])
def test_confluent_other_codecs_reach_amqp(kafka_broker: BrokerProcess, compression: str) -> None:
    name = f"x-{compression}-{uuid.uuid4().hex[:8]}"
    declare_stream(kafka_broker, name)
    try:
        landed = produce_keyed(kafka_broker, name, compression, 5)
        got = amqp_read(kafka_broker, name, 5, **{"x-stream-offset": "first"})
        assert [body for _, body in got] == [v for _, v in landed.values()]
    finally:
        delete_queue(kafka_broker, name)


def test_a_kafka_created_topic_is_a_durable_stream(kafka_broker: BrokerProcess) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"x-created-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic(name, 2, 1, topic_configs={
            "retention.ms": "3600000", "retention.bytes": "1048576",
            "segment.bytes": "65536"})])
    finally:
        admin.close()
    try:
        with urllib.request.urlopen(api_request(kafka_broker, "/api/queues/%2F/" + name),
                                    timeout=5) as resp:
            queue = json.load(resp)
        assert queue["durable"] is True
        args = queue["arguments"]
        assert args["x-queue-type"] == "stream"
        assert args["x-partitions"] == 2
        assert args["x-max-age"] == "1h"
        assert args["x-max-length-bytes"] == 1048576
        assert args["x-stream-max-segment-size-bytes"] == 65536
        conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
        try:  # an AMQP declare with the same arguments is equivalent
            conn.channel().queue_declare(name, durable=True, arguments=args)
        finally:
            conn.close()
    finally:
        delete_queue(kafka_broker, name)


def api_request(broker: BrokerProcess, path: str) -> urllib.request.Request:
    import base64

    req = urllib.request.Request(f"http://{broker.host}:{broker.management_port}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    return req


def test_producing_to_a_classic_queue_name_fails(kafka_broker: BrokerProcess) -> None:
    """A classic queue is not a topic, and auto-creation does not turn it into one: the
    producer's record fails and the queue is left as it was."""
    ck = pytest.importorskip("confluent_kafka")
    name = f"x-classic-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    try:
        errors: list[Any] = []
        producer = ck.Producer({"bootstrap.servers": kafka_broker.kafka_bootstrap,
                                "message.timeout.ms": 5000, "enable.idempotence": False})
        producer.produce(name, b"lost", on_delivery=lambda err, _msg: errors.append(err))
        producer.flush(15)
        assert len(errors) == 1 and errors[0] is not None
        assert errors[0].code() == ck.KafkaError._MSG_TIMED_OUT  # the topic never appeared
        meta = producer.list_topics(name, timeout=10).topics[name]
        assert meta.error is not None
        assert meta.error.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART
        assert ch.queue_declare(name, passive=True).method.message_count == 0
    finally:
        ch.queue_delete(name)
        conn.close()
