"""The topic configs Kafka accepts that this broker used to refuse with INVALID_CONFIG,
through confluent-kafka's AdminClient and a real producer (kafka/stored_configs.py):
validated as Kafka's LogConfig, described as set (DYNAMIC_TOPIC_CONFIG) or as the default,
and acted on where honoured: ``min.insync.replicas`` above our one replica refuses acks=all
with NOT_ENOUGH_REPLICAS (acks=1 still stored), ``flush.ms`` is the partitions' fsync
interval (its effect on fsyncs: tests/unit/queues/test_stream_flush_ms.py), an empty
``cleanup.policy`` is neither delete nor compact."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.kafka_producers import confluent_produce
from tests.kafka.raw_client import mark, quiet
from tests.kafka.topic_admin import create_topic, described, incremental

ck = pytest.importorskip("confluent_kafka")
cka = pytest.importorskip("confluent_kafka.admin")

DYNAMIC = cka.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
# every config now accepted, with a value that is not Kafka's default
ACCEPTED = {
    "flush.ms": "250", "flush.messages": "1000", "min.insync.replicas": "1",
    "file.delete.delay.ms": "1000", "segment.index.bytes": "4096",
    "segment.jitter.ms": "10", "segment.ms": "3600000", "index.interval.bytes": "8192",
    "preallocate": "true", "message.downconversion.enable": "false",
    "unclean.leader.election.enable": "true",
    "leader.replication.throttled.replicas": "0:0", "follower.replication.throttled.replicas": "*",
    "max.compaction.lag.ms": "86400000", "min.compaction.lag.ms": "5000",
    "min.cleanable.dirty.ratio": "0.1", "message.timestamp.type": "CreateTime",
    "message.timestamp.difference.max.ms": "3600000",
    "message.timestamp.before.max.ms": "7200000", "message.timestamp.after.max.ms": "60000",
}
REFUSED = [  # (config, value, Kafka's words in the refusal)
    ("flush.ms", "-1", "Value must be at least 0"),
    ("flush.messages", "0", "Value must be at least 1"),
    ("min.insync.replicas", "0", "Value must be at least 1"),
    ("min.insync.replicas", "two", "Not a number of type INT"),
    ("segment.index.bytes", "3", "Value must be at least 4"),
    ("preallocate", "yes", "either true or false"),
    ("min.cleanable.dirty.ratio", "1.5", "no more than 1"),
    ("message.timestamp.type", "AppendTime", "String must be one of: CreateTime, LogAppendTime"),
    ("leader.replication.throttled.replicas", "all", "must be the literal '*'"),
    ("max.compaction.lag.ms", "0", "Value must be at least 1"),
    ("cleanup.policy", "delete,", "cleanup.policy"),
    ("remote.storage.enable", "true", "not supported"),
]


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-stored-configs-") as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> Any:
    return cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})


def create(admin: Any, config: dict[str, str]) -> str:
    return create_topic(admin, config, 'stored-cfg')





def delivery_errors(broker: BrokerProcess, topic: str, acks: str) -> list[Any]:
    """Each record's delivery error (None: stored) from one producer with ``acks``."""
    producer = ck.Producer({"bootstrap.servers": broker.kafka_bootstrap, "acks": acks,
                            "enable.idempotence": False, "retries": 0,
                            "message.timeout.ms": 10000})
    errors: list[Any] = []
    for i in range(3):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i,
                         on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    return errors


def test_every_accepted_config_is_described_as_set(broker: BrokerProcess, admin: Any) -> None:
    since = mark(broker)
    topic = create(admin, ACCEPTED)
    got = described(admin, topic)
    assert {k: (got[k].value, got[k].source) for k in ACCEPTED} == {
        k: (v, DYNAMIC) for k, v in ACCEPTED.items()}
    assert got["preallocate"].value == "true"
    assert confluent_produce(broker, topic, [(b"k", b"v", ())], acks="all") == [(0, 0)]
    quiet(broker, since)


def test_unset_configs_describe_as_the_defaults(admin: Any) -> None:
    got = described(admin, create(admin, {}))
    assert (got["flush.ms"].value, got["flush.ms"].is_default) == ("1000", True)  # the broker's
    assert (got["min.insync.replicas"].value, got["min.insync.replicas"].is_default) == ("1", True)
    assert got["message.timestamp.type"].value == "CreateTime"
    assert got["min.cleanable.dirty.ratio"].value == "0.5"
    assert got["max.compaction.lag.ms"].value == str(2**63 - 1)


