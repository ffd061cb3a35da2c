"""The storage contract shared by the in-memory and on-disk logs.

Callers (durable queues, stream partitions) code against ``Log``; tests run one contract
suite over every implementation so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

FsyncPolicy = Literal["always", "batch", "never"]
FSYNC_POLICIES: tuple[str, ...] = ("always", "batch", "never")


class StoreUnavailable(Exception):
    """The disk refused a write or an fsync (full, read-only, I/O error).

    The broker turns this into ``basic.nack``. Nothing already accepted is lost from the
    engine's buffers; the next append/sync retries and succeeds once the disk recovers.
    """


class Record(NamedTuple):
    """One record as read back: its offset, header timestamp, optional key and payload."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    payload: bytes


class Frame(NamedTuple):
    """One stored frame as Fetch reads it: a Kafka batch's bytes as they were stored
    (``batch``, no record decoded), or the records of an AMQP frame (``batch`` None)."""

    base: int
    count: int  # offsets it covers
    timestamp_ms: int  # a Kafka batch's max timestamp
    batch: bytes | None
    records: list[Record]


class SegmentInfo(NamedTuple):
    """What retention and queue-side deletion need to know about one segment."""

    base_offset: int
    next_offset: int  # one past the last offset the segment may hold
    size_bytes: int
    max_timestamp_ms: int  # -1 when the segment is empty
    active: bool  # the segment appends go to


@dataclass
class LogStats:
    """Counters for what recovery and I/O ran into; exported as metrics by the broker."""

    bad_records: int = 0  # frames skipped for a bad CRC or a broken structure
    truncated_bytes: int = 0  # torn tail bytes cut at recovery
    rebuilt_indexes: int = 0  # index files missing or stale, rebuilt by scanning
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)  # offset gaps with no file
    unreadable_segments: list[str] = field(default_factory=list)
    write_errors: int = 0
    fsync_errors: int = 0
    fsyncs: int = 0


class Log(Protocol):
    """An append-only log of records addressed by dense, never-reused integer offsets."""

    @property
    def first_offset(self) -> int: ...
    @property
    def next_offset(self) -> int: ...
    @property
    def durable_offset(self) -> int:
        """All offsets below this are durable under the configured fsync policy."""
        ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def segment_count(self) -> int: ...
    @property
    def stats(self) -> LogStats: ...

    def append(self, payload: bytes, timestamp_ms: int | None = None, key: bytes | None = None) -> int: ...
    def append_batch(
        self, payloads: list[bytes], timestamp_ms: int | None = None, keys: list[bytes | None] | None = None
    ) -> list[int]: ...
    def read(self, offset: int) -> bytes | None: ...
    def read_record(self, offset: int) -> Record | None: ...
    def scan(self, start: int = 0) -> Iterator[tuple[int, bytes]]: ...
    def scan_records(self, start: int = 0) -> Iterator[Record]: ...
    def scan_frames(self, start: int = 0) -> Iterator[Frame]:
        """Frames from the one holding ``start`` on (it may begin before ``start``)."""
        ...
    def append_kafka_batch(self, batch: bytes | bytearray | memoryview, count: int,
                           max_ts: int) -> int:
        """Store a Kafka RecordBatch v2 as one frame of ``count`` offsets; its base offset."""
        ...
    def offset_for_timestamp(self, timestamp_ms: int) -> int: ...
    def segments(self) -> list[SegmentInfo]: ...
    def segment_of(self, offset: int) -> int | None: ...
    def delete_segment(self, base_offset: int) -> bool: ...
    def delete_before(self, offset: int) -> int: ...
    def set_start(self, offset: int) -> None:
        """Kafka's log start offset: nothing below ``offset`` is read any more (segments
        wholly below it are deleted); the caller stores it and sets it again on open."""
        ...
    def roll(self) -> None: ...
    async def sync(self) -> None: ...
    async def wait_durable(self, offset: int) -> None: ...
    def write_out(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...
