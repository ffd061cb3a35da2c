"""One partition's idempotent and transactional producers, with Kafka's rules (KIP-98).

Kafka keeps, per partition and producer id, the producer's epoch and the metadata of its
last five batches (``ProducerStateManager`` / ``ProducerAppendInfo``); this is the same,
with the same rules, so that the Kafka front end can answer as Kafka does:

* a batch whose (epoch, first sequence, last sequence) equals one of the last five is a
  retry: it is not stored again and is acknowledged with its original offset;
* an older epoch is ``INVALID_PRODUCER_EPOCH``; a newer epoch must start at sequence 0;
  within an epoch the first sequence must follow the last (wrapping at 2^31-1), else
  ``OUT_OF_ORDER_SEQUENCE_NUMBER`` (a retry older than the five included, as Kafka 2.x+);
* a producer the partition does not know (or has forgotten) is accepted at any sequence
  and tracked from there (Kafka 2.5+, KIP-360);
* a producer inside a transaction must write transactional batches (``INVALID_TXN_STATE``).

Transactions: a producer's first transactional batch opens its transaction at that offset;
a control batch (COMMIT or ABORT marker) closes it. The last stable offset (LSO) is the
first offset of the earliest open transaction, else the high watermark: read_committed
readers (Kafka Fetch with isolation level 1, and every AMQP reader) stop there. An aborted
transaction is remembered as (producer id, first offset, marker offset) for Fetch's
``aborted_transactions`` list, and as the offset ranges its batches occupy, so an AMQP
reader (which sees offsets, not producer ids) can skip them.

A whole stream's partitions, their snapshot and their rebuild at load are in
``producer_state.py``; the batch header these rules read is ``batch_header.py``'s.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from smartbroker.queues.batch_header import MAX_SEQUENCE, BatchHeader, control_type, parse_header

CACHED_BATCHES = 5  # Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN
NO_PRODUCER_ID = -1
PRODUCER_ID_EXPIRATION_MS = 86_400_000  # Kafka's producer.id.expiration.ms default


class ProducerStateError(Exception):
    """A batch the rules refuse; ``error`` is Kafka's error name (``ErrorCode[error]``)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


class BatchMeta(NamedTuple):
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque[BatchMeta] = field(default_factory=lambda: deque(maxlen=CACHED_BATCHES))
    txn_first: int = -1  # first offset of its open transaction here, -1 none
    coordinator_epoch: int = -1
    last_ts: int = -1  # its last batch's max timestamp (ms): what expiry looks at

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


def _in_sequence(last: int, first: int) -> bool:
    return first == last + 1 or (first == 0 and last == MAX_SEQUENCE)