@pytest.mark.parametrize(("name", "value", "words"), REFUSED)
def test_values_kafka_refuses_are_invalid_config(admin: Any, name: str, value: str,
                                                 words: str) -> None:
    topic = f"stored-cfg-{uuid.uuid4().hex[:8]}"
    future = admin.create_topics([cka.NewTopic(topic, 1, 1, config={name: value})])[topic]
    with pytest.raises(ck.KafkaException) as info:
        future.result(30)
    assert info.value.args[0].code() == ck.KafkaError.INVALID_CONFIG
    assert words in info.value.args[0].str()


def test_min_insync_replicas_above_one_refuses_acks_all(broker: BrokerProcess,
                                                       admin: Any) -> None:
    """One replica is in sync: acks=all fails NOT_ENOUGH_REPLICAS and stores nothing,
    acks=1 is stored; back to the default (DELETE), acks=all is stored again."""
    topic = create(admin, {"min.insync.replicas": "2"})
    errors = delivery_errors(broker, topic, "all")
    assert [e.code() for e in errors] == [ck.KafkaError.NOT_ENOUGH_REPLICAS] * 3
    assert delivery_errors(broker, topic, "1") == [None] * 3
    incremental(admin, topic, "min.insync.replicas", None, cka.AlterConfigOpType.DELETE)
    assert described(admin, topic)["min.insync.replicas"].is_default
    landed = confluent_produce(broker, topic, [(b"k", b"v", ())], acks="all")
    assert landed == [(0, 3)]  # the three acks=all records were never stored
    incremental(admin, topic, "min.insync.replicas", "3", cka.AlterConfigOpType.SET)
    assert [e.code() for e in delivery_errors(broker, topic, "all")] == [
        ck.KafkaError.NOT_ENOUGH_REPLICAS] * 3


def test_empty_cleanup_policy_is_neither_delete_nor_compact(broker: BrokerProcess,
                                                             admin: Any) -> None:
    """Beside a ``delete`` topic with the same one-second retention and small segments,
    whose old segments go, the empty policy's topic keeps every record (and takes keyless
    ones: it is not compacted)."""
    small = {"retention.ms": "1000", "segment.bytes": "4096"}
    kept, deleted = create(admin, {"cleanup.policy": "", **small}), create(admin, small)
    got = described(admin, kept)
    assert (got["cleanup.policy"].value, got["cleanup.policy"].source) == ("", DYNAMIC)
    records = [(None, b"x" * 1000, ())] * 30
    for topic in (kept, deleted):
        assert confluent_produce(broker, topic, records, **{  # a batch per record: many
            "batch.num.messages": 1, "linger.ms": 0})[-1] == (0, 29)  # segments

    def first_offset(topic: str) -> int:
        return broker.get_json(f"/api/streams/%2F/{topic}")["partitions"][0]["first_offset"]

    deadline = time.monotonic() + 20
    while first_offset(deleted) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first_offset(deleted) > 0  # retention ran on the delete topic...
    assert first_offset(kept) == 0  # ...and left the empty policy's alone
    incremental(admin, kept, "cleanup.policy", "compact", cka.AlterConfigOpType.APPEND)
    assert described(admin, kept)["cleanup.policy"].value == "compact"


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_flush_ms_alters_and_survives_a_restart(broker: BrokerProcess) -> None:
    """Last in the module: it restarts the module's broker."""
    admin = cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    topic = create(admin, {"flush.ms": "50", "flush.messages": "1"})
    incremental(admin, topic, "flush.ms", "20", cka.AlterConfigOpType.SET)
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, set_config={"flush.ms": "30"})
    admin.alter_configs([res])[res].result(30)  # the whole set: flush.messages back to default
    del admin
    broker.restart()
    admin = cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    got = described(admin, topic)
    assert (got["flush.ms"].value, got["flush.ms"].source) == ("30", DYNAMIC)
    assert got["flush.messages"].is_default
    assert confluent_produce(broker, topic, [(b"k", b"v", ())], acks="all") == [(0, 0)]
