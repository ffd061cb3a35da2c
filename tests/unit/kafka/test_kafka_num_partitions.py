"""kafka_num_partitions is Kafka's num.partitions: the partition count of a topic created by
Produce or Metadata auto-creation and of a CreateTopics asking for -1 (librdkafka's own
suite assumes its clusters' 4), and what DescribeConfigs says of the broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.kafka import codec
from smartbroker.kafka.handlers import KafkaHandlers, Node
from tests.unit.kafka.kafka_fixtures import SESSION, broker_with

METADATA, CREATE, DESCRIBE = codec.REQUESTS[3], codec.REQUESTS[19], codec.REQUESTS[32]


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({})


def handle(broker: Broker, api_key: int, version: int, body: Any) -> Any:
    h = KafkaHandlers(broker, Node("h", 9092, Node.cluster_id_for("x"), "/"))
    return h.handle(codec.Request(codec.Header(api_key, version, 1, "c"), body), SESSION)


def auto_create(broker: Broker, name: str) -> None:
    body = METADATA(version=9, topics=[METADATA.MetadataRequestTopic(name=name)],
                    allow_auto_topic_creation=True, include_cluster_authorized_operations=False,
                    include_topic_authorized_operations=False)
    [topic] = handle(broker, 3, 9, body).topics
    assert topic.error_code == 0


def create(broker: Broker, name: str, partitions: int) -> int:
    t = CREATE.CreatableTopic
    body = CREATE(version=5, timeout_ms=1000, validate_only=False, topics=[
        t(name=name, num_partitions=partitions, replication_factor=-1, assignments=[],
          configs=[])])
    [result] = handle(broker, 19, 5, body).topics
    return result.error_code


def partitions(broker: Broker, name: str) -> int:
    return len(broker.vhosts["/"].queues[name].logs)


def broker_config(broker: Broker, key: str) -> tuple[str, bool]:
    r = DESCRIBE.DescribeConfigsResource
    body = DESCRIBE(version=1, resources=[r(resource_type=4, resource_name="0",
                                            configuration_keys=[key])],
                    include_synonyms=False, include_documentation=False)
    [result] = handle(broker, 32, 1, body).results
    [entry] = result.configs
    return entry.value, entry.config_source == 5  # DEFAULT_CONFIG


def test_default_is_one(broker: Broker) -> None:
    assert Config().kafka_num_partitions == 1
    auto_create(broker, "auto")
    assert create(broker, "made", -1) == 0
    assert (partitions(broker, "auto"), partitions(broker, "made")) == (1, 1)
    assert broker.vhosts["/"].queues["auto"].arguments == {"x-queue-type": "stream"}
    assert broker_config(broker, "num.partitions") == ("1", True)


def test_four_for_auto_created_and_minus_one(broker: Broker) -> None:
    broker.config.kafka_num_partitions = 4
    auto_create(broker, "auto")
    assert create(broker, "made", -1) == 0
    assert create(broker, "two", 2) == 0  # an explicit count still wins
    assert [partitions(broker, n) for n in ("auto", "made", "two")] == [4, 4, 2]
    assert broker_config(broker, "num.partitions") == ("4", False)


def test_env_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTBROKER_KAFKA_NUM_PARTITIONS", "4")
    assert Config().kafka_num_partitions == 4
