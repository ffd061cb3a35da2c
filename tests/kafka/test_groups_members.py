"""Kafka's classic group protocol with real clients: two members of one group on a
4-partition topic share its partitions, each exactly once, and when one leaves the other
gets them all (kafka-python, confluent-kafka with range, roundrobin and cooperative-sticky,
aiokafka, kcat's balanced consumer)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BrokerProcess
from tests.kafka.group_helpers import DEADLINE, create_topic, quick_rebalance_broker, wait_for

PARTITIONS = 4
ALL = set(range(PARTITIONS))


@pytest.fixture(scope="module")
def group_broker() -> Iterator[BrokerProcess]:
    with quick_rebalance_broker("smartbroker-kafka-groups-", 200) as proc:
        yield proc


@pytest.fixture
def topic(group_broker: BrokerProcess) -> str:
    return create_topic(group_broker, "grp", PARTITIONS)


def shared_once(assignments: list[set[int]]) -> bool:
    """Every partition assigned exactly once, and every member has some."""
    return (all(assignments) and sum(map(len, assignments)) == PARTITIONS
            and set().union(*assignments) == ALL)


def test_kafka_python_two_members_then_one(group_broker: BrokerProcess, topic: str) -> None:
    from kafka import KafkaConsumer

    group = f"g-{uuid.uuid4().hex[:6]}"
    consumers = [KafkaConsumer(bootstrap_servers=group_broker.kafka_bootstrap, group_id=group,
                               session_timeout_ms=10000, heartbeat_interval_ms=500)
                 for _ in range(2)]
    try:
        for c in consumers:
            c.subscribe([topic])

        def parts(c: Any) -> set[int]:
            return {tp.partition for tp in c.assignment()}

        wait_for(lambda: [c.poll(timeout_ms=50) for c in consumers],
                 lambda: shared_once([parts(c) for c in consumers]), "two members sharing")
        consumers[1].close()  # sends LeaveGroup
        wait_for(lambda: consumers[0].poll(timeout_ms=50),
                 lambda: parts(consumers[0]) == ALL, "the remaining member taking all")
    finally:
        for c in consumers:
            c.close()


def confluent_consumer(broker: BrokerProcess, group: str, topic: str, **extra: Any) -> Any:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": group,
                  "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
                  "topic.metadata.refresh.interval.ms": 1000, **extra})
    c.subscribe([topic])
    return c


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_confluent_kafka_assignors(group_broker: BrokerProcess, topic: str,
                                   strategy: str) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    extra = {"partition.assignment.strategy": strategy}
    consumers = [confluent_consumer(group_broker, group, topic, **extra) for _ in range(2)]
    closed: list[Any] = []
    try:
        def parts(c: Any) -> set[int]:
            return {tp.partition for tp in c.assignment()}

        wait_for(lambda: [c.poll(0.05) for c in consumers],
                 lambda: shared_once([parts(c) for c in consumers]), f"{strategy}: sharing")
        consumers[1].close()  # LeaveGroup
        closed.append(consumers[1])
        wait_for(lambda: consumers[0].poll(0.05), lambda: parts(consumers[0]) == ALL,
                 f"{strategy}: the remaining member taking all")
    finally:
        for c in consumers:
            if c not in closed:
                c.close()


def test_aiokafka_two_members_then_one(group_broker: BrokerProcess, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer

    async def scenario() -> None:
        group = f"g-{uuid.uuid4().hex[:6]}"
        consumers = [AIOKafkaConsumer(topic, bootstrap_servers=group_broker.kafka_bootstrap,
                                      group_id=group, session_timeout_ms=10000,
                                      heartbeat_interval_ms=500) for _ in range(2)]
        for c in consumers:
            await c.start()
        try:
            end = time.monotonic() + DEADLINE
            while not shared_once([{tp.partition for tp in c.assignment()} for c in consumers]):
                assert time.monotonic() < end, "aiokafka: two members sharing"
                await asyncio.sleep(0.05)
            await consumers[1].stop()
            while {tp.partition for tp in consumers[0].assignment()} != ALL:
                assert time.monotonic() < end, "aiokafka: the remaining member taking all"
                await asyncio.sleep(0.05)
        finally:
            for c in consumers:
                await c.stop()

    asyncio.run(scenario())


_KCAT_ASSIGNED = re.compile(r"rebalanced \(memberid ([^)]*)\): assigned: (.*)")


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_balanced_consumers(group_broker: BrokerProcess, topic: str) -> None:
    """kcat -G (librdkafka 2.0's balanced consumer): two of them share the topic; when one
    exits, the other is assigned everything."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    cmd = ["kcat", "-b", group_broker.kafka_bootstrap, "-G", group,
           "-X", "session.timeout.ms=10000", "-X", "heartbeat.interval.ms=500", topic]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    latest: list[set[int]] = [set(), set()]
    try:
        import selectors

        sel = selectors.DefaultSelector()
        for i, p in enumerate(procs):
            assert p.stderr is not None
            sel.register(p.stderr, selectors.EVENT_READ, i)

        def read() -> None:
            for key, _ in sel.select(timeout=0.2):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                match = _KCAT_ASSIGNED.search(line)
                if match:
                    latest[key.data] = {int(p) for p in re.findall(r"\[(\d+)\]", match[2])}
                elif "revoked" in line:
                    latest[key.data] = set()

        wait_for(read, lambda: shared_once(latest), "two kcat consumers sharing")
        procs[1].terminate()  # kcat closes its consumer on SIGTERM: LeaveGroup
        procs[1].wait(timeout=30)
        sel.unregister(procs[1].stderr)
        wait_for(read, lambda: latest[0] == ALL, "the remaining kcat taking all")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
