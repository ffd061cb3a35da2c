"""The transaction journal of a compacted stream (queues/txn_journal.py), without a
broker: what producer_state learns from transactional batches and markers comes back
when the stream reopens with or without a clean close, and the journal stays short."""

from __future__ import annotations

from pathlib import Path

from smartbroker.queues import batch_header as bh
from smartbroker.queues import producer_state as ps
from smartbroker.queues import txn_journal
from smartbroker.queues.base import Storage
from smartbroker.queues.kafka_batch import TRANSACTIONAL
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_appends import append_stored
from smartbroker.queues.stream_args import StreamSettings

PID, EPOCH = 7, 0


def compacted(tmp_path: Path) -> StreamQueue:
    args = {"x-queue-type": "stream", "x-cleanup-policy": "compact"}
    settings = StreamSettings.parse("c", "/", True, False, False, args)
    return StreamQueue("c", "/", arguments=args, settings=settings,
                       storage=Storage(None, tmp_path, fsync="always"))


def state_of(q: StreamQueue) -> ps.StreamProducers:
    """What kafka/idempotence.producers_of does on first use."""
    if q.txns is None:
        q.txns = ps.StreamProducers(len(q.logs))
        ps.save(q.directory, q.txns, [lg.next_offset for lg in q.logs])
    txn_journal.attach(q, q.txns)
    return q.txns


def txn_batch(base: int, count: int, seq: int) -> bh.BatchHeader:
    return bh.BatchHeader(base, count - 1, TRANSACTIONAL, 0, PID, EPOCH, seq, count)


def write(q: StreamQueue, count: int) -> int:
    """``count`` keyed records stored one by one, as a compacted topic stores Kafka's."""
    first = q.logs[0].next_offset
    append_stored(q, 0, [(b"\x00\x00" + b"\x00" * 4, 0, b"k%d" % i) for i in range(count)])
    return first


def test_an_abort_and_an_open_transaction_come_back_after_a_crash(tmp_path: Path) -> None:
    q = compacted(tmp_path)
    part = state_of(q)[0]
    part.appended(txn_batch(0, 3, 0), 0)
    write(q, 3)
    part.marker(PID, EPOCH, False, 3)  # aborted: offsets 0-2
    part.appended(txn_batch(3, 2, 3), 3)
    write(q, 2)  # open: 3-4
    assert q.txns.journal.last == 2
    q.txns.journal.log.flush()
    for lg in q.logs:
        lg.flush()  # what a crash leaves: no clean-close snapshot (the first one is empty)

    again = compacted(tmp_path)
    restored = again.txns[0]
    assert [restored.is_aborted(o) for o in range(5)] == [True] * 3 + [False] * 2
    assert restored.aborted_between(0, 5) == [(PID, 0)]
    assert restored.lso(5) == 3  # the open transaction holds readers back
    again.close()


def test_a_clean_close_snapshot_covers_the_journal(tmp_path: Path) -> None:
    q = compacted(tmp_path)
    part = state_of(q)[0]
    part.appended(txn_batch(0, 2, 0), 0)
    write(q, 2)
    part.marker(PID, EPOCH, True, 2)
    q.close()  # the snapshot records the journal offset it covers
    again = compacted(tmp_path)
    assert again.txns.journal_next == 2 and again.txns[0].lso(2) == 2
    part = state_of(again)[0]
    part.appended(txn_batch(2, 1, 2), 2)  # journaled from where the snapshot stopped
    write(again, 1)
    again.txns.journal.log.flush()
    third = compacted(tmp_path)
    assert third.txns[0].lso(3) == 2  # the entry after the snapshot was replayed
    third.close()


def test_a_stream_that_is_not_compacted_journals_nothing(tmp_path: Path) -> None:
    args = {"x-queue-type": "stream"}
    settings = StreamSettings.parse("d", "/", True, False, False, args)
    q = StreamQueue("d", "/", arguments=args, settings=settings,
                    storage=Storage(None, tmp_path, fsync="always"))
    state = state_of(q)
    assert state.journal is None
    q.close()
    assert not (q.directory / txn_journal.LOG_NAME).exists()
