"""Fetch through real Kafka clients, from streams filled over AMQP: kafka-python,
confluent-kafka and kcat read values, keys, headers and offsets in order per partition; a
Fetch waiting at the end gets a message published afterwards while another connection is
answered meanwhile; max_bytes bounds; offsets out of range."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from kafka.protocol.consumer import FetchRequest, FetchResponse
from kafka.protocol.metadata import MetadataRequest, MetadataResponse

from smartbroker.kafka import codec
from smartbroker.launcher import BrokerProcess
from tests.kafka.wire import connect, recv_frame

pytestmark = pytest.mark.extension
PARTITIONS = 3
COUNT = 30


def publish(broker: BrokerProcess, queue: str, messages: list[tuple[str, bytes]]) -> None:
    """(key, body) pairs to ``queue`` over AMQP, confirmed."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for key, body in messages:
            ch.basic_publish("", queue, body, pika.BasicProperties(
                headers={"x-message-key": key, "origin": "amqp"}, timestamp=1700000000))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def topic(kafka_broker: BrokerProcess) -> Iterator[tuple[str, dict[int, list[tuple[bytes, bytes]]]]]:
    """A 3-partition stream with COUNT keyed messages, and what each partition holds in
    order: (key, value), as an AMQP consumer of each partition sees them."""
    name = f"fetch-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True,
                     arguments={"x-queue-type": "stream", "x-partitions": PARTITIONS})
    publish(kafka_broker, name, [(f"key-{i % 7}", b"value-%d" % i) for i in range(COUNT)])
    expected: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
    ch.basic_qos(prefetch_count=100)
    got: list[tuple[int, int, bytes, bytes]] = []
    for method, props, body in ch.consume(name, arguments={"x-stream-offset": "first"},
                                          inactivity_timeout=5):
        if method is None:
            break
        h = props.headers
        got.append((h["x-stream-partition"], h["x-stream-offset"],
                    h["x-message-key"].encode(), body))
        ch.basic_ack(method.delivery_tag)
        if len(got) == COUNT:
            break
    ch.cancel()
    for p, offset, key, body in sorted(got):
        assert offset == len(expected[p])
        expected[p].append((key, body))
    assert len(got) == COUNT and all(expected.values()), "keys spread over every partition"
    try:
        yield name, expected
    finally:
        ch.queue_delete(name)
        conn.close()


@pytest.fixture
def empty(kafka_broker: BrokerProcess) -> Iterator[str]:
    """A one-partition stream of its own, for the tests that publish while they wait."""
    name = f"wait-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    try:
        yield name
    finally:
        ch.queue_delete(name)
        conn.close()


