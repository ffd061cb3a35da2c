"""Transactions through the handlers of an in-memory broker: the APIs with Kafka's codes
(fencing, CONCURRENT_TRANSACTIONS, version-dependent PRODUCER_FENCED), markers,
read_committed Fetch and ListOffsets, offsets visible on commit only (and
UNSTABLE_OFFSET_COMMIT meanwhile), timeouts, AMQP readers, compacted topics, permissions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers
from tests.unit.kafka.kafka_fixtures import THREE_PARTITIONS, broker_with
from tests.unit.kafka.test_kafka_produce import produce, results
from tests.unit.kafka.txn_helpers import (
    SESSION,
    TS,
    add_partitions,
    call,
    data,
    end,
    fetch,
    handlers,
    init,
)


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS})


@pytest.fixture
def h(broker: Broker) -> KafkaHandlers:
    return handlers(broker)



def test_abort_hides_records_from_read_committed(broker: Broker, h: KafkaHandlers) -> None:
    code, pid, epoch = init(h, "tx")
    assert (code, epoch) == (ErrorCode.NONE, 0)
    produce(h, [("orders", 0, data(50, 0, 0))])  # offset 0, outside the transaction
    assert add_partitions(h, "tx", pid, epoch, [("orders", [0])]) == [ErrorCode.NONE]
    assert results(produce(h, [("orders", 0, data(pid, epoch, 0, n=2, txn=True))],
                           transactional_id="tx"))[0][2:] == (ErrorCode.NONE, 1)
    produce(h, [("orders", 0, data(50, 0, 1))])  # offset 3, after the open transaction
    part, values = fetch(h, 0, isolation=1)
    assert (part.high_watermark, part.last_stable_offset) == (4, 1)
    assert values == [b"v0-0"]
    queue = broker.vhosts["/"].queues["orders"]
    assert queue.txns[0].lso(queue.logs[0].next_offset) == 1
    assert end(h, "tx", pid, epoch, commit=False) == ErrorCode.NONE
    part, values = fetch(h, 0, isolation=1)
    assert part.last_stable_offset == part.high_watermark == 5  # the marker is offset 4
    assert [(a.producer_id, a.first_offset) for a in part.aborted_transactions] == [(pid, 1)]
    assert b"v0-0" in values and b"v1-0" in values  # the client drops the aborted ones
    _, uncommitted = fetch(h, 0, isolation=0)
    assert b"v0-1" in uncommitted
    assert end(h, "tx", pid, epoch, commit=False) == ErrorCode.NONE  # a retry
    assert end(h, "tx", pid, epoch, commit=True) == ErrorCode.INVALID_TXN_STATE
    req = codec.REQUESTS[2]
    lo = call(h, 2, 5, replica_id=-1, isolation_level=1, topics=[req.ListOffsetsTopic(
        name="orders", partitions=[req.ListOffsetsTopic.ListOffsetsPartition(
            partition_index=0, current_leader_epoch=-1, timestamp=-1)])])
    assert lo.topics[0].partitions[0].offset == 5


def test_abort_on_a_compacted_topic(broker: Broker, h: KafkaHandlers) -> None:
    """Records of a compacted topic are stored one by one (no producer id kept): Fetch
    drops an aborted transaction's records itself."""
    broker.vhosts["/"].declare_queue("keyed", durable=True, arguments={
        "x-queue-type": "stream", "x-cleanup-policy": "compact"})
    _, pid, epoch = init(h, "tx")
    add_partitions(h, "tx", pid, epoch, [("keyed", [0])])
    batch = codec.write_batch([(TS, b"k", b"gone", [])], producer_id=pid, producer_epoch=epoch,
                              base_sequence=0, transactional=True)
    assert results(produce(h, [("keyed", 0, batch)], transactional_id="tx"))[0][2] == ErrorCode.NONE
    end(h, "tx", pid, epoch, commit=False)
    produce(h, [("keyed", 0, codec.write_batch([(TS, b"k", b"kept", [])]))])
    req = codec.REQUESTS[1]
    body = req(version=11, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
               isolation_level=1, session_id=0, session_epoch=-1,
               topics=[req.FetchTopic(topic="keyed", partitions=[req.FetchTopic.FetchPartition(
                   partition=0, current_leader_epoch=-1, fetch_offset=0,
                   log_start_offset=-1, partition_max_bytes=1 << 20)])],
               forgotten_topics_data=[], rack_id="")
    part = h.handle(codec.Request(codec.Header(1, 11, 1, "c"), body), SESSION).responses[0].partitions[0]
    assert [r.value for r in codec.read_records(part.records)] == [b"kept"]


