"""Committed offsets through real Kafka clients, on the store AMQP consumer groups use:
kafka-python and confluent-kafka commit with assign(), a new consumer of the group resumes
there, /api/groups describes the group (no members), and an AMQP x-consumer-group consumer
of the same name resumes from the Kafka-committed offset; aiokafka and kcat too."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pika
import pytest

from smartbroker.launcher import BrokerProcess

pytestmark = pytest.mark.extension
COUNT = 10


@pytest.fixture
def topic(kafka_broker: BrokerProcess) -> Iterator[str]:
    """A one-partition stream declared over AMQP holding COUNT messages m0..m9."""
    name = f"commit-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    for i in range(COUNT):
        ch.basic_publish("", name, b"m%d" % i)
    try:
        yield name
    finally:
        ch.queue_delete(name)
        conn.close()


def group_doc(broker: BrokerProcess, name: str, group: str) -> dict[str, Any]:
    resp = httpx.get(f"{broker.api}/api/groups/%2F/{name}/{group}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def amqp_group_reads(broker: BrokerProcess, name: str, group: str) -> list[tuple[int, bytes]]:
    """(offset, body) an AMQP group consumer of ``group`` receives up to the end."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=100)
        got = []
        for method, props, body in ch.consume(name, inactivity_timeout=5, arguments={
                "x-consumer-group": group, "x-stream-offset": "first"}):
            if method is None:
                break
            got.append((props.headers["x-stream-offset"], body))
            ch.basic_ack(method.delivery_tag)  # a group member commits as it acks
            if got[-1][0] == COUNT - 1:
                break
        ch.cancel()
        return got
    finally:
        conn.close()


def test_kafka_python_commit_and_resume(kafka_broker: BrokerProcess, topic: str) -> None:
    from kafka import KafkaConsumer, TopicPartition

    group = f"kp-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(topic, 0)

    def consumer() -> Any:
        c = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap, group_id=group,
                          enable_auto_commit=False, fetch_max_wait_ms=100, max_poll_records=4,
                          auto_offset_reset="earliest")
        c.assign([tp])
        return c

    first = consumer()
    try:
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            got = first.poll(timeout_ms=500).get(tp, [])
        assert [r.value for r in got] == [b"m0", b"m1", b"m2", b"m3"]
        first.commit()  # the consumed position: 4
        assert first.committed(tp) == 4
    finally:
        first.close()

    second = consumer()
    try:
        assert second.committed(tp) == 4
        got = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            got = second.poll(timeout_ms=500).get(tp, [])
        assert got and got[0].offset == 4 and got[0].value == b"m4"
    finally:
        second.close()

    doc = group_doc(kafka_broker, topic, group)  # a Kafka-only group: offsets, no members
    assert doc["state"] == "empty" and doc["members"] == []
    assert [(p["partition"], p["committed_offset"], p["lag"]) for p in doc["partitions"]] == [
        (0, 4, COUNT - 4)]
    assert group in [g["name"] for g in httpx.get(f"{kafka_broker.api}/api/groups",
                                                   timeout=10).json()]
    assert amqp_group_reads(kafka_broker, topic, group) == [
        (i, b"m%d" % i) for i in range(4, COUNT)]


def test_confluent_kafka_commit_committed_and_amqp(kafka_broker: BrokerProcess, topic: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    group = f"ck-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap, "group.id": group,
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(num_messages=3 - len(got), timeout=0.5)
                       if m.error() is None)
        assert [m.value() for m in got] == [b"m0", b"m1", b"m2"]
        consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert tp.error is None and tp.offset == 3
    finally:
        consumer.close()
    assert amqp_group_reads(kafka_broker, topic, group) == [
        (i, b"m%d" % i) for i in range(3, COUNT)]

    # and the other way: what the AMQP group committed by acking, Kafka reads
    consumer = Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        # the acks were handled before the AMQP connection's close-ok, so no wait here
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert tp.offset == COUNT
    finally:
        consumer.close()


def test_commit_to_a_group_with_amqp_members_is_refused(kafka_broker: BrokerProcess,
                                                        topic: str) -> None:
    """A group's members come from one protocol at a time: while an AMQP member is in the
    group, a Kafka commit for it is UNKNOWN_MEMBER_ID (Kafka's answer to a commit from
    outside a non-empty group) and the stored offset does not move."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    group = f"busy-{uuid.uuid4().hex[:6]}"
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    consumer = Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(topic, lambda *a: None, arguments={  # at the end: nothing delivered
            "x-consumer-group": group, "x-stream-offset": "next"})
        assert group_doc(kafka_broker, topic, group)["state"] == "active"
        with pytest.raises(KafkaException) as caught:
            consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
        assert caught.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert tp.offset == COUNT  # where the AMQP group started, not the refused 7
    finally:
        consumer.close()
        conn.close()


def test_aiokafka_commit_and_committed(kafka_broker: BrokerProcess, topic: str) -> None:
    """aiokafka speaks the oldest versions (FindCoordinator v0, OffsetCommit v2,
    OffsetFetch v1)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    group = f"aio-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(topic, 0)

    async def run() -> tuple[int | None, int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                                    group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            before = await consumer.committed(tp)
            await consumer.commit({tp: 6})
            return before, await consumer.committed(tp)
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == (None, 6)
    assert group_doc(kafka_broker, topic, group)["partitions"][0]["committed_offset"] == 6


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_resumes_from_stored_offset_and_commits(kafka_broker: BrokerProcess,
                                                     topic: str) -> None:
    """kcat (librdkafka 2.0, legacy consumer) with ``-o stored``: OffsetFetch gives where to
    start, and its auto-commit stores where it stopped."""
    from confluent_kafka import Consumer, TopicPartition

    group = f"kcat-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": kafka_broker.kafka_bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    finally:
        consumer.close()
    out = subprocess.run(
        ["kcat", "-C", "-b", kafka_broker.kafka_bootstrap, "-t", topic, "-p", "0", "-o", "stored",
         "-e", "-q", "-X", f"group.id={group}", "-f", "%o %s\\n"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines() == [f"{i} m{i}" for i in range(4, COUNT)]
    assert group_doc(kafka_broker, topic, group)["partitions"][0]["committed_offset"] == COUNT
