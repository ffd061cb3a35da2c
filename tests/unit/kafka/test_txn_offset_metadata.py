"""TxnOffsetCommit keeps what OffsetCommit keeps: a committed transaction's offsets carry
their leader epoch and metadata to OffsetFetch; held in the coordinator's state (memory
and its durable log, whose records before this change still load), metadata over
offset.metadata.max.bytes refused as OffsetCommit refuses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers
from smartbroker.kafka.transactions import TransactionCoordinator
from smartbroker.kafka.txn_log import TxnMetadata, TxnOffset
from tests.unit.kafka.kafka_fixtures import THREE_PARTITIONS, broker_with
from tests.unit.kafka.txn_helpers import call, end, handlers, init

REQ = codec.REQUESTS[28]
PART = REQ.TxnOffsetCommitRequestTopic.TxnOffsetCommitRequestPartition


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS})


@pytest.fixture
def h(broker: Broker) -> KafkaHandlers:
    return handlers(broker)


def begin(h: KafkaHandlers) -> tuple[int, int]:
    _, pid, epoch = init(h, "tx")
    assert call(h, 25, 3, transactional_id="tx", producer_id=pid, producer_epoch=epoch,
                group_id="g").error_code == ErrorCode.NONE
    return pid, epoch


def commit(h: KafkaHandlers, pid: int, epoch: int, parts: list[Any], version: int = 3) -> list[int]:
    extra = ({"generation_id": -1, "member_id": "", "group_instance_id": None}
             if version >= 3 else {})
    r = call(h, 28, version, transactional_id="tx", group_id="g", producer_id=pid,
             producer_epoch=epoch, topics=[REQ.TxnOffsetCommitRequestTopic(
                 name="orders", partitions=parts)], **extra)
    return [p.error_code for p in r.topics[0].partitions]


def fetched(h: KafkaHandlers) -> list[tuple[int, int, int, str]]:
    req = codec.REQUESTS[9]
    r = call(h, 9, 7, group_id="g", require_stable=True, topics=[
        req.OffsetFetchRequestTopic(name="orders", partition_indexes=[0, 1, 2])])
    return [(p.partition_index, p.committed_offset, p.committed_leader_epoch,
             p.metadata) for p in r.topics[0].partitions]


def test_epoch_and_metadata_reach_offset_fetch(h: KafkaHandlers) -> None:
    pid, epoch = begin(h)
    assert commit(h, pid, epoch, [
        PART(partition_index=0, committed_offset=4, committed_leader_epoch=5,
             committed_metadata="checkpoint-a"),
        PART(partition_index=1, committed_offset=9, committed_leader_epoch=-1,
             committed_metadata=None)]) == [ErrorCode.NONE] * 2
    assert end(h, "tx", pid, epoch, commit=True) == ErrorCode.NONE
    assert fetched(h) == [(0, 4, 5, "checkpoint-a"), (1, 9, -1, ""), (2, -1, -1, "")]


def test_v0_has_no_epoch(h: KafkaHandlers) -> None:
    pid, epoch = begin(h)
    assert commit(h, pid, epoch, [PART(partition_index=2, committed_offset=3,
                                       committed_metadata="m")], version=0) == [0]
    assert end(h, "tx", pid, epoch, commit=True) == ErrorCode.NONE
    assert fetched(h)[2] == (2, 3, -1, "m")


def test_aborted_offsets_leave_nothing(h: KafkaHandlers) -> None:
    pid, epoch = begin(h)
    commit(h, pid, epoch, [PART(partition_index=0, committed_offset=4,
                                committed_leader_epoch=5, committed_metadata="x")])
    assert end(h, "tx", pid, epoch, commit=False) == ErrorCode.NONE
    assert fetched(h)[0] == (0, -1, -1, "")


def test_metadata_too_large_is_refused(h: KafkaHandlers) -> None:
    pid, epoch = begin(h)
    assert commit(h, pid, epoch, [
        PART(partition_index=0, committed_offset=4, committed_leader_epoch=1,
             committed_metadata="x" * 4097),
        PART(partition_index=1, committed_offset=5, committed_leader_epoch=1,
             committed_metadata="x" * 4096)]) == [ErrorCode.OFFSET_METADATA_TOO_LARGE,
                                                  ErrorCode.NONE]
    assert end(h, "tx", pid, epoch, commit=True) == ErrorCode.NONE
    assert [f[1] for f in fetched(h)] == [-1, 5, -1]


def test_pending_offsets_survive_a_restart(tmp_path: Path) -> None:
    applied: list[tuple[str, dict[Any, TxnOffset]]] = []
    path = tmp_path / "kafka-transactions"
    c = TransactionCoordinator(path, lambda *a: None, lambda g, o: None)
    pid, epoch = c.init_producer_id("tx", 60000)
    c.add_offsets("tx", pid, epoch, "g")
    c.txn_offset_commit("tx", pid, epoch, "g", {("t", 0): TxnOffset(7, 3, "meta")})
    c.close()
    c2 = TransactionCoordinator(path, lambda *a: None, lambda g, o: applied.append((g, o)))
    assert c2.end_txn("tx", pid, epoch, commit=True) is None
    assert applied == [("g", {("t", 0): TxnOffset(7, 3, "meta")})]
    c2.close()


def test_records_of_the_old_format_load() -> None:
    """Before epoch and metadata were kept a record's offsets were [topic, partition,
    offset]: they load with no epoch and no metadata."""
    meta = TxnMetadata("tx", 1000, 0, 60000, "Ongoing", groups={"g"},
                       offsets={"g": {("t", 0): TxnOffset(7, 3, "meta")}})
    record = meta.to_json()
    assert record["offsets"] == {"g": [["t", 0, 7, 3, "meta"]]}
    assert TxnMetadata.from_json("tx", record).offsets == meta.offsets
    record["offsets"] = {"g": [["t", 0, 7], ["t", 1, 8]]}
    assert TxnMetadata.from_json("tx", record).offsets == {
        "g": {("t", 0): TxnOffset(7, -1, ""), ("t", 1): TxnOffset(8, -1, "")}}
