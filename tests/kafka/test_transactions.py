"""Kafka transactions with real clients: an aborted transaction is invisible to
read_committed consumers (confluent-kafka, kafka-python) and to AMQP readers, visible to
read_uncommitted; a committed one is visible; exactly-once read-process-write with
send_offsets_to_transaction (confluent-kafka and kafka-python); a second producer with the
same transactional id fences the first; a transaction past its timeout is aborted."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from typing import Any

import pika
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.structs import OffsetAndMetadata

from tests.conftest import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def producer(broker: BrokerProcess, txn_id: str, **extra: Any) -> Producer:
    p = Producer({"bootstrap.servers": broker.kafka_bootstrap, "transactional.id": txn_id,
                  **extra})
    p.init_transactions(30)
    return p


def values(broker: BrokerProcess, topic: str, isolation: str, expect: int,
           timeout: float = 10.0) -> list[bytes]:
    """What a consumer with ``isolation`` reads of partition 0: ``expect`` values, then
    half a second more to show nothing else comes."""
    c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": name("g"),
                  "enable.auto.commit": False, "isolation.level": isolation})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expect and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m.value())
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            m = c.poll(0.1)
            if m is not None and not m.error():
                got.append(m.value())
    finally:
        c.close()
    return got


def amqp_values(broker: BrokerProcess, queue: str, expect: int, timeout: float = 5) -> list[bytes]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    got: list[bytes] = []
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=100)
        for method, _props, body in ch.consume(queue, arguments={"x-stream-offset": "first"},
                                               inactivity_timeout=timeout if len(got) < expect else 0.5):
            if method is None:
                break
            got.append(body)
            ch.basic_ack(method.delivery_tag)
            if len(got) > expect:
                break
        ch.cancel()
    finally:
        conn.close()
    return got


@pytest.mark.extension  # AMQP readers of the stream too
def test_abort_then_commit(kafka_broker: BrokerProcess) -> None:
    topic = name("txn")
    p = producer(kafka_broker, name("tx"))
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, b"aborted-%d" % i, partition=0)
    p.flush(10)
    p.abort_transaction(30)
    assert values(kafka_broker, topic, "read_committed", 0) == []
    assert values(kafka_broker, topic, "read_uncommitted", 5) == [b"aborted-%d" % i for i in range(5)]
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, b"committed-%d" % i, partition=0)
    p.commit_transaction(30)
    committed = [b"committed-%d" % i for i in range(3)]
    assert values(kafka_broker, topic, "read_committed", 3) == committed
    assert amqp_values(kafka_broker, topic, 3) == committed  # AMQP readers: committed only


@pytest.mark.extension  # AMQP readers of the stream too
def test_open_transaction_holds_read_committed_back(kafka_broker: BrokerProcess) -> None:
    topic = name("txn-open")
    plain = Producer({"bootstrap.servers": kafka_broker.kafka_bootstrap})
    plain.produce(topic, b"before", partition=0)
    plain.flush(10)
    p = producer(kafka_broker, name("tx"))
    p.begin_transaction()
    p.produce(topic, b"inside", partition=0)
    p.flush(10)
    plain.produce(topic, b"after", partition=0)  # past the last stable offset
    plain.flush(10)
    assert values(kafka_broker, topic, "read_committed", 1) == [b"before"]
    assert amqp_values(kafka_broker, topic, 1, timeout=1) == [b"before"]
    p.commit_transaction(30)
    assert values(kafka_broker, topic, "read_committed", 3) == [b"before", b"inside", b"after"]
    assert amqp_values(kafka_broker, topic, 3) == [b"before", b"inside", b"after"]


def test_kafka_python_read_committed(kafka_broker: BrokerProcess) -> None:
    topic = name("txn-kp")
    p = KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, transactional_id=name("tx"))
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send(topic, b"gone", partition=0)
        p.abort_transaction()
        p.begin_transaction()
        p.send(topic, b"kept", partition=0)
        p.commit_transaction()
    finally:
        p.close(5)
    c = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                      isolation_level="read_committed", enable_auto_commit=False,
                      consumer_timeout_ms=3000)
    c.assign([KpTopicPartition(topic, 0)])
    c.seek_to_beginning()
    try:
        assert [m.value for m in c] == [b"kept"]
    finally:
        c.close()


def _fill_input(broker: BrokerProcess, topic: str, n: int) -> None:
    plain = Producer({"bootstrap.servers": broker.kafka_bootstrap})
    for i in range(n):
        plain.produce(topic, b"%d" % i, partition=0)
    assert plain.flush(10) == 0


def test_exactly_once_read_process_write_confluent(kafka_broker: BrokerProcess) -> None:
    src, dst, group = name("eos-in"), name("eos-out"), name("eos-g")
    _fill_input(kafka_broker, src, 10)
    c = Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap, "group.id": group,
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.assign([TopicPartition(src, 0, 0)])
    p = producer(kafka_broker, name("tx"))
    try:
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(got) < 10 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m)
        assert len(got) == 10
        p.begin_transaction()
        for m in got[:6]:
            p.produce(dst, m.value() + b"!", partition=0)
        p.send_offsets_to_transaction([TopicPartition(src, 0, got[5].offset() + 1)],
                                      c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        p.begin_transaction()  # the rest, aborted: neither output nor offset
        for m in got[6:]:
            p.produce(dst, m.value() + b"!", partition=0)
        p.send_offsets_to_transaction([TopicPartition(src, 0, 10)], c.consumer_group_metadata(), 30)
        p.abort_transaction(30)
        committed = c.committed([TopicPartition(src, 0)], 10)
    finally:
        c.close()
    assert committed[0].offset == 6
    assert values(kafka_broker, dst, "read_committed", 6) == [b"%d!" % i for i in range(6)]


def test_exactly_once_read_process_write_kafka_python(kafka_broker: BrokerProcess) -> None:
    src, dst, group = name("eos-kp-in"), name("eos-kp-out"), name("eos-kp-g")
    _fill_input(kafka_broker, src, 4)
    p = KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, transactional_id=name("tx"))
    c = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap, group_id=group,
                      enable_auto_commit=False, isolation_level="read_committed",
                      consumer_timeout_ms=3000)
    tp = KpTopicPartition(src, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    try:
        records = list(c)
        assert [r.value for r in records] == [b"0", b"1", b"2", b"3"]
        p.init_transactions()
        p.begin_transaction()
        for r in records:
            p.send(dst, r.value + b"!", partition=0)
        p.send_offsets_to_transaction({tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)},
                                      group)
        p.commit_transaction()
        assert c.committed(tp) == 4
    finally:
        p.close(5)
        c.close()
    assert values(kafka_broker, dst, "read_committed", 4) == [b"0!", b"1!", b"2!", b"3!"]


def test_second_producer_fences_the_first(kafka_broker: BrokerProcess) -> None:
    topic, txn_id = name("fence"), name("tx")
    first = producer(kafka_broker, txn_id)
    first.begin_transaction()
    first.produce(topic, b"zombie", partition=0)
    first.flush(10)
    second = producer(kafka_broker, txn_id)  # aborts the first one's transaction
    second.begin_transaction()
    second.produce(topic, b"live", partition=0)
    second.commit_transaction(30)
    with pytest.raises(KafkaException) as err:
        first.commit_transaction(10)
    assert err.value.args[0].fatal() or "fenced" in str(err.value).lower()
    assert values(kafka_broker, topic, "read_committed", 1) == [b"live"]


def test_timed_out_transaction_is_aborted(kafka_broker: BrokerProcess) -> None:
    topic = name("txn-timeout")
    p = producer(kafka_broker, name("tx"), **{"transaction.timeout.ms": 1000})
    p.begin_transaction()
    p.produce(topic, b"late", partition=0)
    p.flush(10)
    plain = Producer({"bootstrap.servers": kafka_broker.kafka_bootstrap})
    plain.produce(topic, b"plain", partition=0)
    plain.flush(10)
    # the broker aborts it after a second: the plain record becomes readable
    assert values(kafka_broker, topic, "read_committed", 1, timeout=10) == [b"plain"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_exactly_once_with_a_subscribed_consumer(kafka_broker: BrokerProcess) -> None:
    """KIP-447: the group metadata of a consumer that joined the group (member id and
    generation) goes with the offsets, and the coordinator checks it."""
    src, dst, group = name("eos-sub-in"), name("eos-sub-out"), name("eos-sub-g")
    _fill_input(kafka_broker, src, 3)
    c = Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed"})
    c.subscribe([src])
    p = producer(kafka_broker, name("tx"))
    try:
        got: list[Any] = []
        deadline = time.monotonic() + 30  # the group's initial rebalance delay included
        while len(got) < 3 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m)
        assert len(got) == 3
        p.begin_transaction()
        for m in got:
            p.produce(dst, m.value() + b"!", partition=0)
        p.send_offsets_to_transaction([TopicPartition(src, 0, got[-1].offset() + 1)],
                                      c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        committed = c.committed([TopicPartition(src, 0)], 10)
    finally:
        c.close()
    assert committed[0].offset == 3
    assert values(kafka_broker, dst, "read_committed", 3) == [b"0!", b"1!", b"2!"]


def test_aiokafka_transactions(kafka_broker: BrokerProcess) -> None:
    """aiokafka speaks the transaction APIs' old versions (v0)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as AioTopicPartition

    topic = name("txn-aio")

    async def scenario() -> list[bytes]:
        p = AIOKafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             transactional_id=name("tx"))
        await p.start()
        try:
            await p.begin_transaction()
            await p.send_and_wait(topic, b"gone", partition=0)
            await p.abort_transaction()
            async with p.transaction():
                await p.send_and_wait(topic, b"kept", partition=0)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             isolation_level="read_committed", enable_auto_commit=False)
        await c.start()
        try:
            tp = AioTopicPartition(topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            got = await c.getmany(tp, timeout_ms=3000)
            return [m.value for m in got.get(tp, [])]
        finally:
            await c.stop()

    assert asyncio.run(scenario()) == [b"kept"]


@pytest.fixture
def own_broker() -> Any:
    """A broker of this test alone: it gets killed."""
    with own_kafka("smartbroker-txn-", why="restarts smartbroker itself") as proc:
        yield proc


def test_open_transaction_survives_a_kill(own_broker: BrokerProcess) -> None:
    """The coordinator's state and the partition's open transaction come back after
    kill -9: the transaction still holds read_committed back, and commits afterwards."""
    topic = name("txn-kill")
    p = producer(own_broker, name("tx"))
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, b"%d" % i, partition=0)
    assert p.flush(10) == 0
    own_broker.kill()
    own_broker.start()
    assert values(own_broker, topic, "read_committed", 0, timeout=2) == []
    p.commit_transaction(60)  # the client reconnects to the same port
    assert values(own_broker, topic, "read_committed", 3) == [b"0", b"1", b"2"]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_reads_committed_records_only(kafka_broker: BrokerProcess) -> None:
    """kcat from Debian (librdkafka 2.0: read_committed is librdkafka's default) skips an
    aborted transaction and its markers; an idempotent kcat producer works too."""
    topic = name("txn-kcat")
    p = producer(kafka_broker, name("tx"))
    p.begin_transaction()
    p.produce(topic, b"aborted", partition=0)
    p.flush(10)
    p.abort_transaction(30)
    subprocess.run(["kcat", "-P", "-b", kafka_broker.kafka_bootstrap, "-t", topic, "-p", "0",
                    "-X", "enable.idempotence=true"], input=b"plain\n", check=True, timeout=30)
    out = subprocess.run(["kcat", "-C", "-b", kafka_broker.kafka_bootstrap, "-t", topic,
                          "-p", "0", "-o", "beginning", "-e", "-f", "%o %s\\n"],
                         capture_output=True, check=True, timeout=30).stdout
    assert out.decode().splitlines() == ["2 plain"]  # 0 aborted, 1 its marker


def test_kafka_python_second_producer_fences_the_first(kafka_broker: BrokerProcess) -> None:
    import kafka.errors as kafka_errors

    topic, txn_id = name("fence-kp"), name("tx")
    first = KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, transactional_id=txn_id)
    second = KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, transactional_id=txn_id)
    try:
        first.init_transactions()
        first.begin_transaction()
        first.send(topic, b"zombie", partition=0).get(10)
        second.init_transactions()  # retried past CONCURRENT_TRANSACTIONS, epoch bumped twice
        second.begin_transaction()
        second.send(topic, b"live", partition=0)
        second.commit_transaction()
        with pytest.raises(kafka_errors.KafkaError):
            first.commit_transaction()
    finally:
        first.close(5)
        second.close(5)
    assert values(kafka_broker, topic, "read_committed", 1) == [b"live"]