def test_kafka_python_reads_what_amqp_published(kafka_broker: BrokerProcess, topic: Any) -> None:
    from kafka import KafkaConsumer, TopicPartition

    name, expected = topic
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        tps = [TopicPartition(name, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning()  # ListOffsets EARLIEST, then Fetch
        got: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 20
        while sum(map(len, got.values())) < COUNT and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                got[tp.partition].extend(records)
    finally:
        consumer.close()
    for p in range(PARTITIONS):
        assert [r.offset for r in got[p]] == list(range(len(expected[p])))
        assert [(r.key, r.value) for r in got[p]] == expected[p]
        assert all(("origin", b"amqp") in r.headers for r in got[p])
        # the record time is the stream entry's; the AMQP property travels as a header
        assert all(abs(r.timestamp / 1000 - time.time()) < 600 for r in got[p])
        assert all(("x-amqp-timestamp", b"1700000000") in r.headers for r in got[p])


def test_confluent_kafka_assign_with_offsets(kafka_broker: BrokerProcess, topic: Any) -> None:
    from confluent_kafka import Consumer, TopicPartition

    name, expected = topic
    consumer = Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap,
                         "group.id": f"g-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        consumer.assign([TopicPartition(name, p, 0) for p in range(PARTITIONS)])
        got: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 20
        while sum(map(len, got.values())) < COUNT and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                assert msg.error() is None, msg.error()
                got[msg.partition()].append((msg.offset(), msg.key(), msg.value()))
    finally:
        consumer.close()
    for p in range(PARTITIONS):
        assert got[p] == [(i, k, v) for i, (k, v) in enumerate(expected[p])]


def test_aiokafka_reads_with_its_old_versions(kafka_broker: BrokerProcess, topic: Any) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    name, expected = topic

    async def read() -> dict[int, list[Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                                    enable_auto_commit=False, fetch_max_wait_ms=100)
        await consumer.start()
        got: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
        try:
            tps = [TopicPartition(name, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, 0)
            deadline = time.monotonic() + 20
            while sum(map(len, got.values())) < COUNT and time.monotonic() < deadline:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    got[tp.partition].extend(records)
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(read())
    for p in range(PARTITIONS):
        assert [(r.offset, r.key, r.value) for r in got[p]] == [
            (i, k, v) for i, (k, v) in enumerate(expected[p])]


def test_kafka_python_consumer_waiting_at_the_end_gets_a_later_publish(
        kafka_broker: BrokerProcess, empty: str) -> None:
    from kafka import KafkaConsumer, TopicPartition

    publish(kafka_broker, empty, [("a", b"before")])
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             enable_auto_commit=False, fetch_max_wait_ms=10000)
    try:
        tp = TopicPartition(empty, 0)
        consumer.assign([tp])
        consumer.seek(tp, 1)
        assert consumer.poll(timeout_ms=200) == {}  # nothing yet: its Fetch waits
        publish(kafka_broker, empty, [("a", b"after")])
        started = time.monotonic()
        got: list[Any] = []
        while not got and time.monotonic() - started < 20:
            got.extend(consumer.poll(timeout_ms=1000).get(tp, []))
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    assert [(r.offset, r.value) for r in got] == [(1, b"after")]
    assert elapsed < 5, "the waiting Fetch was answered by the publish, not its timeout"


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_reads_a_partition(kafka_broker: BrokerProcess, topic: Any) -> None:
    name, expected = topic
    out = subprocess.run(
        ["kcat", "-C", "-b", kafka_broker.kafka_bootstrap, "-t", name, "-p", "0", "-o", "beginning",
         "-e", "-J"], capture_output=True, text=True, timeout=30, check=True).stdout
    got = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(m["offset"], m["key"].encode(), m["payload"].encode()) for m in got] == [
        (i, k, v) for i, (k, v) in enumerate(expected[0])]


# -- on the wire: long-poll, bounds, errors --------------------------------------------------


def send(sock: socket.socket, request: Any, corr: int) -> None:
    request.with_header(correlation_id=corr, client_id="fetch-test")
    sock.sendall(bytes(request.encode(header=True, framed=True)))


def receive(sock: socket.socket, cls: Any, version: int) -> tuple[int, Any]:
    data = recv_frame(sock)
    return struct.unpack_from(">i", data)[0], cls.decode(data, version=version, header=True)


def fetch_request(name: str, offset: int, *, partition: int = 0, max_wait_ms: int = 0,
                  max_bytes: int = 1 << 20, partition_max_bytes: int = 1 << 20) -> Any:
    t = FetchRequest.FetchTopic
    return FetchRequest(
        version=11, replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=max_bytes,
        isolation_level=0, session_id=0, session_epoch=-1, forgotten_topics_data=[],
        rack_id="", topics=[t(topic=name, partitions=[t.FetchPartition(
            partition=partition, current_leader_epoch=-1, fetch_offset=offset,
            log_start_offset=-1, partition_max_bytes=partition_max_bytes)])])


def test_long_poll_wakes_on_an_amqp_publish_and_blocks_nothing(
        kafka_broker: BrokerProcess, empty: str) -> None:
    with connect(kafka_broker, timeout=20) as waiting, connect(kafka_broker, timeout=20) as other:
        send(waiting, fetch_request(empty, 0, max_wait_ms=15000), 1)
        # a request behind the Fetch on the same connection is answered after it
        send(waiting, MetadataRequest(version=1, topics=None), 2)
        # another connection is served while the Fetch waits: the loop is not blocked
        send(other, MetadataRequest(version=1, topics=None), 3)
        corr, meta = receive(other, MetadataResponse, 1)
        assert corr == 3 and empty in {t.name for t in meta.topics}
        # The Fetch's bytes reached the broker's socket before the Metadata's on `other`, so
        # the loop pass that answered `other` had the Fetch ready too: it is waiting now.
        result: dict[str, Any] = {}

        def read() -> None:
            result["fetch"] = receive(waiting, FetchResponse, 11)
            result["meta"] = receive(waiting, MetadataResponse, 1)
        reader = threading.Thread(target=read)
        reader.start()
        started = time.monotonic()
        publish(kafka_broker, empty, [("k", b"late")])
        reader.join(20)
        elapsed = time.monotonic() - started
    assert not reader.is_alive()
    corr, resp = result["fetch"]
    assert corr == 1
    part = resp.responses[0].partitions[0]
    assert part.error_code == 0 and part.high_watermark == 1
    assert [(r.offset, r.value) for r in codec.read_records(part.records)] == [(0, b"late")]
    assert elapsed < 10, "woken by the publish, not by max_wait_ms"
    assert result["meta"][0] == 2  # in request order, after the Fetch


def test_long_poll_times_out_empty(kafka_broker: BrokerProcess, empty: str) -> None:
    with connect(kafka_broker, timeout=20) as sock:
        started = time.monotonic()
        send(sock, fetch_request(empty, 0, max_wait_ms=300), 1)
        _, resp = receive(sock, FetchResponse, 11)
        assert time.monotonic() - started >= 0.25
    part = resp.responses[0].partitions[0]
    assert (part.error_code, part.high_watermark, part.records) == (0, 0, b"")


def test_max_bytes_bounds_the_answer(kafka_broker: BrokerProcess, topic: Any) -> None:
    name, expected = topic
    with connect(kafka_broker, timeout=20) as sock:
        send(sock, fetch_request(name, 0, partition_max_bytes=1), 1)
        _, one = receive(sock, FetchResponse, 11)
        send(sock, fetch_request(name, 0, max_bytes=200), 2)
        _, some = receive(sock, FetchResponse, 11)
    assert [r.offset for r in codec.read_records(one.responses[0].partitions[0].records)] == [0]
    records = some.responses[0].partitions[0].records
    assert len(records) <= 200
    assert 1 <= len(codec.read_records(records)) < len(expected[0])


def test_offset_out_of_range(kafka_broker: BrokerProcess, topic: Any) -> None:
    name, expected = topic
    with connect(kafka_broker, timeout=20) as sock:
        send(sock, fetch_request(name, len(expected[0]) + 5), 1)
        _, resp = receive(sock, FetchResponse, 11)
        part = resp.responses[0].partitions[0]
        assert (part.error_code, part.high_watermark) == (1, -1)
        send(sock, fetch_request(name + "-missing", 0, max_wait_ms=5000), 2)
        _, resp = receive(sock, FetchResponse, 11)
        assert resp.responses[0].partitions[0].error_code == 3


def test_kafka_produced_records_come_back_whole_and_wake_a_waiting_fetch(
        kafka_broker: BrokerProcess, empty: str) -> None:
    """Key, headers (a repeated name, an empty value) and the producer's timestamp survive the
    round trip through the stream; a Fetch waiting at the end is woken by a Kafka Produce."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, acks="all",
                             enable_idempotence=False)  # no InitProducerId yet
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             enable_auto_commit=False, fetch_max_wait_ms=10000)
    headers = [("h", b"1"), ("h", b"2"), ("empty", b"")]
    try:
        producer.send(empty, key=b"\x00key", value=b"first", headers=headers,
                      timestamp_ms=1600000000123, partition=0).get(timeout=10)
        tp = TopicPartition(empty, 0)
        consumer.assign([tp])
        consumer.seek(tp, 1)
        assert consumer.poll(timeout_ms=200) == {}  # waiting at the end
        producer.send(empty, key=None, value=b"second", partition=0).get(timeout=10)
        started = time.monotonic()
        got: list[Any] = []
        while not got and time.monotonic() - started < 20:
            got.extend(consumer.poll(timeout_ms=1000).get(tp, []))
        assert time.monotonic() - started < 5, "woken by the Produce, not the timeout"
    finally:
        producer.close()
        consumer.close()
    # from the start, by a consumer of its own (the first one's next Fetch now waits 10 s)
    reader = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                           enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        reader.assign([tp])
        reader.seek(tp, 0)
        first: list[Any] = []
        while not first and time.monotonic() - started < 20:
            first.extend(reader.poll(timeout_ms=1000).get(tp, []))
    finally:
        reader.close()
    assert [(r.offset, r.key, r.value) for r in got] == [(1, None, b"second")]
    r = first[0]
    assert (r.offset, r.key, r.value, r.timestamp) == (0, b"\x00key", b"first", 1600000000123)
    assert list(r.headers) == headers


def test_retention_moves_the_log_start(kafka_broker: BrokerProcess) -> None:
    """Records retention deleted are gone: a Fetch below the new log start is out of range,
    one at it reads on from there (retention runs every second)."""
    from tests.integration.helpers import eventually

    name = f"retained-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={
        "x-queue-type": "stream", "x-max-length-bytes": 20_000,
        "x-stream-max-segment-size-bytes": 4096})
    try:
        publish(kafka_broker, name, [("k", b"x" * 1024)] * 100)
        with connect(kafka_broker, timeout=20) as sock:
            def first_fetch_error() -> int:
                send(sock, fetch_request(name, 0), 1)
                return receive(sock, FetchResponse, 11)[1].responses[0].partitions[0].error_code
            eventually(lambda: first_fetch_error() == 1, timeout=10)
            end = 100
            send(sock, fetch_request(name, end), 2)  # at the end: log start and HW, no error
            part = receive(sock, FetchResponse, 11)[1].responses[0].partitions[0]
            assert (part.error_code, part.high_watermark) == (0, end)
            start = part.log_start_offset
            assert 0 < start < end
            send(sock, fetch_request(name, start), 3)
            part = receive(sock, FetchResponse, 11)[1].responses[0].partitions[0]
        assert codec.read_records(part.records)[0].offset == start
    finally:
        ch.queue_delete(name)
        conn.close()
