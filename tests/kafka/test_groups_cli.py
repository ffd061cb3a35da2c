"""A Kafka consumer group through `smartbroker groups` (the CLI, a subprocess against the
broker's management API): a confluent-kafka group that committed is described with its
member (client id and host) and lag, a reset is refused while it has members, and a reset
made with the CLI once it left is where a new Kafka consumer of the group starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BrokerProcess
from tests.kafka.group_helpers import DEADLINE, quick_rebalance_broker

pytestmark = pytest.mark.extension
COUNT = 10


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with quick_rebalance_broker("smartbroker-kafka-groups-cli-", 100) as proc:
        yield proc


def cli(broker: BrokerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smartbroker", *args, "--api", broker.api],
                          capture_output=True, text=True, timeout=60)


def describe(broker: BrokerProcess, group: str, topic: str) -> dict[str, Any]:
    done = cli(broker, "groups", "describe", group, "--queue", topic, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def topic(broker: BrokerProcess) -> str:
    """A one-partition topic (auto-created) holding COUNT records v0..v9."""
    from confluent_kafka import Producer

    name = f"cli-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": broker.kafka_bootstrap})
    for i in range(COUNT):
        producer.produce(name, b"v%d" % i, partition=0)
    assert producer.flush(30) == 0
    return name


def consumer(broker: BrokerProcess, group: str, topic: str) -> Any:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": group,
                  "client.id": "cli-test", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.subscribe([topic])
    return c


def poll(c: Any, n: int) -> list[Any]:
    got: list[Any] = []
    end = time.monotonic() + DEADLINE
    while len(got) < n and time.monotonic() < end:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
    return got


def test_describe_reset_and_resume(broker: BrokerProcess, topic: str) -> None:
    group = f"cli-{uuid.uuid4().hex[:6]}"
    first = consumer(broker, group, topic)
    try:
        assert [m.offset() for m in poll(first, 7)] == list(range(7))
        first.commit(asynchronous=False)  # 7: three records of lag
        doc = describe(broker, group, topic)
        assert (doc["state"], doc["protocol"], doc["lag"]) == ("active", "kafka", COUNT - 7)
        [member] = doc["members"]
        assert (member["client_id"], member["client_host"], member["protocol"],
                member["partitions"]) == ("cli-test", "/127.0.0.1", "kafka", [0])
        assert doc["partitions"][0]["owner"] == member["consumer_tag"]
        assert doc["partitions"][0]["committed_offset"] == 7

        text = cli(broker, "groups", "describe", group, "--queue", topic).stdout
        assert f"group '{group}' on stream '{topic}': active, 1 member(s), kafka members" in text
        assert "cli-test" in text and "/127.0.0.1" in text
        listed = json.loads(cli(broker, "groups", "list", "--json").stdout)
        assert [(g["queue"], g["lag"]) for g in listed if g["group"] == group] == [(topic, 3)]

        refused = cli(broker, "groups", "reset-offsets", group, "--queue", topic,
                      "--to-offset", "2")
        assert refused.returncode == 1
        assert refused.stderr == (f"error: consumer group '{group}' on stream '{topic}' has 1 "
                                  f"active Kafka member(s): stop its consumers before "
                                  f"resetting offsets\n")
    finally:
        first.close()  # LeaveGroup: the group is Empty at once

    doc = describe(broker, group, topic)
    assert (doc["state"], doc["members"], doc["lag"]) == ("empty", [], COUNT - 7)
    reset = cli(broker, "groups", "reset-offsets", group, "--queue", topic, "--to-offset", "2")
    assert reset.returncode == 0, reset.stderr
    assert describe(broker, group, topic)["partitions"][0]["committed_offset"] == 2

    second = consumer(broker, group, topic)
    try:
        got = poll(second, COUNT - 2)
        assert [(m.offset(), m.value()) for m in got] == [(i, b"v%d" % i) for i in range(2, COUNT)]
    finally:
        second.close()
