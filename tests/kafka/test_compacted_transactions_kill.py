"""Transactions on a compacted topic survive kill -9 (its transaction journal,
queues/txn_journal.py): an aborted transaction's records stay invisible to read_committed
consumers (confluent-kafka) and AMQP readers after the restart, a committed one stays
visible, and a transaction left open at the kill still holds read_committed back until
the coordinator ends it. Kafka keeps all this in the log; a compacted topic here stores
records one by one, so before the journal a restart forgot it (aborted records showed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from smartbroker.launcher import BrokerProcess
from tests.conftest import EXTERNAL_URL, running_broker
from tests.kafka.test_transactions import amqp_values, values

pytestmark = pytest.mark.extension  # AMQP readers of the stream too


@pytest.fixture
def own_kafka_broker() -> Iterator[BrokerProcess]:
    if EXTERNAL_URL:
        pytest.skip("kills a smartbroker subprocess of its own")
    with running_broker("smartbroker-kafka-txn-kill-", kafka=True) as proc:
        yield proc


def compacted_topic(broker: BrokerProcess) -> str:
    topic = f"txn-compact-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, config={"cleanup.policy": "compact"})]
                        )[topic].result(timeout=15)
    return topic


def transactional(broker: BrokerProcess, txn_id: str | None = None) -> Producer:
    p = Producer({"bootstrap.servers": broker.kafka_bootstrap,
                  "transactional.id": txn_id or f"tx-{uuid.uuid4().hex[:8]}"})
    p.init_transactions(30)
    return p


def test_aborted_records_on_a_compacted_topic_stay_hidden_after_kill_9(
        own_kafka_broker: BrokerProcess) -> None:
    broker = own_kafka_broker
    topic = compacted_topic(broker)
    p = transactional(broker)
    p.begin_transaction()
    for i in range(4):
        p.produce(topic, b"aborted-%d" % i, key=b"a%d" % i, partition=0)
    p.flush(10)
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, b"committed-%d" % i, key=b"c%d" % i, partition=0)
    p.commit_transaction(30)
    committed = [b"committed-%d" % i for i in range(3)]
    assert values(broker, topic, "read_committed", 3) == committed

    broker.kill()  # no clean-shutdown snapshot of the producer state
    broker.start()
    assert values(broker, topic, "read_committed", 3) == committed
    assert amqp_values(broker, topic, 3) == committed  # AMQP readers: committed only
    assert len(values(broker, topic, "read_uncommitted", 7)) == 7  # the records are there


def test_an_open_transaction_on_a_compacted_topic_holds_readers_after_kill_9(
        own_kafka_broker: BrokerProcess) -> None:
    """Records of a transaction still open at the kill are not read_committed after the
    restart (it starts the last stable offset); once aborted, the data after them is."""
    broker = own_kafka_broker
    topic = compacted_topic(broker)
    plain = Producer({"bootstrap.servers": broker.kafka_bootstrap, "acks": "all"})
    plain.produce(topic, b"before", key=b"b", partition=0)
    plain.flush(10)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    p = transactional(broker, txn_id)
    p.begin_transaction()
    p.produce(topic, b"open", key=b"o", partition=0)
    p.flush(10)  # acknowledged: stored, its transaction still open

    broker.kill()
    broker.start()
    plain = Producer({"bootstrap.servers": broker.kafka_bootstrap, "acks": "all"})
    plain.produce(topic, b"after", key=b"z", partition=0)
    plain.flush(10)
    assert values(broker, topic, "read_committed", 1) == [b"before"]
    transactional(broker, txn_id)  # InitProducerId of the same id aborts it, as in Kafka
    assert values(broker, topic, "read_committed", 2) == [b"before", b"after"]
