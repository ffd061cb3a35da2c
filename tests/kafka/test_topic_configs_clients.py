"""A topic's max.message.bytes set by confluent-kafka's AdminClient, enforced on its
producer; compression.type=producer and message.format.version accepted, an unknown codec
refused."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import BrokerProcess

pytest.importorskip("confluent_kafka")


@pytest.fixture
def ck_admin(kafka_broker: BrokerProcess) -> Any:
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": kafka_broker.kafka_bootstrap})


def create(admin: Any, config: dict[str, str]) -> str:
    from confluent_kafka.admin import NewTopic
    name = f"cfg-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(timeout=15)
    return name


def produce_one(bootstrap: str, topic: str, size: int) -> Any:
    """The delivery report's error (None: stored) of one ``size``-byte record."""
    import confluent_kafka as ck
    producer = ck.Producer({"bootstrap.servers": bootstrap, "compression.type": "none",
                            "message.max.bytes": 1_000_000, "retries": 0})
    reports: list[Any] = []
    producer.produce(topic, b"x" * size, key=b"k", on_delivery=lambda err, _m: reports.append(err))
    assert producer.flush(15) == 0
    [err] = reports
    return err


def test_max_message_bytes_from_admin_client_refuses_a_larger_record(
        kafka_broker: BrokerProcess, ck_admin: Any) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import ConfigResource
    name = create(ck_admin, {"max.message.bytes": "2000"})
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    got = ck_admin.describe_configs([resource])[resource].result(timeout=15)
    assert got["max.message.bytes"].value == "2000" and not got["max.message.bytes"].is_default
    err = produce_one(kafka_broker.kafka_bootstrap, name, 5000)
    assert err is not None and err.code() == ck.KafkaError.MSG_SIZE_TOO_LARGE
    assert produce_one(kafka_broker.kafka_bootstrap, name, 100) is None


def test_producer_compression_and_format_version_are_accepted(
        kafka_broker: BrokerProcess, ck_admin: Any) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import ConfigResource, NewTopic
    name = create(ck_admin, {"compression.type": "producer", "message.format.version": "2.8"})
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    got = ck_admin.describe_configs([resource])[resource].result(timeout=15)
    assert got["compression.type"].value == "producer"
    assert got["message.format.version"].value == "3.0-IV1"
    brotli = f"cfg-{uuid.uuid4().hex[:8]}"  # Kafka's codecs are accepted (test_topic_
    future = ck_admin.create_topics([NewTopic(brotli, 1, 1,  # compression_type.py), not others
                                              config={"compression.type": "brotli"})])[brotli]
    with pytest.raises(ck.KafkaException) as info:
        future.result(timeout=15)
    assert info.value.args[0].code() == ck.KafkaError.INVALID_CONFIG
