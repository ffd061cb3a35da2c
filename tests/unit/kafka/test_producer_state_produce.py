"""Idempotent producers through the handlers of an in-memory broker: a retried batch
stored once and answered with its original offset, gaps, refused batches leaving the state
as it was, per-partition sequences, idle producers forgotten."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers
from tests.unit.kafka.kafka_fixtures import THREE_PARTITIONS, broker_with
from tests.unit.kafka.test_kafka_produce import produce, results
from tests.unit.kafka.txn_helpers import (
    TS,
    add_partitions,
    data,
    handlers,
    init,
)


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS})


@pytest.fixture
def h(broker: Broker) -> KafkaHandlers:
    return handlers(broker)



def test_init_producer_id_without_transactional_id(h: KafkaHandlers) -> None:
    first, second = init(h), init(h)
    assert first[0] == second[0] == ErrorCode.NONE
    assert first[1] != second[1] and first[2] == second[2] == 0


def test_retried_batch_is_stored_once_and_answered_with_its_original_offset(
        broker: Broker, h: KafkaHandlers) -> None:
    _, pid, epoch = init(h)
    produce(h, [("orders", 0, data(99, 0, 0))])  # another producer first: offset 0
    first = results(produce(h, [("orders", 0, data(pid, epoch, 0, n=3))]))[0]
    assert first[2:] == (ErrorCode.NONE, 1)
    second = results(produce(h, [("orders", 0, data(pid, epoch, 3))]))[0]
    assert second[2:] == (ErrorCode.NONE, 4)
    retry = results(produce(h, [("orders", 0, data(pid, epoch, 0, n=3))]))[0]
    assert retry[2:] == (ErrorCode.NONE, 1)  # the original offset, nothing stored
    assert broker.vhosts["/"].queues["orders"].logs[0].next_offset == 5
    gap = results(produce(h, [("orders", 0, data(pid, epoch, 7))]))[0]
    assert gap[2] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    stale = results(produce(h, [("orders", 0, data(99, 0, 1))]))[0]
    assert stale[2:] == (ErrorCode.NONE, 5)
    assert broker.vhosts["/"].queues["orders"].logs[0].next_offset == 6


def test_partition_with_a_refused_batch_leaves_the_state_as_it_was(
        broker: Broker, h: KafkaHandlers) -> None:
    _, pid, epoch = init(h)
    got = results(produce(h, [("orders", 0, data(pid, epoch, 0) + data(pid, epoch, 5))]))
    assert got[0][2] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert broker.vhosts["/"].queues["orders"].logs[0].next_offset == 0
    got = results(produce(h, [("orders", 0, data(pid, epoch, 0) + data(pid, epoch, 1))]))
    assert got[0][2:] == (ErrorCode.NONE, 0)  # seq 0 was not remembered: no duplicate
    assert results(produce(h, [("orders", 0, data(pid, epoch, 1))]))[0][2:] == (ErrorCode.NONE, 1)


def test_idle_producers_are_forgotten(broker: Broker, h: KafkaHandlers) -> None:
    _, pid, epoch = init(h)
    _, tpid, tepoch = init(h, "tx")
    produce(h, [("orders", 0, data(pid, epoch, 0))])
    add_partitions(h, "tx", tpid, tepoch, [("orders", [0])])
    produce(h, [("orders", 0, data(tpid, tepoch, 0, txn=True))], transactional_id="tx")
    day = 86_400_000
    assert h.txn.maintain(TS + day) == 0
    assert h.txn.maintain(TS + day + 1) == 1  # the one inside a transaction stays
    state = broker.vhosts["/"].queues["orders"].txns[0]
    assert pid not in state.producers and tpid in state.producers
    # forgotten: the same sequence is a new batch now, as Kafka after expiry
    assert results(produce(h, [("orders", 0, data(pid, epoch, 0))]))[0][2:] == (ErrorCode.NONE, 2)


def test_sequences_are_per_partition(broker: Broker, h: KafkaHandlers) -> None:
    _, pid, epoch = init(h)
    got = results(produce(h, [("orders", 0, data(pid, epoch, 0)), ("orders", 1, data(pid, epoch, 0))]))
    assert [r[2] for r in got] == [ErrorCode.NONE, ErrorCode.NONE]
