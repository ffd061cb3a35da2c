"""Topic administration through real Kafka clients (kafka-python's KafkaAdminClient and
confluent-kafka's AdminClient): a created topic is a durable stream queue seen over AMQP
and HTTP with its configs as arguments; DescribeConfigs shows them; DeleteTopics removes
it; Kafka's error codes for what is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.kafka.stored_configs import STORED
from smartbroker.launcher import BrokerProcess

pytestmark = pytest.mark.extension


def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def amqp(kafka_broker: BrokerProcess) -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    try:
        yield conn
    finally:
        conn.close()


def exists_over_amqp(conn: Any, name: str) -> bool:
    ch = conn.channel()
    try:
        ch.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    ch.close()
    return True


def test_kafka_python_create_describe_delete(kafka_broker: BrokerProcess, amqp: Any) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    name = f"admin-kp-{uid()}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             request_timeout_ms=10000)
    try:
        admin.create_topics({name: {"num_partitions": 3, "replication_factor": 1,
                                    "configs": {"retention.ms": "86400000",
                                                "retention.bytes": "1048576",
                                                "cleanup.policy": "compact"}}})
        assert exists_over_amqp(amqp, name)
        q = kafka_broker.get_json(f"/api/queues/%2F/{name}")
        assert q["durable"] is True
        assert q["arguments"] == {"x-queue-type": "stream", "x-partitions": 3,
                                  "x-max-age": "1D", "x-max-length-bytes": 1048576,
                                  "x-cleanup-policy": "compact"}
        resource = [ConfigResource(ConfigResourceType.TOPIC, name)]
        every = admin.describe_configs(resource, config_filter="all")["topic"][name]
        assert {k: (v["value"], v["config_source"], v["read_only"]) for k, v in every.items()
                if k not in STORED} == {  # those all default (test_topic_configs_stored.py)
            "retention.ms": ("86400000", "DYNAMIC_TOPIC_CONFIG", False),
            "retention.bytes": ("1048576", "DYNAMIC_TOPIC_CONFIG", False),
            "cleanup.policy": ("compact", "DYNAMIC_TOPIC_CONFIG", False),
            "segment.bytes": ("500000000", "DEFAULT_CONFIG", False),
            "delete.retention.ms": ("86400000", "DEFAULT_CONFIG", False),
            "max.message.bytes": ("134217728", "DEFAULT_CONFIG", False),
            "compression.type": ("producer", "DEFAULT_CONFIG", False),
            "message.format.version": ("3.0-IV1", "DEFAULT_CONFIG", False)}
        modified = admin.describe_configs(resource)["topic"][name]  # the set ones only
        assert set(modified) == {"retention.ms", "retention.bytes", "cleanup.policy"}
        with pytest.raises(Exception, match="TopicAlreadyExists"):
            admin.create_topics({name: {"num_partitions": 1}})
        with pytest.raises(Exception, match="InvalidConfiguration|InvalidConfig"):
            admin.create_topics({f"x-{uid()}": {"configs": {"no.such.config": "1"}}})
        with pytest.raises(Exception, match="InvalidReplicationFactor"):
            admin.create_topics({f"x-{uid()}": {"num_partitions": 1, "replication_factor": 3}})
        admin.delete_topics([name])
        assert not exists_over_amqp(amqp, name)
        with pytest.raises(Exception, match="UnknownTopicOrPartition"):
            admin.delete_topics([name])
    finally:
        admin.close()


def test_confluent_kafka_create_describe_delete(kafka_broker: BrokerProcess, amqp: Any) -> None:
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    name = f"admin-ck-{uid()}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.kafka_bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1,
                                            config={"segment.bytes": "1048576"})])
    assert futures[name].result(timeout=10) is None
    assert exists_over_amqp(amqp, name)
    assert kafka_broker.get_json(f"/api/queues/%2F/{name}")["arguments"][
        "x-stream-max-segment-size-bytes"] == 1048576
    meta = admin.list_topics(topic=name, timeout=10)
    assert sorted(meta.topics[name].partitions) == [0, 1]

    resource = ConfigResource("topic", name)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["segment.bytes"].value == "1048576"
    assert not configs["segment.bytes"].is_default
    assert configs["retention.ms"].value == "-1" and configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete"

    broker_res = ConfigResource("broker", "0")
    broker_configs = admin.describe_configs([broker_res])[broker_res].result(timeout=10)
    assert broker_configs["auto.create.topics.enable"].value == "true"

    bad = {f"bad-{uid()}": 37, f"rf-{uid()}": 38, f"cfg-{uid()}": 40, "bad name": 17, name: 36}
    topics = [NewTopic(n, num_partitions=2000 if code == 37 else 1,
                       replication_factor=2 if code == 38 else 1,
                       config={"min.insync.replicas": "0"} if code == 40 else {})
              for n, code in bad.items()]
    for n, future in admin.create_topics(topics).items():
        with pytest.raises(ck.KafkaException) as info:
            future.result(timeout=10)
        assert info.value.args[0].code() == bad[n], n

    unknown = ConfigResource("topic", f"missing-{uid()}")
    with pytest.raises(ck.KafkaException) as info:
        admin.describe_configs([unknown])[unknown].result(timeout=10)
    assert info.value.args[0].code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART

    assert admin.delete_topics([name])[name].result(timeout=10) is None
    assert not exists_over_amqp(amqp, name)
    with pytest.raises(ck.KafkaException) as info:
        admin.delete_topics([name])[name].result(timeout=10)
    assert info.value.args[0].code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART


def test_a_classic_queue_is_not_a_topic(kafka_broker: BrokerProcess, amqp: Any) -> None:
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"classic-{uid()}"
    ch = amqp.channel()
    ch.queue_declare(name, durable=True)
    try:
        admin = AdminClient({"bootstrap.servers": kafka_broker.kafka_bootstrap})
        with pytest.raises(ck.KafkaException) as info:
            admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=10)
        assert info.value.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS
        with pytest.raises(ck.KafkaException) as info:
            admin.delete_topics([name])[name].result(timeout=10)
        assert info.value.args[0].code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART
        assert exists_over_amqp(amqp, name)
    finally:
        ch.queue_delete(name)


def test_a_created_topic_survives_a_restart(tmp_path: Any) -> None:
    """CreateTopics persists the stream as queue.declare does: after a restart the topic is
    there with its partitions and configs (a broker of its own: the shared one is not
    restarted)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    from tests.conftest import EXTERNAL_URL, assert_clean_log

    if EXTERNAL_URL:
        pytest.skip("the Kafka listener is smartbroker's own")
    proc = BrokerProcess(tmp_path / "data", kafka=True).start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=proc.kafka_bootstrap, request_timeout_ms=10000)
        try:
            admin.create_topics({"kept": {"num_partitions": 2,
                                          "configs": {"retention.ms": "7200000"}}})
        finally:
            admin.close()
        proc.restart()
        admin = KafkaAdminClient(bootstrap_servers=proc.kafka_bootstrap, request_timeout_ms=10000)
        try:
            assert "kept" in admin.list_topics()
            described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kept")])
            assert described["topic"]["kept"]["retention.ms"]["value"] == "7200000"
        finally:
            admin.close()
        assert proc.get_json("/api/queues/%2F/kept")["arguments"]["x-partitions"] == 2
    finally:
        proc.stop()
        assert_clean_log(proc)


def test_deleting_a_topic_being_read(kafka_broker: BrokerProcess, amqp: Any) -> None:
    """A consumer long-polling a topic that is deleted gets an error for it, not a hang or
    a traceback in the broker log (checked when the module's broker stops)."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

    name = f"reading-{uid()}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             request_timeout_ms=10000)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             enable_idempotence=False)
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                             fetch_max_wait_ms=500, enable_auto_commit=False)
    try:
        admin.create_topics({name: {"num_partitions": 1}})
        producer.send(name, b"one", partition=0).get(timeout=10)
        consumer.assign([TopicPartition(name, 0)])
        consumer.seek_to_beginning()
        got: list[bytes] = []
        for _ in range(20):
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
            if got:
                break
        assert got == [b"one"]
        admin.delete_topics([name])
        assert not exists_over_amqp(amqp, name)
        assert consumer.poll(timeout_ms=1500) == {}
    finally:
        consumer.close()
        producer.close()
        admin.close()
