"""The partitions of a stream as its front ends read them: Kafka (Fetch, ListOffsets,
Produce's answers, DeleteRecords, transactions), the management API and the CLI.

A front end needs a partition's bounds (first offset kept, Kafka's log start offset, the
next offset, which is the high watermark), the stored frames from an offset, lookups by
time, and to hand what it serves to the OS. It must not reach the store log itself, which
also appends, deletes segments and moves the start: those stay the stream's
(``stream.py``, ``stream_admin.py``, ``retention.py``). ``StreamQueue.partitions`` gives
this view; a partition added by CreatePartitions shows up in it at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from smartbroker.queues.offsets import PartitionOffsets
from smartbroker.store.api import Frame, Log, Record, SegmentInfo

if TYPE_CHECKING:
    from smartbroker.queues.stream import StreamQueue


class PartitionLog:
    """One partition of a stream, read-only but for ``write_out``. The names of the read
    methods are the store's, so ``position()`` and ``PartitionOffsets.of`` take either."""

    __slots__ = ("_stream", "_log", "index")

    def __init__(self, stream: StreamQueue, index: int, log: Log) -> None:
        self._stream = stream
        self._log = log
        self.index = index

    @property
    def first_offset(self) -> int:
        """The first offset still kept (retention, DeleteRecords and compaction move it)."""
        return self._log.first_offset

    @property
    def next_offset(self) -> int:
        """The offset the next record gets: Kafka's high watermark and log end offset
        (replicated: the high watermark, which the log end may be past)."""
        limits = self._stream.limits
        end = self._log.next_offset
        if limits is None or limits[self.index] >= end:
            return end
        return max(limits[self.index], self._log.first_offset)

    @property
    def log_start(self) -> int:
        """Kafka's log start offset. Compaction never moves it (Kafka's cleaner keeps an
        emptied segment's base offset): a compact-only topic starts at 0, and a fetch
        inside the removed head reads on from the first record kept."""
        settings = self._stream.stream
        return 0 if settings.compact and not settings.delete else self._log.first_offset

    def bounds(self) -> tuple[int, int]:
        """(log start offset, high watermark): what Fetch checks an offset against."""
        return self.log_start, self.next_offset

    @property
    def size_bytes(self) -> int:
        return self._log.size_bytes

    def segments(self) -> list[SegmentInfo]:
        return self._log.segments()

    def frames(self, offset: int) -> Iterator[Frame]:
        """The stored frames from the one holding ``offset`` on (it may start before
        ``offset``): a Kafka batch as the bytes it was stored as (``batch``), an AMQP
        frame as its records. What Fetch serves without decoding Kafka records."""
        return self._log.scan_frames(offset)

    def scan_records(self, start: int = 0) -> Iterator[Record]:
        """Records one by one from ``start`` (a compacted gap skips ahead)."""
        return self._log.scan_records(start)

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """The first offset whose timestamp is at or after ``timestamp_ms`` (the next
        offset when every record is older), from the segments' time index."""
        return self._log.offset_for_timestamp(timestamp_ms)

    def write_out(self) -> None:
        """Hand what was appended to the OS before a client is told of it: it then
        survives a broker crash (kill -9) as Kafka's page cache does, not a power cut."""
        self._log.write_out()

    def offsets(self) -> PartitionOffsets:
        """What the partition holds, by offset (the management API and the CLI)."""
        return PartitionOffsets.of(self.index, self._log)


class StreamPartitions:
    """Every partition of one stream, by index: ``len``, iteration, ``[i]``, ``get``, ``has``."""

    __slots__ = ("_stream",)

    def __init__(self, stream: StreamQueue) -> None:
        self._stream = stream

    def __len__(self) -> int:
        return len(self._stream.logs)

    def __getitem__(self, index: int) -> PartitionLog:
        """Raises IndexError for a partition the stream does not have (negatives too)."""
        logs = self._stream.logs
        if not 0 <= index < len(logs):
            raise IndexError(f"stream {self._stream.name!r} has no partition {index}")
        return PartitionLog(self._stream, index, logs[index])

    def get(self, index: int) -> PartitionLog | None:
        """The partition, or None when the stream has no partition ``index``: what a
        client's partition number is checked with."""
        logs = self._stream.logs
        return PartitionLog(self._stream, index, logs[index]) if 0 <= index < len(logs) else None

    def has(self, index: int) -> bool:
        """Whether the stream has partition ``index``."""
        return 0 <= index < len(self._stream.logs)

    def __iter__(self) -> Iterator[PartitionLog]:
        stream = self._stream
        return (PartitionLog(stream, i, lg) for i, lg in enumerate(list(stream.logs)))

    def first_offsets(self) -> list[int]:
        """Each partition's first offset kept, in partition order."""
        return [lg.first_offset for lg in self._stream.logs]

    def next_offsets(self) -> list[int]:
        """Each partition's next offset (its log end), in partition order."""
        return [lg.next_offset for lg in self._stream.logs]
