"""Compaction and retention driven through Kafka: a topic created by CreateTopics with
``cleanup.policy=compact`` and small segments keeps, once the stream's periodic cleaner has
run, the newest record of each key at its original offset (gaps where the others were) for
Kafka consumers and AMQP readers alike; tombstones (null values) stay until
``delete.retention.ms`` has passed, then go; an empty non-null value is not a tombstone.
``retention.bytes`` and ``retention.ms`` set by IncrementalAlterConfigs/AlterConfigs delete
closed head segments and ListOffsets earliest moves."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from tests.kafka.amqp_streams import amqp_read
from tests.kafka.cross_protocol_readers import Record, kafka_python_records

pytestmark = pytest.mark.extension
KEYS = [b"key-%d" % i for i in range(5)]
ROUNDS = 6
PAD = 30  # unique-key records after the tombstones, so that they sit in closed segments
VALUE = b"x" * 300
DELETE_RETENTION_MS = 8000


def admin_client(broker: BrokerProcess) -> Any:
    kafka = pytest.importorskip("kafka")
    return kafka.KafkaAdminClient(bootstrap_servers=broker.kafka_bootstrap,
                                  request_timeout_ms=10000)


def create_topic(broker: BrokerProcess, name: str, configs: dict[str, str]) -> None:
    from kafka.admin import NewTopic

    admin = admin_client(broker)
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    finally:
        admin.close()


def produce_rounds(broker: BrokerProcess, name: str,
                   ) -> tuple[dict[bytes, int], set[int]]:
    """ROUNDS batches of every key, then tombstones for key-0 and key-1 and an empty value
    for key-2, then PAD unique keys. Returns the newest offset of each repeated key and the
    offsets of the pads."""
    kafka = pytest.importorskip("kafka")
    producer = kafka.KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, acks="all",
                                   enable_idempotence=False, linger_ms=100)
    newest: dict[bytes, int] = {}
    pads: set[int] = set()
    try:
        for r in range(ROUNDS):  # one batch per round: compaction splits batches
            futures = [(k, producer.send(name, key=k, value=b"%s round %d " % (k, r) + VALUE))
                       for k in KEYS]
            producer.flush(timeout=30)
            newest.update((k, f.get(timeout=30).offset) for k, f in futures)
        last = [(KEYS[0], None), (KEYS[1], None), (KEYS[2], b"")]
        futures = [(k, producer.send(name, key=k, value=v)) for k, v in last]
        producer.flush(timeout=30)
        newest.update((k, f.get(timeout=30).offset) for k, f in futures)
        pad_futures = [producer.send(name, key=b"pad-%d" % i, value=VALUE) for i in range(PAD)]
        producer.flush(timeout=30)
        pads = {f.get(timeout=30).offset for f in pad_futures}
    finally:
        producer.close(timeout=10)
    return newest, pads


def read_until(broker: BrokerProcess, name: str, want: set[int], timeout: float,
               *alternatives: set[int]) -> list[Record]:
    """Read the topic from the beginning until its offsets are ``want`` or one of the
    ``alternatives`` (the cleaner runs every second), or the deadline passes; the last
    read."""
    deadline = time.monotonic() + timeout
    while True:
        got = kafka_python_records(broker.kafka_bootstrap, name, 1, len(want), timeout=5)
        if {r[1] for r in got} in (want, *alternatives) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def first_from(broker: BrokerProcess, name: str, offset: int) -> int | None:
    """The offset of the first record a kafka-python consumer gets after seeking."""
    kafka = pytest.importorskip("kafka")
    tp = kafka.TopicPartition(name, 0)
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap,
                                   enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                return records[0].offset
    finally:
        consumer.close()
    return None


def amqp_offsets(broker: BrokerProcess, name: str, count: int,
                 start: int | str = "first") -> dict[int, tuple[Any, bytes]]:
    """offset -> (properties, body) of what an AMQP reader from ``start`` gets."""
    return {props.headers["x-stream-offset"]: (props, body) for props, body in amqp_read(
        broker, name, count, inactivity=5, **{"x-stream-offset": start})}


def test_compacted_topic_keeps_the_newest_value_per_key(kafka_broker: BrokerProcess) -> None:
    name = f"compact-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker, name, {"cleanup.policy": "compact", "segment.bytes": "4096",
                                      "delete.retention.ms": str(DELETE_RETENTION_MS)})
    produced_at = time.monotonic()
    newest, pads = produce_rounds(kafka_broker, name)
    want = set(newest.values()) | pads
    after = want - {newest[KEYS[0]], newest[KEYS[1]]}  # once the tombstones expired
    got = read_until(kafka_broker, name, want, 30, after)  # a slow machine: maybe gone
    by_offset = {r[1]: r for r in got}
    assert set(by_offset) == want or (
        set(by_offset) == after and time.monotonic() - produced_at > DELETE_RETENTION_MS / 1000
    ), "superseded records removed, the newest kept"
    assert min(want) > 0  # offsets preserved: the first records are gone, not renumbered
    if set(by_offset) == want:
        assert by_offset[newest[KEYS[0]]][3] is None  # the tombstone, still there
    assert by_offset[newest[KEYS[2]]][3] == b""  # empty, not null
    assert by_offset[newest[KEYS[3]]][3] == b"key-3 round %d " % (ROUNDS - 1) + VALUE
    amqp = amqp_offsets(kafka_broker, name, len(want))
    assert set(amqp) in (want, after)  # the same offsets over AMQP
    props, body = amqp[newest[KEYS[3]]]
    assert props.headers["x-message-key"] == "key-3" and body == by_offset[newest[KEYS[3]]][3]
    assert first_from(kafka_broker, name, 3) == min(want)  # a fetch inside a gap goes on
    assert earliest(kafka_broker, name) == 0  # compaction never moves the log start
    first = amqp_offsets(kafka_broker, name, 1, start=3)
    assert list(first) == [min(want)]

    # past delete.retention.ms the tombstones go; the empty value stays
    got = read_until(kafka_broker, name, after, timeout=DELETE_RETENTION_MS / 1000 + 30)
    assert {r[1] for r in got} == after
    assert set(amqp_offsets(kafka_broker, name, len(after))) == after


def earliest(broker: BrokerProcess, name: str) -> int:
    kafka = pytest.importorskip("kafka")
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap)
    try:
        tp = kafka.TopicPartition(name, 0)
        return consumer.beginning_offsets([tp])[tp]
    finally:
        consumer.close()


def wait_earliest(broker: BrokerProcess, name: str, above: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while (found := earliest(broker, name)) <= above and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def incremental_retention_ms(broker: BrokerProcess, name: str, ms: int) -> None:
    """IncrementalAlterConfigs through confluent-kafka (kafka-python 3.0 has none)."""
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    admin = AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    resource = ConfigResource(ck.admin.ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", str(ms), incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=10)


def test_retention_set_by_alter_configs_deletes_old_segments(kafka_broker: BrokerProcess) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    kafka = pytest.importorskip("kafka")
    name = f"retain-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker, name, {"segment.bytes": "4096"})
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, acks="all",
                                   enable_idempotence=False)
    old = int(time.time() * 1000) - 3600_000  # an hour ago: CreateTime decides age
    try:
        for i in range(40):  # a batch each: a batch is never split over segments
            producer.send(name, value=VALUE, timestamp_ms=old + i).get(timeout=30)
    finally:
        producer.close(timeout=10)
    assert earliest(kafka_broker, name) == 0
    admin = admin_client(kafka_broker)
    resource = ConfigResource(ConfigResourceType.TOPIC, name, configs={"retention.bytes": "8192"})
    try:
        # legacy AlterConfigs (kafka-python fills in the other altered configs it replaces)
        admin.alter_configs([resource], incremental=False)
        by_size = wait_earliest(kafka_broker, name, 0)
        assert by_size > 0, "retention.bytes deleted closed head segments"
        incremental_retention_ms(kafka_broker, name, 60000)  # keeps retention.bytes
        by_age = wait_earliest(kafka_broker, name, by_size)
        assert by_size < by_age < 40  # every closed segment too old; the active one stays
    finally:
        admin.close()
    got = kafka_python_records(kafka_broker.kafka_bootstrap, name, 1, 40 - by_age)
    assert [r[1] for r in got] == list(range(by_age, 40))


def test_only_a_null_value_is_a_tombstone() -> None:
    """The cleaner's test on stored records: a Kafka null value and an AMQP empty body are
    tombstones, a Kafka empty value (``x-kafka-empty-value``) is not."""
    from smartbroker.queues.compaction import is_tombstone
    from smartbroker.queues.kafka_batch import OWN_ROUTE
    from smartbroker.queues.kafka_mapping import stored_record

    assert is_tombstone(stored_record(OWN_ROUTE, 1, b"k", None, []))
    assert not is_tombstone(stored_record(OWN_ROUTE, 1, b"k", b"", []))
    assert not is_tombstone(stored_record(OWN_ROUTE, 1, b"k", b"v", [("h", b"")]))
    assert is_tombstone(stored_record(OWN_ROUTE, 1, b"k", None, [("h", b"x")]))


def test_amqp_and_kafka_writes_compact_by_the_same_key(kafka_broker: BrokerProcess) -> None:
    """x-message-key and the Kafka key are one compaction key: the newest write of a key
    wins whichever protocol made it, and an AMQP empty body is a tombstone for a key Kafka
    wrote."""
    kafka = pytest.importorskip("kafka")
    name = f"compact-x-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker, name, {"cleanup.policy": "compact", "segment.bytes": "4096"})
    conn = pika.BlockingConnection(pika.URLParameters(kafka_broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap, acks="all")

    def amqp(key: str, body: bytes) -> None:
        ch.basic_publish("", name, body, pika.BasicProperties(headers={"x-message-key": key}))

    def kafka_send(key: bytes, value: bytes | None) -> int:
        return producer.send(name, key=key, value=value).get(timeout=30).offset

    try:
        for r in range(3):
            amqp("shared", b"amqp %d " % r + VALUE)
            kafka_send(b"shared", b"kafka %d " % r + VALUE)
            kafka_send(b"gone", b"kafka gone %d " % r + VALUE)
        amqp("shared", b"amqp last " + VALUE)
        amqp("gone", b"")  # an AMQP tombstone for a Kafka-written key
        pads = {kafka_send(b"pad-%d" % i, VALUE) for i in range(PAD)}
    finally:
        producer.close(timeout=10)
        conn.close()
    shared, tomb = 9, 10  # offsets of the last "shared" write and of the tombstone
    got = read_until(kafka_broker, name, {shared, tomb} | pads, timeout=30)
    by_offset = {r[1]: r for r in got}
    assert set(by_offset) == {shared, tomb} | pads
    assert by_offset[shared][2:4] == (b"shared", b"amqp last " + VALUE)
    assert by_offset[tomb][2:4] == (b"gone", None)  # kept until delete.retention.ms