def test_transactional_batch_needs_its_partition_added(h: KafkaHandlers) -> None:
    _, pid, epoch = init(h, "tx")
    got = results(produce(h, [("orders", 1, data(pid, epoch, 0, txn=True))], transactional_id="tx"))
    assert got[0][2] == ErrorCode.INVALID_TXN_STATE
    add_partitions(h, "tx", pid, epoch, [("orders", [0])])
    got = results(produce(h, [("orders", 1, data(pid, epoch, 0, txn=True))], transactional_id="tx"))
    assert got[0][2] == ErrorCode.INVALID_TXN_STATE


def test_add_partitions_errors(h: KafkaHandlers) -> None:
    _, pid, epoch = init(h, "tx")
    assert add_partitions(h, "tx", pid, epoch, [("orders", [0, 7]), ("nope", [0])]) == [
        ErrorCode.OPERATION_NOT_ATTEMPTED, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
    assert add_partitions(h, "tx", pid + 1, epoch, [("orders", [0])]) == [
        ErrorCode.INVALID_PRODUCER_ID_MAPPING]
    assert add_partitions(h, "other", pid, epoch, [("orders", [0])]) == [
        ErrorCode.INVALID_PRODUCER_ID_MAPPING]


def test_fencing_by_a_new_producer(broker: Broker, h: KafkaHandlers) -> None:
    _, pid, epoch = init(h, "tx")
    add_partitions(h, "tx", pid, epoch, [("orders", [2])])
    produce(h, [("orders", 2, data(pid, epoch, 0, txn=True))], transactional_id="tx")
    # the second producer: the old one's transaction is aborted first (retry), then it
    # gets the epoch bumped a second time
    assert init(h, "tx")[0] == ErrorCode.CONCURRENT_TRANSACTIONS
    code, pid2, epoch2 = init(h, "tx")
    assert (code, pid2, epoch2) == (ErrorCode.NONE, pid, epoch + 2)
    queue = broker.vhosts["/"].queues["orders"]
    assert queue.txns[2].lso(queue.logs[2].next_offset) == queue.logs[2].next_offset == 2
    # the old producer is fenced everywhere, in the versions' words
    assert end(h, "tx", pid, epoch, commit=True) == ErrorCode.PRODUCER_FENCED
    assert end(h, "tx", pid, epoch, commit=True, version=1) == ErrorCode.INVALID_PRODUCER_EPOCH
    assert add_partitions(h, "tx", pid, epoch, [("orders", [2])]) == [ErrorCode.PRODUCER_FENCED]
    got = results(produce(h, [("orders", 2, data(pid, epoch, 1, txn=True))], transactional_id="tx"))
    assert got[0][2] == ErrorCode.INVALID_PRODUCER_EPOCH


def test_offsets_visible_on_commit_only(broker: Broker, h: KafkaHandlers) -> None:
    _, pid, epoch = init(h, "tx")
    assert call(h, 25, 3, transactional_id="tx", producer_id=pid, producer_epoch=epoch,
                group_id="g").error_code == ErrorCode.NONE
    req = codec.REQUESTS[28]

    def commit_offset(offset: int, version: int = 3) -> int:
        r = call(h, 28, version, transactional_id="tx", group_id="g", producer_id=pid,
                 producer_epoch=epoch, generation_id=-1, member_id="", group_instance_id=None,
                 topics=[req.TxnOffsetCommitRequestTopic(name="orders", partitions=[
                     req.TxnOffsetCommitRequestTopic.TxnOffsetCommitRequestPartition(
                         partition_index=1, committed_offset=offset,
                         committed_leader_epoch=-1, committed_metadata="")])])
        return r.topics[0].partitions[0].error_code

    def member_commit(member: str, generation: int) -> int:
        r = call(h, 28, 3, transactional_id="tx", group_id="g", producer_id=pid,
                 producer_epoch=epoch, generation_id=generation, member_id=member,
                 group_instance_id=None, topics=[req.TxnOffsetCommitRequestTopic(
                     name="orders", partitions=[
                         req.TxnOffsetCommitRequestTopic.TxnOffsetCommitRequestPartition(
                             partition_index=1, committed_offset=3,
                             committed_leader_epoch=-1, committed_metadata="")])])
        return r.topics[0].partitions[0].error_code

    # KIP-447: "g" has no Kafka member, so a named member or generation is stale
    assert member_commit("m-1", -1) == ErrorCode.UNKNOWN_MEMBER_ID
    assert member_commit("", 4) == ErrorCode.ILLEGAL_GENERATION
    assert commit_offset(7) == ErrorCode.NONE
    groups = broker.vhosts["/"].queues["orders"].groups
    assert groups.book.get("g", 1) is None
    fetch_req = codec.REQUESTS[9]

    def fetched(stable: bool) -> tuple[int, int]:
        r = call(h, 9, 7, group_id="g", require_stable=stable, topics=[
            fetch_req.OffsetFetchRequestTopic(name="orders", partition_indexes=[1])])
        p = r.topics[0].partitions[0]
        return p.error_code, p.committed_offset

    assert fetched(stable=True) == (ErrorCode.UNSTABLE_OFFSET_COMMIT, -1)  # pending
    assert fetched(stable=False) == (ErrorCode.NONE, -1)
    assert end(h, "tx", pid, epoch, commit=True) == ErrorCode.NONE
    assert groups.book.get("g", 1) == 7
    assert fetched(stable=True) == (ErrorCode.NONE, 7)
    assert commit_offset(9) == ErrorCode.INVALID_TXN_STATE  # no AddOffsetsToTxn this time


def test_timeout_aborts_and_fences(broker: Broker, h: KafkaHandlers) -> None:
    _, pid, epoch = init(h, "tx", timeout_ms=1000)
    add_partitions(h, "tx", pid, epoch, [("orders", [0])])
    produce(h, [("orders", 0, data(pid, epoch, 0, txn=True))], transactional_id="tx")
    coordinator = h.txn.coordinator
    assert coordinator.expire_now(coordinator.txns["tx"].started_ms + 999) == []
    assert coordinator.expire_now(coordinator.txns["tx"].started_ms + 1000) == ["tx"]
    part, values = fetch(h, 0, isolation=1)
    assert part.last_stable_offset == 2 and len(part.aborted_transactions) == 1
    assert end(h, "tx", pid, epoch, commit=True) == ErrorCode.PRODUCER_FENCED


def test_init_producer_id_checks(h: KafkaHandlers) -> None:
    assert init(h, "tx", timeout_ms=0)[0] == ErrorCode.INVALID_TRANSACTION_TIMEOUT
    assert init(h, "tx", timeout_ms=900_001)[0] == ErrorCode.INVALID_TRANSACTION_TIMEOUT
    assert init(h, "")[0] == ErrorCode.INVALID_REQUEST
    _, pid, epoch = init(h, "tx")
    r = call(h, 22, 4, transactional_id="tx", transaction_timeout_ms=1000, producer_id=pid + 1,
             producer_epoch=epoch)
    assert r.error_code == ErrorCode.PRODUCER_FENCED
    r = call(h, 22, 3, transactional_id="tx", transaction_timeout_ms=1000, producer_id=pid + 1,
             producer_epoch=epoch)
    assert r.error_code == ErrorCode.INVALID_PRODUCER_EPOCH  # before v4
    r = call(h, 22, 4, transactional_id="tx", transaction_timeout_ms=1000, producer_id=pid,
             producer_epoch=epoch)  # KIP-360 bump by the current producer
    assert (r.error_code, r.producer_id, r.producer_epoch) == (ErrorCode.NONE, pid, epoch + 1)


def test_find_coordinator_for_transactions(h: KafkaHandlers) -> None:
    r = call(h, 10, 3, key="tx", key_type=1)
    assert (r.error_code, r.node_id) == (ErrorCode.NONE, 0)


@pytest.mark.extension
def test_amqp_reader_sees_committed_records_only(broker: Broker, h: KafkaHandlers) -> None:
    queue = broker.vhosts["/"].queues["orders"]
    _, pid, epoch = init(h, "tx")
    add_partitions(h, "tx", pid, epoch, [("orders", [0])])
    produce(h, [("orders", 0, data(pid, epoch, 0, n=2, txn=True))], transactional_id="tx")
    end(h, "tx", pid, epoch, commit=False)
    add_partitions(h, "tx", pid, epoch, [("orders", [0])])
    produce(h, [("orders", 0, data(pid, epoch, 2, txn=True))], transactional_id="tx")
    visible = [(rec.offset, queue.txns[0].is_aborted(rec.offset))
               for rec in queue.logs[0].scan_records(0)]
    assert visible == [(0, True), (1, True), (3, False)]  # 2 is the marker
    assert queue.txns[0].lso(queue.logs[0].next_offset) == 3  # open: AMQP readers stop
    end(h, "tx", pid, epoch, commit=True)
    assert queue.txns[0].lso(queue.logs[0].next_offset) == 5


def test_permissions(broker: Broker) -> None:
    from smartbroker.broker.permissions import Permission

    h = handlers(broker)
    broker.permissions.set(Permission("guest", "/", ".*", "^$", "^orders$"))
    assert init(h)[0] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert init(h, "tx")[0] == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    broker.permissions.set(Permission("guest", "/", ".*", "^orders$", "^$"))
    _, pid, epoch = init(h, "tx")
    assert add_partitions(h, "tx", pid, epoch, [("orders", [0])]) == [ErrorCode.NONE]
    r = call(h, 25, 3, transactional_id="tx", producer_id=pid, producer_epoch=epoch, group_id="g")
    assert r.error_code == ErrorCode.GROUP_AUTHORIZATION_FAILED  # may read nothing
