"""A created topic survives kill -9 once CreateTopics answered: new streams' files are
written before the answer and fsynced off the event loop afterwards (store/pathsync.py),
and all the topics of one request share one definitions commit. After the kill every
topic is there with the topic id, partition count and partitioner it was created with."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.protocol import metadata

from smartbroker.launcher import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.raw_client import Raw, create_topics

pytestmark = pytest.mark.extension  # kill -9 of our own broker; Kafka has no such test


@pytest.fixture
def own_kafka_broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-create-kill-",
                   why="kills a smartbroker subprocess of its own") as proc:
        yield proc


def topic_ids(port: int, names: list[str]) -> dict[str, tuple[uuid.UUID, int]]:
    M = metadata.MetadataRequest
    with Raw(port) as raw:
        answer = raw.call(M, 10, topics=[M.MetadataRequestTopic(name=n, topic_id=None)
                                         for n in names],
                          allow_auto_topic_creation=False,
                          include_cluster_authorized_operations=False,
                          include_topic_authorized_operations=False)
    found = {}
    for t in answer.topics:
        assert t.error_code == 0, t
        found[t.name] = (uuid.UUID(str(t.topic_id)), len(t.partitions))
    return found


def test_topics_created_survive_kill_9_right_after_the_answer(
        own_kafka_broker: BrokerProcess) -> None:
    broker = own_kafka_broker
    base = uuid.uuid4().hex[:8]
    names = [f"{base}-made-{i}" for i in range(40)]
    with Raw(broker.kafka_port, timeout=60) as raw:
        answer = create_topics(raw, [(n, 1 + i % 3, 1) for i, n in enumerate(names)], 7)
    assert [t.error_code for t in answer.topics] == [0] * len(names)
    created = {t.name: uuid.UUID(str(t.topic_id)) for t in answer.topics}
    assert uuid.UUID(int=0) not in created.values()
    broker.kill()  # at once: the fsync round may not have run yet
    broker.start()
    after = topic_ids(broker.kafka_port, names)
    assert {n: tid for n, (tid, _) in after.items()} == created
    assert {n: parts for n, (_, parts) in after.items()} == \
        {n: 1 + i % 3 for i, n in enumerate(names)}
    partitioners = {p.read_text() for p in Path(broker.data_dir, "streams").glob("*/partitioner")}
    assert partitioners == {"murmur2\n"}  # new streams, never legacy
