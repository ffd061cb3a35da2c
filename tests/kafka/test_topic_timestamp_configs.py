"""A topic's timestamp configs (kafka/timestamps.py), set with confluent-kafka's
AdminClient. ``message.timestamp.type=LogAppendTime``: whatever timestamp a producer
gives, its records carry the broker's append time, which the produce response reports and
Kafka consumers and AMQP readers see; a CreateTime topic keeps the producer's; a compacted
topic's records get the append time too. ``message.timestamp.before.max.ms`` /
``after.max.ms`` / ``difference.max.ms``: a record too far from the broker's clock is
refused INVALID_TIMESTAMP (nothing of the batch stored), others are stored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BrokerProcess
from tests.kafka.amqp_streams import amqp_read
from tests.kafka.cross_protocol_readers import confluent_records
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.raw_client import mark, quiet
from tests.kafka.topic_admin import create_topic

ck = pytest.importorskip("confluent_kafka")
cka = pytest.importorskip("confluent_kafka.admin")

OLD = 1_000_000_000_000  # 2001: the producer's timestamp on every record
COUNT = 20


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-append-time-") as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> Any:
    return cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})


def create(admin: Any, config: dict[str, str]) -> str:
    return create_topic(admin, config, 'append-time')



def produce(broker: BrokerProcess, topic: str, compression: str,
            timestamp: int = OLD) -> list[tuple[int, int]]:
    """(timestamp type, timestamp) of each record's delivery report, in order."""
    producer = ck.Producer({"bootstrap.servers": broker.kafka_bootstrap, "acks": "all",
                            "compression.type": compression, "linger.ms": 5,
                            "enable.idempotence": False})
    reports: list[tuple[int, int]] = []

    def done(err: Any, msg: Any) -> None:
        assert err is None, err
        reports.append(msg.timestamp())
    for i in range(COUNT):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, timestamp=timestamp,
                         on_delivery=done)
    assert producer.flush(30) == 0
    return reports


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_log_append_time_replaces_the_producers_timestamps(broker: BrokerProcess, admin: Any,
                                                           compression: str) -> None:
    since = mark(broker)
    topic = create(admin, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    reports = produce(broker, topic, compression)
    after = int(time.time() * 1000)
    assert {kind for kind, _ in reports} == {ck.TIMESTAMP_LOG_APPEND_TIME}
    assert all(before <= ts <= after for _, ts in reports), (before, reports, after)
    read = confluent_records(broker.kafka_bootstrap, topic, 1, COUNT)
    assert len(read) == COUNT and all(before <= r[5] <= after for r in read)
    amqp = amqp_read(broker, topic, COUNT, **{"x-stream-offset": "first"})
    assert all(before // 1000 <= props.timestamp <= after // 1000 + 1 for props, _ in amqp)
    quiet(broker, since)


def test_create_time_keeps_the_producers_timestamps(broker: BrokerProcess, admin: Any) -> None:
    topic = create(admin, {"message.timestamp.type": "CreateTime"})
    assert {r for r in produce(broker, topic, "none")} == {(ck.TIMESTAMP_CREATE_TIME, OLD)}
    assert {r[5] for r in confluent_records(broker.kafka_bootstrap, topic, 1, COUNT)} == {OLD}


def test_compacted_topic_records_get_the_append_time(broker: BrokerProcess, admin: Any) -> None:
    topic = create(admin, {"message.timestamp.type": "LogAppendTime", "cleanup.policy": "compact"})
    before = int(time.time() * 1000)
    produce(broker, topic, "none")
    after = int(time.time() * 1000)
    read = confluent_records(broker.kafka_bootstrap, topic, 1, COUNT)
    assert len(read) == COUNT and all(before <= r[5] <= after for r in read), read[:2]


def test_altered_to_log_append_time_applies_at_once(broker: BrokerProcess, admin: Any) -> None:
    topic = create(admin, {})
    assert {ts for _, ts in produce(broker, topic, "none")} == {OLD}
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry("message.timestamp.type", "LogAppendTime",
                        incremental_operation=cka.AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(30)
    assert OLD not in {ts for _, ts in produce(broker, topic, "none")}
    stamps = [r[5] for r in confluent_records(broker.kafka_bootstrap, topic, 1, 2 * COUNT)]
    assert stamps[:COUNT] == [OLD] * COUNT and OLD not in stamps[COUNT:]


def refusals(broker: BrokerProcess, topic: str, timestamps: list[int]) -> list[Any]:
    """Each record's delivery error (None: stored), one batch per record."""
    producer = ck.Producer({"bootstrap.servers": broker.kafka_bootstrap, "retries": 0,
                            "enable.idempotence": False, "linger.ms": 0,
                            "batch.num.messages": 1, "message.timeout.ms": 10000})
    errors: list[Any] = []
    for ts in timestamps:
        producer.produce(topic, value=b"v", timestamp=ts,
                         on_delivery=lambda err, _msg: errors.append(err))
        producer.flush(30)
    return [None if e is None else e.code() for e in errors]


def test_timestamp_bounds_refuse_records_too_far_from_now(broker: BrokerProcess,
                                                         admin: Any) -> None:
    since = mark(broker)
    bad = ck.KafkaError.INVALID_TIMESTAMP
    hour = 3_600_000
    now = int(time.time() * 1000)
    before = create(admin, {"message.timestamp.before.max.ms": str(hour)})
    assert refusals(broker, before, [OLD, now, now + 10 * hour]) == [bad, None, None]
    after = create(admin, {"message.timestamp.after.max.ms": str(hour)})
    assert refusals(broker, after, [OLD, now, now + 10 * hour]) == [None, None, bad]
    both = create(admin, {"message.timestamp.difference.max.ms": str(hour)})
    assert refusals(broker, both, [OLD, now, now + 10 * hour]) == [bad, None, bad]
    stamped = create(admin, {"message.timestamp.before.max.ms": str(hour),
                             "message.timestamp.type": "LogAppendTime"})
    assert refusals(broker, stamped, [OLD]) == [None]  # the append time is never out of range
    stored = confluent_records(broker.kafka_bootstrap, before, 1, 2)
    assert [(r[1], r[5]) for r in stored] == [(0, now), (1, now + 10 * hour)]  # the OLD one: not
    quiet(broker, since)
