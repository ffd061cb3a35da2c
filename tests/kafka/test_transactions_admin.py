"""DescribeProducers, ListTransactions and DescribeTransactions with kafka-python's admin
client (what ``kafka-transactions.sh`` does), around a real confluent-kafka transactional
producer: an open transaction is listed as Ongoing with its partitions and start offset,
committed it is CompleteCommit with no open offset; filters by state, producer id and
duration (ListTransactions v1); Kafka's errors for an unknown transactional id or topic;
ListTransactions v2's id pattern is not advertised; a user who may write nothing sees no
transactions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.protocol.admin import ListTransactionsRequest
from test_kafka_abuse import Raw

from smartbroker.launcher import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.sasl_helpers import PASSWORD, add_user

ck = pytest.importorskip("confluent_kafka")
kadmin = pytest.importorskip("kafka.admin")
kerrors = pytest.importorskip("kafka.errors")
TopicPartition = pytest.importorskip("kafka").TopicPartition
State = kadmin.TransactionState


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-txn-admin-") as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> Iterator[Any]:
    client = kadmin.KafkaAdminClient(bootstrap_servers=broker.kafka_bootstrap)
    yield client
    client.close()


@pytest.fixture
def open_txn(broker: BrokerProcess) -> Iterator[tuple[Any, str, str]]:
    """A confluent-kafka producer inside a transaction that wrote 3 records to partition
    0 of a new topic: (producer, its transactional id, the topic)."""
    txn_id, topic = f"txn-{uuid.uuid4().hex[:8]}", f"txn-topic-{uuid.uuid4().hex[:8]}"
    producer = ck.Producer({"bootstrap.servers": broker.kafka_bootstrap,
                            "transactional.id": txn_id, "transaction.timeout.ms": 60000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, b"v%d" % i, partition=0)
    assert producer.flush(30) == 0
    yield producer, txn_id, topic  # left open, the broker aborts it after its timeout


def listed(admin: Any, **filters: Any) -> dict[str, Any]:
    [(node, listings)] = admin.list_transactions(**filters).items()
    assert node == 0
    return {t.transactional_id: t for t in listings}


def test_open_then_committed_transaction(admin: Any, open_txn: tuple[Any, str, str]) -> None:
    producer, txn_id, topic = open_txn
    got = listed(admin)[txn_id]
    assert got.state == State.ONGOING and got.producer_id >= 0
    desc = admin.describe_transactions([txn_id])[txn_id]
    assert (desc.state, desc.producer_id, desc.transaction_timeout_ms) == (
        State.ONGOING, got.producer_id, 60000)
    assert desc.topic_partitions == {TopicPartition(topic, 0)}
    assert abs(desc.transaction_start_time_ms - time.time() * 1000) < 60_000
    tp = TopicPartition(topic, 0)
    [state] = admin.describe_producers([tp])[tp].active_producers
    assert (state.producer_id, state.producer_epoch, state.last_sequence) == (
        got.producer_id, desc.producer_epoch, 2)
    assert state.current_transaction_start_offset == 0
    assert admin.find_hanging_transactions() == []
    producer.commit_transaction(30)
    assert admin.describe_transactions([txn_id])[txn_id].state == State.COMPLETE_COMMIT
    [state] = admin.describe_producers([tp])[tp].active_producers
    assert state.current_transaction_start_offset == -1


def test_list_filters(admin: Any, open_txn: tuple[Any, str, str]) -> None:
    producer, txn_id, _topic = open_txn
    pid = listed(admin)[txn_id].producer_id
    assert txn_id in listed(admin, state_filters=["Ongoing"])
    assert txn_id not in listed(admin, state_filters=["CompleteCommit"])
    assert set(listed(admin, producer_id_filters=[pid])) == {txn_id}
    assert txn_id in listed(admin, duration_filter_ms=0)
    assert txn_id not in listed(admin, duration_filter_ms=3_600_000)
    producer.abort_transaction(30)
    assert txn_id in listed(admin, state_filters=["CompleteAbort"])


def test_unknown_state_filter_is_named_back(broker: BrokerProcess) -> None:
    R = ListTransactionsRequest
    with Raw(broker.kafka_port) as raw:
        got = raw.call(R, 1, state_filters=["Ongoing", "Bogus"], producer_id_filters=[],
                       duration_filter=-1)
    assert (got.error_code, list(got.unknown_state_filters)) == (0, ["Bogus"])


def test_pattern_filter_is_not_advertised(admin: Any) -> None:
    with pytest.raises(kerrors.UnsupportedVersionError):
        admin.list_transactions(transactional_id_pattern="txn-.*")


def test_kafka_errors(admin: Any) -> None:
    with pytest.raises(kerrors.TransactionalIdNotFoundError):
        admin.describe_transactions(["no-such-txn"])
    with pytest.raises(kerrors.UnknownTopicOrPartitionError):
        admin.describe_producers([TopicPartition("no-such-topic", 0)], broker_id=0)


def test_a_stream_without_producer_ids_has_none(broker: BrokerProcess, admin: Any) -> None:
    topic = f"plain-{uuid.uuid4().hex[:8]}"
    producer = ck.Producer({"bootstrap.servers": broker.kafka_bootstrap,
                            "enable.idempotence": False})
    producer.produce(topic, b"x", partition=0)
    assert producer.flush(30) == 0
    tp = TopicPartition(topic, 0)
    assert admin.describe_producers([tp])[tp].active_producers == []


def test_a_user_who_may_write_nothing_sees_no_transactions(
        broker: BrokerProcess, open_txn: tuple[Any, str, str]) -> None:
    _producer, txn_id, _topic = open_txn
    name = f"ro-{uuid.uuid4().hex[:8]}"
    add_user(broker, name, permissions=(".*", "^$", ".*"))
    client = kadmin.KafkaAdminClient(
        bootstrap_servers=broker.kafka_bootstrap, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN", sasl_plain_username=name, sasl_plain_password=PASSWORD)
    try:
        assert listed(client) == {}
        with pytest.raises(kerrors.TransactionalIdAuthorizationFailedError):
            client.describe_transactions([txn_id])
    finally:
        client.close()
