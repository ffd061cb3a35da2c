"""The topic config ``compression.type`` as Kafka has it, through confluent-kafka's
AdminClient: ``producer`` (the default) stores batches as sent, ``uncompressed``, ``gzip``,
``snappy``, ``lz4`` and ``zstd`` are accepted by CreateTopics, AlterConfigs and
IncrementalAlterConfigs, described, and make the broker re-encode a produced batch of
another codec to the topic's before storing it (Kafka's LogValidator): a Fetch serves
the topic's codec, Kafka clients and AMQP readers read the records back unchanged.
Also the *.ms configs that are not whole seconds (librdkafka's 0081_admin creates topics
with ``delete.retention.ms=900``): accepted, rounded up to the second."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from test_kafka_compression import COUNT, produce_confluent, produce_kafka_python, stored_codecs

from tests.conftest import BrokerProcess
from tests.kafka.amqp_streams import amqp_read
from tests.kafka.cross_protocol_readers import confluent_records, kafka_python_records
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.kafka_producers import confluent_produce
from tests.kafka.raw_client import mark, quiet
from tests.kafka.topic_admin import create_topic, described, incremental

ck = pytest.importorskip("confluent_kafka")
cka = pytest.importorskip("confluent_kafka.admin")

CODECS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# what the producer sends in each case: never the topic's codec, so each batch is re-encoded
SENT = {"uncompressed": "gzip", "gzip": "none", "snappy": "lz4", "lz4": "none", "zstd": "snappy"}


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-topic-codec-") as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> Any:
    return cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})


def create(admin: Any, config: dict[str, str]) -> str:
    return create_topic(admin, config, 'codec-topic')





def read_back(broker: BrokerProcess, topic: str, produced: list[Any]) -> None:
    """Both Kafka clients and an AMQP reader get every record as produced."""
    want = [(0, o, k, v, h) for o, k, v, h in produced]
    for reader in (kafka_python_records, confluent_records):
        got = reader(broker.kafka_bootstrap, topic, 1, COUNT)
        assert [r[:5] for r in got] == want, reader.__name__
    got_amqp = amqp_read(broker, topic, COUNT, **{"x-stream-offset": "first"})
    assert [(p.headers["x-stream-offset"], p.headers["x-message-key"].encode(), body)
            for p, body in got_amqp] == [(o, k, v) for o, k, v, _ in produced]


@pytest.mark.parametrize("target", CODECS)
def test_create_with_codec_reencodes_produced_batches(broker: BrokerProcess, admin: Any,
                                                      target: str) -> None:
    since = mark(broker)
    topic = create(admin, {"compression.type": target})
    entry = described(admin, topic)["compression.type"]
    assert (entry.value, entry.source) == (target, cka.ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    produced = produce_confluent(broker, topic, SENT[target])
    assert [p[0] for p in produced] == list(range(COUNT))
    codecs = stored_codecs(broker, topic, COUNT)
    assert codecs and set(codecs) == {CODECS[target]}, codecs
    read_back(broker, topic, produced)
    quiet(broker, since)


def test_incremental_alter_then_delete_goes_back_to_producer(broker: BrokerProcess,
                                                             admin: Any) -> None:
    """kafka-python's zstd batches land as gzip once the topic says gzip; after DELETE
    (back to ``producer``) they are stored as sent again."""
    since = mark(broker)
    topic = create(admin, {})
    entry = described(admin, topic)["compression.type"]
    assert (entry.value, entry.is_default) == ("producer", True)
    incremental(admin, topic, "compression.type", "gzip", cka.AlterConfigOpType.SET)
    assert described(admin, topic)["compression.type"].value == "gzip"
    produced = produce_kafka_python(broker, topic, "zstd")
    assert set(stored_codecs(broker, topic, COUNT)) == {1}
    read_back(broker, topic, produced)
    incremental(admin, topic, "compression.type", None, cka.AlterConfigOpType.DELETE)
    assert described(admin, topic)["compression.type"].value == "producer"
    more = produce_kafka_python(broker, topic, "zstd")
    codecs = stored_codecs(broker, topic, 2 * COUNT)
    assert 1 in codecs and codecs[-1] == 4, codecs  # the later batches: zstd, as sent
    assert [o for o, *_ in more] == list(range(COUNT, 2 * COUNT))
    quiet(broker, since)


def test_alter_configs_codec_with_an_idempotent_producer(broker: BrokerProcess,
                                                         admin: Any) -> None:
    """AlterConfigs (the whole set) to lz4; an idempotent producer's sequence numbers
    survive the re-encoding (no OUT_OF_ORDER_SEQUENCE, dense offsets)."""
    topic = create(admin, {})
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, set_config={"compression.type": "lz4"})
    admin.alter_configs([res])[res].result(30)
    assert described(admin, topic)["compression.type"].value == "lz4"
    records = [(b"k%d" % i, b"idempotent %d " % i * 20, ()) for i in range(200)]
    landed = confluent_produce(broker, topic, records, partition=0, **{
        "enable.idempotence": True, "linger.ms": 5, "batch.num.messages": 17})
    assert [o for _, o in landed] == list(range(200))
    assert set(stored_codecs(broker, topic, 200)) == {3}


def test_bad_codec_is_invalid_config(admin: Any) -> None:
    topic = f"codec-topic-{uuid.uuid4().hex[:8]}"
    futures = admin.create_topics([cka.NewTopic(topic, 1, 1, config={"compression.type": "brotli"})])
    with pytest.raises(ck.KafkaException) as info:
        futures[topic].result(30)
    assert info.value.args[0].code() == ck.KafkaError.INVALID_CONFIG
    assert "must be one of" in info.value.args[0].str()


def test_ms_configs_that_are_not_whole_seconds(admin: Any) -> None:
    """librdkafka's 0081_admin CreateTopics configs: accepted; the ms round up."""
    topic = create(admin, {"compression.type": "lz4", "delete.retention.ms": "900"})
    got = described(admin, topic)
    assert got["compression.type"].value == "lz4"
    assert got["delete.retention.ms"].value == "1000"
    incremental(admin, topic, "retention.ms", "1500", cka.AlterConfigOpType.SET)
    assert described(admin, topic)["retention.ms"].value == "2000"


def test_codec_survives_a_restart(broker: BrokerProcess) -> None:
    """Kept with the stream's overrides (meta.json): after a restart the topic still says
    zstd and still re-encodes (last in the module: it restarts the module's broker)."""
    admin = cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    topic = create(admin, {"compression.type": "zstd"})
    del admin
    broker.restart()
    admin = cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    assert described(admin, topic)["compression.type"].value == "zstd"
    produce_confluent(broker, topic, "none")
    assert set(stored_codecs(broker, topic, COUNT)) == {4}
