"""A stream's Kafka producer state: every partition's ``PartitionProducers`` (the KIP-98
rules, ``partition_producers.py``), kept across restarts.

The state is built from the stored batches' headers when a stream loads (``rebuild``),
scanning only what a snapshot (written on clean shutdown, ``save``) does not cover; a
compacted stream, whose logs keep no producer ids, replays its transaction journal
(``txn_journal.py``) on top. A stream that never had a producer id has no snapshot and no
state at all (``load`` returns None): the AMQP-only fast path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from smartbroker.queues.kafka_batch import HEADER_SIZE
from smartbroker.queues.partition_producers import PRODUCER_ID_EXPIRATION_MS, PartitionProducers

SNAPSHOT = "producer-state.json"


class StreamProducers:
    """Every partition's ``PartitionProducers`` of one stream (``StreamQueue.txns``)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = [PartitionProducers() for _ in range(partitions)]
        self._journal: Any = None  # a compacted stream's TxnJournal (txn_journal.py)
        self.journal_next = 0  # the journal offset the loaded snapshot covers up to

    @property
    def journal(self) -> Any:
        return self._journal

    @journal.setter
    def journal(self, journal: Any) -> None:
        self._journal = journal
        for i, part in enumerate(self.partitions):
            part.journal, part.index = journal, i

    def __getitem__(self, partition: int) -> PartitionProducers:
        parts = self.partitions
        while partition >= len(parts):  # the stream grew (CreatePartitions)
            part = PartitionProducers()
            part.journal, part.index = self._journal, len(parts)
            parts.append(part)
        return parts[partition]

    def lso(self, partition: int, high_watermark: int) -> int:
        return self.partitions[partition].lso(high_watermark)

    def expire(self, now_ms: int, idle_ms: int = PRODUCER_ID_EXPIRATION_MS) -> int:
        return sum(p.expire(now_ms, idle_ms) for p in self.partitions)

    def forget_before(self, log_starts: list[int]) -> None:
        """Drop aborted transactions that retention or DeleteRecords removed."""
        for part, start in zip(self.partitions, log_starts, strict=False):
            part.forget_before(start)


def snapshot_path(directory: Path | None) -> Path | None:
    return None if directory is None else directory / SNAPSHOT


def save(directory: Path | None, state: StreamProducers, next_offsets: list[int]) -> None:
    """Write the snapshot: the state and, per partition, the offset it is complete up to
    (the next load scans only past it). Written atomically; fsynced. At a stream's close
    (the only call once a journal exists) the journal is flushed and closed first."""
    if state.journal is not None:
        state.journal.close()
    write_snapshot(directory, encode_snapshot(state, next_offsets))


def encode_snapshot(state: StreamProducers, next_offsets: list[int]) -> bytes:
    """The snapshot's bytes (taken on the loop, where the state is consistent)."""
    journal = state.journal
    return json.dumps({"next": next_offsets,
                       "journal": state.journal_next if journal is None else journal.next_offset,
                       "partitions": [p.to_json() for p in state.partitions]}).encode()


def write_snapshot(directory: Path | None, data: bytes) -> None:
    """Replace the snapshot file with ``data`` (atomically, fsynced; any thread)."""
    path = snapshot_path(directory)
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(directory: Path | None, logs: list[Any],
         frames: Any) -> StreamProducers | None:
    """The state of a stream at load: None when it never had a producer id (no snapshot:
    the AMQP-only fast path), else the snapshot plus what the logs hold past it.
    ``frames(partition, offset)`` yields (base offset, Kafka batch bytes or None)."""
    path = snapshot_path(directory)
    if path is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        parts = [PartitionProducers.from_json(p) for p in data["partitions"]]
        nexts = list(data["next"])
        journal_next = int(data.get("journal", 0))
        if len(parts) > len(logs) or len(nexts) != len(parts):
            raise ValueError("partition count does not match")
        parts += [PartitionProducers() for _ in range(len(logs) - len(parts))]
        nexts += [0] * (len(logs) - len(nexts))
    except (OSError, ValueError, KeyError, TypeError):
        parts, nexts = [PartitionProducers() for _ in logs], [0] * len(logs)
        journal_next = 0
    state = StreamProducers(0)
    state.partitions = parts
    state.journal_next = journal_next
    for p, lg in enumerate(logs):
        start = nexts[p]
        if start > lg.next_offset:  # the log lost its tail (recovery): scan it all
            state.partitions[p] = PartitionProducers()
            start = 0
        rebuild(state.partitions[p], frames(p, max(start, lg.first_offset)), start)
    from smartbroker.queues import txn_journal  # it imports this module

    txn_journal.replay_at_load(directory, state)  # a compacted stream's transactions
    for p, lg in enumerate(logs):
        state.partitions[p].forget_before(lg.first_offset)
    return state


def rebuild(part: PartitionProducers, frames: Iterable[tuple[int, Any]], start: int) -> None:
    """Replay stored Kafka batches' headers at or past ``start`` into ``part``."""
    for base, batch in frames:
        if batch is not None and base >= start and len(batch) >= HEADER_SIZE:
            part.observe(batch, base)