class PartitionProducers:
    """One partition's producers, open transactions and aborted transactions."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        self.open: dict[int, list[list[int]]] = {}  # pid -> [first, last] ranges it wrote
        self.aborted: list[tuple[int, int, int]] = []  # (pid, first offset, marker offset)
        self._starts: list[int] = []  # aborted data ranges, sorted, for AMQP readers
        self._ends: list[int] = []
        # a compacted stream's transaction journal (txn_journal.py) and this partition's
        # index in it: transactional batches and markers are journaled as they happen
        self.journal: Any = None
        self.index = 0

    # -- checks (before an append) ---------------------------------------------------------
    def duplicate(self, h: BatchHeader) -> BatchMeta | None:
        """The batch already stored when ``h`` is a retry of one of the last five."""
        entry = self.producers.get(h.producer_id)
        if entry is None or entry.epoch != h.producer_epoch:
            return None
        last = h.last_sequence
        for meta in entry.batches:
            if meta.first_seq == h.base_sequence and meta.last_seq == last:
                return meta
        return None

    def check(self, h: BatchHeader) -> None:
        """Raise ProducerStateError when Kafka would refuse this data batch."""
        entry = self.producers.get(h.producer_id)
        if entry is None:
            return  # unknown (or forgotten) producer: any sequence, Kafka 2.5+
        if h.producer_epoch < entry.epoch:
            raise ProducerStateError(
                "INVALID_PRODUCER_EPOCH", f"epoch {h.producer_epoch} of producer "
                f"{h.producer_id} is older than its current epoch {entry.epoch}")
        if h.producer_epoch != entry.epoch:
            if h.base_sequence != 0:
                raise ProducerStateError(
                    "OUT_OF_ORDER_SEQUENCE_NUMBER", f"new epoch {h.producer_epoch} of producer "
                    f"{h.producer_id} starts at sequence {h.base_sequence}, not 0")
        elif not _in_sequence(entry.last_seq, h.base_sequence):
            raise ProducerStateError(
                "OUT_OF_ORDER_SEQUENCE_NUMBER", f"producer {h.producer_id}: sequence "
                f"{h.base_sequence} does not follow {entry.last_seq}")
        if entry.txn_first >= 0 and not h.transactional:
            raise ProducerStateError("INVALID_TXN_STATE", f"producer {h.producer_id} has an "
                                     "open transaction: its writes must be transactional")

    # -- updates (after an append, and when rebuilding) ------------------------------------
    def appended(self, h: BatchHeader, base: int) -> None:
        """A data batch (``h``) was stored at offsets ``base`` .. base + last offset delta."""
        pid = h.producer_id
        if pid < 0:
            return
        last = base + h.last_offset_delta
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(h.producer_epoch)
        elif entry.epoch != h.producer_epoch:
            entry.epoch = h.producer_epoch
            entry.batches.clear()
        entry.batches.append(BatchMeta(h.base_sequence, h.last_sequence, base, last))
        entry.last_ts = max(entry.last_ts, h.max_timestamp)
        if h.transactional:
            ranges = self.open.get(pid)
            if ranges is None:
                entry.txn_first = base
                self.open[pid] = [[base, last]]
            elif ranges[-1][1] + 1 == base:
                ranges[-1][1] = last
            else:
                ranges.append([base, last])
            if self.journal is not None:
                self.journal.record_appended(self.index, h, base)

    def marker(self, pid: int, epoch: int, commit: bool, offset: int,
               coordinator_epoch: int = -1, timestamp_ms: int = -1) -> None:
        """A COMMIT or ABORT control batch of ``pid`` was stored at ``offset``."""
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(epoch)
        elif epoch != entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        first = entry.txn_first if entry.txn_first >= 0 else offset
        entry.txn_first = -1
        entry.coordinator_epoch = coordinator_epoch
        entry.last_ts = max(entry.last_ts, timestamp_ms)
        ranges = self.open.pop(pid, [])
        if self.journal is not None:
            self.journal.record_marker(self.index, pid, epoch, commit, offset,
                                       coordinator_epoch, timestamp_ms)
        if not commit:
            self.aborted.append((pid, first, offset))
            for start, end in ranges:
                i = bisect_right(self._starts, start)
                self._starts.insert(i, start)
                self._ends.insert(i, end)

    def observe(self, batch: bytes | bytearray | memoryview, base: int) -> None:
        """Rebuild: a stored batch (at ``base``) as if just appended, without checks."""
        h = parse_header(batch)
        if h.producer_id < 0:
            return
        if h.control:
            kind = control_type(batch)
            if kind in (0, 1):
                self.marker(h.producer_id, h.producer_epoch, kind == 1, base,
                            timestamp_ms=h.max_timestamp)
        else:
            self.appended(h, base)

    # -- reading ---------------------------------------------------------------------------
    def lso(self, high_watermark: int) -> int:
        """The last stable offset: where the earliest open transaction starts."""
        if not self.open:
            return high_watermark
        return min(r[0][0] for r in self.open.values())

    def aborted_between(self, start: int, end: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions a Fetch of
        [start, end) must list (Kafka: last offset >= start and first offset < end)."""
        aborted = self.aborted  # in marker-offset order: skip those ended before start
        lo, hi = 0, len(aborted)
        while lo < hi:
            mid = (lo + hi) // 2
            if aborted[mid][2] < start:
                lo = mid + 1
            else:
                hi = mid
        return [(pid, first) for pid, first, _last in aborted[lo:] if first < end]

    def is_aborted(self, offset: int) -> bool:
        """Whether ``offset`` holds a record of an aborted transaction (AMQP readers)."""
        i = bisect_right(self._starts, offset) - 1  # ranges are disjoint: ends sorted too
        return i >= 0 and self._ends[i] >= offset

    def expire(self, now_ms: int, idle_ms: int = PRODUCER_ID_EXPIRATION_MS) -> int:
        """Forget producers idle for ``idle_ms`` without an open transaction (Kafka's
        producer.id.expiration.ms); a forgotten one is accepted at any sequence again."""
        old = [pid for pid, e in self.producers.items()
               if e.txn_first < 0 and e.last_ts < now_ms - idle_ms]
        for pid in old:
            del self.producers[pid]
        return len(old)

    def forget_before(self, log_start: int) -> None:
        """Drop aborted transactions retention has removed entirely."""
        self.aborted = [a for a in self.aborted if a[2] >= log_start]
        keep = [(s, e) for s, e in zip(self._starts, self._ends, strict=True) if e >= log_start]
        self._starts = [s for s, _ in keep]
        self._ends = [e for _, e in keep]

    # -- snapshot --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"producers": {str(pid): [e.epoch, e.txn_first, e.coordinator_epoch,
                                         [list(b) for b in e.batches], e.last_ts]
                              for pid, e in self.producers.items()},
                "open": {str(pid): r for pid, r in self.open.items()},
                "aborted": [list(a) for a in self.aborted],
                "ranges": [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionProducers:
        state = cls()
        for pid, (epoch, txn_first, coord, batches, last_ts) in data["producers"].items():
            entry = ProducerEntry(epoch, txn_first=txn_first, coordinator_epoch=coord,
                                  last_ts=last_ts)
            entry.batches.extend(BatchMeta(*b) for b in batches)
            state.producers[int(pid)] = entry
        state.open = {int(pid): r for pid, r in data["open"].items()}
        state.aborted = [tuple(a) for a in data["aborted"]]  # type: ignore[misc]
        state._starts = [s for s, _ in data["ranges"]]
        state._ends = [e for _, e in data["ranges"]]
        return state
