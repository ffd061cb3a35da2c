"""Kafka groups when something goes away: a member killed with SIGKILL leaves by its
session timeout, a broker restart loses no committed offset (the members rejoin and
resume where the group committed), and a static member (group.instance.id) that
restarts gets its partitions back without a rebalance of the others."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import EXTERNAL_URL, BrokerProcess
from tests.kafka.group_helpers import create_topic, quick_rebalance_broker, wait_for
from tests.kafka.test_groups_members import ALL, PARTITIONS, shared_once

pytestmark = pytest.mark.skipif(bool(EXTERNAL_URL),
                                reason="the Kafka listener is smartbroker's own")


@pytest.fixture
def broker() -> Iterator[BrokerProcess]:
    """A broker of its own (one test restarts it), with a short initial rebalance delay."""
    with quick_rebalance_broker("smartbroker-kafka-failover-", 200) as proc:
        yield proc


_MEMBER = """
import sys
from kafka import KafkaConsumer
c = KafkaConsumer(bootstrap_servers=sys.argv[1], group_id=sys.argv[2],
                  session_timeout_ms=6000, heartbeat_interval_ms=500)
c.subscribe([sys.argv[3]])
while True:
    c.poll(timeout_ms=100)
    if c.assignment():
        print("assigned", flush=True)
"""


def test_a_killed_member_leaves_by_session_timeout(broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer

    topic = create_topic(broker, "fo", PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:6]}"
    child = subprocess.Popen([sys.executable, "-c", _MEMBER, broker.kafka_bootstrap, group,
                              topic], stdout=subprocess.PIPE, text=True)
    me = KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap, group_id=group,
                       session_timeout_ms=6000, heartbeat_interval_ms=500)
    try:
        me.subscribe([topic])

        def mine() -> set[int]:
            return {tp.partition for tp in me.assignment()}

        wait_for(lambda: me.poll(timeout_ms=50), lambda: 0 < len(mine()) < PARTITIONS,
                 "the child and this consumer sharing")
        os.kill(child.pid, signal.SIGKILL)  # no LeaveGroup: only its session can end it
        child.wait()
        killed = time.monotonic()
        wait_for(lambda: me.poll(timeout_ms=50), lambda: mine() == ALL,
                 "this consumer taking all after the child's session timeout")
        assert time.monotonic() - killed > 4.0  # the session timeout (6 s), not at once
    finally:
        me.close()
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_restart_resumes_the_group_where_it_committed(broker: BrokerProcess) -> None:
    from confluent_kafka import Consumer, Producer

    topic = create_topic(broker, "fo", PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:6]}"
    producer = Producer({"bootstrap.servers": broker.kafka_bootstrap})
    for i in range(40):
        producer.produce(topic, value=f"a{i}".encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0
    conf = {"bootstrap.servers": broker.kafka_bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
            "reconnect.backoff.max.ms": 500}
    consumers = [Consumer(conf) for _ in range(2)]
    seen: list[str] = []
    try:
        for c in consumers:
            c.subscribe([topic])

        def poll_all() -> None:
            for c in consumers:
                msg = c.poll(0.05)
                if msg is not None and msg.error() is None:
                    seen.append(msg.value().decode())

        wait_for(lambda: poll_all(), lambda: len(seen) == 40, "the first 40 records")
        for c in consumers:
            c.commit(asynchronous=False)  # both members commit what they consumed
        broker.stop()
        broker.start()
        producer = Producer({"bootstrap.servers": broker.kafka_bootstrap})
        for i in range(20):
            producer.produce(topic, value=f"b{i}".encode(), partition=i % PARTITIONS)
        assert producer.flush(30) == 0
        seen.clear()
        # the members rejoin (their old ids are unknown now) and go on from the commits
        wait_for(lambda: poll_all(), lambda: len(seen) >= 20, "the 20 records after it")
        assert sorted(seen) == sorted(f"b{i}" for i in range(20))
        wait_for(lambda: poll_all(), lambda: shared_once(
            [{tp.partition for tp in c.assignment()} for c in consumers]), "two members again")
    finally:
        for c in consumers:
            c.close()


def test_a_static_member_restarts_without_a_rebalance(broker: BrokerProcess) -> None:
    from confluent_kafka import Consumer

    topic = create_topic(broker, "fo", PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:6]}"
    assigned: dict[str, int] = {"a": 0, "b": 0}

    def member(name: str) -> Any:
        c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": group,
                      "group.instance.id": f"instance-{name}", "session.timeout.ms": 30000,
                      "heartbeat.interval.ms": 500})

        def on_assign(consumer: Any, partitions: list[Any]) -> None:
            assigned[name] += 1
        c.subscribe([topic], on_assign=on_assign)
        return c

    a, b = member("a"), member("b")
    closed: list[Any] = []
    try:
        def parts(c: Any) -> set[int]:
            return {tp.partition for tp in c.assignment()}

        wait_for(lambda: [a.poll(0.05), b.poll(0.05)], lambda: shared_once([parts(a), parts(b)]),
                 "two static members sharing")
        before_a, before_b, b_assigns = parts(a), parts(b), assigned["b"]
        a.close()  # a static member does not leave the group when it closes (KIP-345)
        closed.append(a)
        again = member("a")
        wait_for(lambda: [again.poll(0.05), b.poll(0.05)], lambda: parts(again) == before_a,
                 "the restarted static member getting its partitions back")
        deadline = time.monotonic() + 2.0  # b keeps polling: a rebalance would reach it
        while time.monotonic() < deadline:
            b.poll(0.05)
            again.poll(0.05)
        assert assigned["b"] == b_assigns and parts(b) == before_b
        a = again
    finally:
        for c in (a, b):
            if c not in closed:
                c.close()
