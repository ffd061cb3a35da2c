"""The transaction journal of a compacted stream: its producers' transactional batches and
COMMIT/ABORT markers, durable beside the partition logs.

Why: a compacted topic stores Kafka records one by one (compaction needs each key, and
keeps or drops single records), so its partition logs hold neither producer ids nor
control batches, and a restart could not rebuild from them what ``producer_state.py``
knows: which offsets an aborted transaction wrote (read_committed readers and every AMQP
reader skip them) and which transactions are still open (readers stop at the last stable
offset). Kafka keeps that in the log (markers, and its ``.txnindex``); here it is one small
log per stream, ``txn-journal``, written on the loop in the order the state changed:

* ``A`` entries: a transactional batch's header fields and the offset it was stored at
  (``PartitionProducers.appended``), durable before the Produce is acknowledged;
* ``M`` entries: a marker (``PartitionProducers.marker``), durable before EndTxn answers.

At load the state is the producer-state snapshot plus the journal past the journal offset
the snapshot was taken at (``StreamProducers.journal_next``). Each snapshot lets the
journal's older closed segments go. Streams that are not compacted write nothing here.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any

from smartbroker.queues import producer_state as ps
from smartbroker.queues.batch_header import BatchHeader
from smartbroker.queues.stream_storage import open_log
from smartbroker.store.log import SegmentLog

log = logging.getLogger("smartbroker.stream")
LOG_NAME = "txn-journal"
SEGMENT_BYTES = 1 << 20
# kind, partition, base, last offset delta, attributes, max ts, pid, epoch, sequence, count
_APPENDED = struct.Struct(">cIqiHqqhii")
# kind, partition, pid, epoch, commit, offset, coordinator epoch, timestamp
_MARKER = struct.Struct(">cIqh?qiq")


class TxnJournal:
    """The journal of one stream; ``record_*`` are ``PartitionProducers``' hooks."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.log = open_log(queue.directory, queue.storage, LOG_NAME, SEGMENT_BYTES, lazy=True)
        self.last = -1  # the journal offset of the last entry written since the load

    @property
    def active(self) -> bool:
        """Journaling only while the stream is compacted (else markers are in the log)."""
        return self.queue.stream.compact and not self.queue.deleted

    @property
    def next_offset(self) -> int:
        return self.log.next_offset if getattr(self.log, "opened", True) else 0

    def record_appended(self, partition: int, h: BatchHeader, base: int) -> None:
        if h.transactional and self.active:
            self.last = self.log.append(_APPENDED.pack(
                b"A", partition, base, h.last_offset_delta, h.attributes, h.max_timestamp,
                h.producer_id, h.producer_epoch, h.base_sequence, h.count))

    def record_marker(self, partition: int, pid: int, epoch: int, commit: bool, offset: int,
                      coordinator_epoch: int, timestamp_ms: int) -> None:
        if self.active:
            self.last = self.log.append(_MARKER.pack(
                b"M", partition, pid, epoch, commit, offset, coordinator_epoch, timestamp_ms))

    async def wait_durable(self, offset: int | None = None) -> None:
        """Until the journal is durable up to ``offset`` (default: its last entry)."""
        offset = self.last if offset is None else offset
        if offset >= 0:
            await self.log.wait_durable(offset)

    def trim(self, snapshot_next: int) -> None:
        """A snapshot covering the journal up to ``snapshot_next`` is durable: closed
        segments entirely below it go."""
        if getattr(self.log, "opened", True):
            self.log.delete_before(snapshot_next)

    def close(self) -> None:
        self.log.close()


def replay(journal: Any, state: ps.StreamProducers, start: int, name: str) -> int:
    """Apply the entries of the ``journal`` log from offset ``start`` to ``state``."""
    count = 0
    for rec in journal.scan_records(start):
        payload = rec.payload
        try:
            if payload[:1] == b"A":
                (_, p, base, delta, attributes, max_ts, pid, epoch, seq,
                 n) = _APPENDED.unpack(payload)
                state[p].appended(BatchHeader(base, delta, attributes, max_ts, pid,
                                                 epoch, seq, n), base)
            elif payload[:1] == b"M":
                _, p, pid, epoch, commit, offset, coord, ts = _MARKER.unpack(payload)
                state[p].marker(pid, epoch, commit, offset, coord, ts)
            else:
                raise struct.error(f"entry kind {payload[:1]!r}")
        except struct.error as exc:  # a record the log's CRC passed: not ours
            log.error("stream directory %s: transaction journal entry at %d skipped: %s",
                      name, rec.offset, exc)
            continue
        count += 1
    return count


class JournaledSync:
    """A Produce's durability on a compacted stream: its partition log up to the offset
    asked for, and the journal up to its last entry (the batch's ``A`` entry among them)."""

    __slots__ = ("log", "journal", "last")

    def __init__(self, log: Any, journal: TxnJournal) -> None:
        self.log = log
        self.journal = journal
        self.last = journal.last

    async def wait_durable(self, offset: int) -> None:
        await self.log.wait_durable(offset)
        await self.journal.wait_durable(self.last)


def journaled(result: Any, state: ps.StreamProducers | None) -> Any:
    """``result`` (a PublishResult) whose sync also waits for the stream's journal, when
    it has written one since the load."""
    journal = None if state is None else state.journal
    if journal is None or journal.last < 0 or result.sync is None:
        return result
    return type(result)(result.accepted, JournaledSync(result.sync, journal))


def attach(queue: Any, state: ps.StreamProducers) -> None:
    """Give a compacted stream's producer state its journal (once)."""
    if state.journal is None and queue.directory is not None and queue.stream.compact:
        state.journal = TxnJournal(queue)


def replay_at_load(directory: Path | None, state: ps.StreamProducers) -> None:
    """``producer_state.load``'s last step: apply the journal (if the stream has one) past
    the offset the snapshot covers. A journal shorter than that lost entries the snapshot
    holds anyway (a crash after the snapshot's fsync, before the journal's): new entries
    then start from its end, which the next snapshot records."""
    path = None if directory is None else directory / LOG_NAME
    if path is None or not path.exists():
        return
    reader = SegmentLog(path, fsync="never")
    try:
        state.journal_next = min(state.journal_next, reader.next_offset)
        replayed = replay(reader, state, state.journal_next, directory.name)
    finally:
        reader.close()
    if replayed:
        log.info("stream directory %s: %d transaction journal entries replayed",
                 directory.name, replayed)
