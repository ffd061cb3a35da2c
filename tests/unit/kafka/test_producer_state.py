"""Kafka's producer-state rules per partition (queues/partition_producers.py), and a
stream's snapshot and rebuild (producer_state.py), on batch headers built by the codec:
duplicates, sequences, epochs, transactions, LSO, snapshot and rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartbroker.kafka import codec
from smartbroker.queues import batch_header as bh
from smartbroker.queues import partition_producers as pp
from smartbroker.queues import producer_state as ps
from smartbroker.store.memory import MemoryLog


def batch(pid: int, epoch: int, seq: int, n: int = 1, txn: bool = False) -> bytes:
    return codec.write_batch([(1000, None, b"v%d" % i, []) for i in range(n)],
                             producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                             transactional=txn)


def header(pid: int, epoch: int, seq: int, n: int = 1, txn: bool = False) -> bh.BatchHeader:
    return bh.parse_header(batch(pid, epoch, seq, n, txn))


def append(part: pp.PartitionProducers, h: bh.BatchHeader, base: int) -> pp.BatchMeta | None:
    """What Produce does: a retry answers with the original, else check, store, record."""
    dup = part.duplicate(h)
    if dup is not None:
        return dup
    part.check(h)
    part.appended(h, base)
    return None


def test_header_fields() -> None:
    h = header(7, 2, 10, n=3, txn=True)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.count) == (7, 2, 10, 3)
    assert h.last_sequence == 12 and h.transactional and not h.control


def test_last_sequence_wraps() -> None:
    h = header(7, 0, bh.MAX_SEQUENCE, n=2)
    assert h.last_sequence == 0


def test_retry_of_one_of_the_last_five_is_answered_with_its_original_offset() -> None:
    part = pp.PartitionProducers()
    for i in range(6):
        assert append(part, header(1, 0, i * 2, n=2), i * 2) is None
    dup = append(part, header(1, 0, 10, n=2), 99)
    assert dup is not None and (dup.first_offset, dup.last_offset) == (10, 11)
    assert append(part, header(1, 0, 2, n=2), 99) is not None  # fifth newest
    # the oldest (seq 0-1) fell out of the five: Kafka answers out of order
    with pytest.raises(pp.ProducerStateError) as err:
        append(part, header(1, 0, 0, n=2), 99)
    assert err.value.error == "OUT_OF_ORDER_SEQUENCE_NUMBER"


def test_gap_is_out_of_order() -> None:
    part = pp.PartitionProducers()
    append(part, header(1, 0, 0), 0)
    with pytest.raises(pp.ProducerStateError) as err:
        append(part, header(1, 0, 2), 1)
    assert err.value.error == "OUT_OF_ORDER_SEQUENCE_NUMBER"


def test_unknown_producer_starts_anywhere() -> None:
    part = pp.PartitionProducers()
    assert append(part, header(5, 3, 42), 0) is None
    assert append(part, header(5, 3, 43), 1) is None


def test_epochs() -> None:
    part = pp.PartitionProducers()
    append(part, header(1, 2, 0), 0)
    with pytest.raises(pp.ProducerStateError) as err:
        append(part, header(1, 1, 1), 1)
    assert err.value.error == "INVALID_PRODUCER_EPOCH"
    with pytest.raises(pp.ProducerStateError) as err:
        append(part, header(1, 3, 5), 1)  # a new epoch starts at 0
    assert err.value.error == "OUT_OF_ORDER_SEQUENCE_NUMBER"
    assert append(part, header(1, 3, 0), 1) is None
    # the old epoch's batches are forgotten: not a duplicate any more
    assert part.duplicate(header(1, 2, 0)) is None


def test_transaction_lso_commit_and_abort() -> None:
    part = pp.PartitionProducers()
    append(part, header(1, 0, 0), 0)  # idempotent, no transaction
    append(part, header(2, 0, 0, n=2, txn=True), 1)
    append(part, header(3, 0, 0, txn=True), 3)
    append(part, header(2, 0, 2, txn=True), 4)
    assert part.lso(5) == 1
    with pytest.raises(pp.ProducerStateError) as err:
        append(part, header(2, 0, 3), 5)  # non-transactional inside its transaction
    assert err.value.error == "INVALID_TXN_STATE"
    part.marker(2, 0, commit=False, offset=5)
    assert part.lso(6) == 3
    assert part.aborted == [(2, 1, 5)]
    assert [o for o in range(6) if part.is_aborted(o)] == [1, 2, 4]
    part.marker(3, 0, commit=True, offset=6)
    assert part.lso(7) == 7
    assert part.aborted_between(0, 7) == [(2, 1)]
    assert part.aborted_between(6, 7) == []
    assert part.aborted_between(0, 1) == []


def test_rebuild_from_stored_batches_and_snapshot(tmp_path: Path) -> None:
    lg = MemoryLog()
    live = pp.PartitionProducers()

    def store(data: bytes) -> int:
        h = bh.parse_header(data)
        base = lg.append_kafka_batch(data, h.last_offset_delta + 1, 1000)
        if h.control:
            live.marker(h.producer_id, h.producer_epoch, bh.control_type(data) == 1, base)
        else:
            live.appended(h, base)
        return base

    def frames(p: int, offset: int) -> list[tuple[int, bytes | None]]:
        return [(f.base, f.batch) for f in lg.scan_frames(offset)]

    store(batch(1, 0, 0, n=3))  # offsets 0-2
    store(batch(2, 0, 0, n=2, txn=True))  # 3-4
    store(codec.control_batch(2, 0, False, 0, 1000))  # 5: abort
    assert ps.load(tmp_path, [lg], frames) is None  # no snapshot: never had producers
    ps.save(tmp_path, ps.StreamProducers(1), [0])  # the first producer batch writes one
    snap = ps.StreamProducers(1)
    snap.partitions[0] = pp.PartitionProducers.from_json(live.to_json())
    store(batch(2, 0, 2, txn=True))  # 6: a new transaction

    rebuilt = pp.PartitionProducers()
    ps.rebuild(rebuilt, frames(0, 0), 0)
    assert rebuilt.to_json() == live.to_json()
    assert rebuilt.duplicate(header(1, 0, 0, n=3)) is not None
    assert rebuilt.lso(lg.next_offset) == 6
    assert rebuilt.aborted == [(2, 3, 5)]

    assert ps.load(tmp_path, [lg], frames)[0].to_json() == live.to_json()  # full scan
    ps.save(tmp_path, snap, [6])  # complete up to offset 6: only the last batch replays
    loaded = ps.load(tmp_path, [lg], frames)
    assert loaded is not None and loaded[0].to_json() == live.to_json()
    ps.save(tmp_path, snap, [99])  # past the log's end (its tail was cut): full scan
    assert ps.load(tmp_path, [lg], frames)[0].to_json() == live.to_json()


def test_aborted_between_and_forgetting() -> None:
    part = pp.PartitionProducers()
    append(part, header(1, 0, 0, n=2, txn=True), 0)  # 0-1, open until 10
    append(part, header(2, 0, 0, txn=True), 2)
    part.marker(2, 0, commit=False, offset=3)  # (2, 2, 3)
    append(part, header(3, 0, 0, txn=True), 4)
    part.marker(3, 0, commit=False, offset=5)  # (3, 4, 5)
    part.marker(1, 0, commit=False, offset=10)  # (1, 0, 10)
    assert part.aborted_between(0, 2) == [(1, 0)]
    assert part.aborted_between(3, 5) == [(2, 2), (3, 4), (1, 0)]
    assert part.aborted_between(6, 11) == [(1, 0)]
    assert part.aborted_between(11, 20) == []
    assert [o for o in range(11) if part.is_aborted(o)] == [0, 1, 2, 4]
    part.forget_before(4)
    assert part.aborted == [(3, 4, 5), (1, 0, 10)]
    assert [o for o in range(11) if part.is_aborted(o)] == [4]
