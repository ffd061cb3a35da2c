"""MemoryLog: the in-memory implementation of the Log contract.

Used for transient queues/streams and as the reference in the contract tests. Segments
roll at the same byte sizes as on disk, so segment-level behaviour (deletion, retention)
matches SegmentLog.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from . import record
from .api import Frame, LogStats, Record, SegmentInfo


class KafkaItem(NamedTuple):
    """A stored Kafka batch (``record.py``'s Kafka frame, in memory): ``count`` offsets."""

    offset: int  # base offset
    timestamp_ms: int  # the batch's max timestamp
    count: int
    batch: bytes


def expand(item: Record | KafkaItem) -> list[Record]:
    """The records of one stored item."""
    if type(item) is KafkaItem:
        return record.expand_batch(item.batch, item.offset, item.timestamp_ms)
    return [item]  # type: ignore[list-item]


@dataclass
class _Seg:
    base: int
    records: list[Record | KafkaItem] = field(default_factory=list)
    size: int = 0
    max_ts: int = -1
    next_offset: int = -1  # one past the last offset it holds (compaction may leave gaps)
    offsets: list[int] = field(default_factory=list)  # record offsets, for bisecting gaps

    def __post_init__(self) -> None:
        if self.next_offset < 0:
            self.next_offset = self.base

    def add(self, rec: Record | KafkaItem) -> None:
        self.records.append(rec)
        self.offsets.append(rec.offset)
        self.next_offset = rec.offset + (rec.count if type(rec) is KafkaItem else 1)  # type: ignore[union-attr]

    def index(self, offset: int) -> int:
        """Position of the first item holding or following ``offset``."""
        if not self.records or self.next_offset - self.base == len(self.records):
            return max(0, offset - self.base)  # dense, one offset per item
        i = bisect_left(self.offsets, offset)
        if i and (i == len(self.offsets) or self.offsets[i] != offset):
            prev = self.records[i - 1]
            if type(prev) is KafkaItem and prev.offset + prev.count > offset:
                return i - 1  # inside a batch
        return i


class MemoryLog:
    """Records in lists; every append is immediately 'durable' (there is no disk)."""

    def __init__(self, *, segment_bytes: int = 32 << 20, **_ignored: object) -> None:
        self.segment_bytes = segment_bytes
        self._segs = [_Seg(0)]
        self._stats = LogStats()
        self._start = 0  # Kafka's log start offset (set_start); below it nothing is read

    first_offset = property(lambda self: max(self._segs[0].base, self._start))
    next_offset = property(lambda self: self._segs[-1].next_offset)
    durable_offset = next_offset
    size_bytes = property(lambda self: sum(s.size for s in self._segs))
    segment_count = property(lambda self: len(self._segs))
    stats = property(lambda self: self._stats)

    def _room(self, size: int) -> _Seg:
        seg = self._segs[-1]
        if seg.size and seg.size + size > self.segment_bytes:
            seg = _Seg(seg.next_offset)
            self._segs.append(seg)
        return seg

    def write_out(self) -> None:
        """Nothing to hand over: memory is the medium."""

    def append(self, payload: bytes, timestamp_ms: int | None = None, key: bytes | None = None) -> int:
        size = record.frame_size(len(payload), len(key) if key else 0)
        seg = self._room(size)
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        off = seg.next_offset
        seg.add(Record(off, ts, None if key is None else bytes(key), bytes(payload)))
        seg.size += size
        seg.max_ts = max(seg.max_ts, ts)
        return off

    def append_grouped(self, payload: bytes, key: bytes | None = None, head: bytes = b"") -> int:
        """As ``SegmentLog.append_grouped``: nothing to frame in memory."""
        return self.append(head + payload if head else payload, None, key)

    def append_batch(
        self, payloads: list[bytes], timestamp_ms: int | None = None, keys: list[bytes | None] | None = None
    ) -> list[int]:
        if not payloads:
            return []
        items = list(zip(keys or [None] * len(payloads), payloads, strict=True))
        size = len(record.encode_batch(0, 0, items))
        seg = self._room(size)
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        base = seg.next_offset
        for i, (key, payload) in enumerate(items):
            seg.add(Record(base + i, ts, key, bytes(payload)))
        seg.size += size
        seg.max_ts = max(seg.max_ts, ts)
        return list(range(base, base + len(items)))

    def append_kafka_batch(self, batch: bytes | bytearray | memoryview, count: int,
                           max_ts: int) -> int:
        """A Kafka batch as one item of ``count`` offsets, baseOffset patched."""
        data = bytearray(batch)
        seg = self._room(record.OVERHEAD + len(data))
        base = seg.next_offset
        data[0:8] = base.to_bytes(8, "big", signed=True)
        data[12:16] = b"\x00\x00\x00\x00"  # partitionLeaderEpoch 0, as on disk
        seg.add(KafkaItem(base, max_ts, count, bytes(data)))
        seg.size += record.OVERHEAD + len(data)
        seg.max_ts = max(seg.max_ts, max_ts)
        return base

    def _find(self, offset: int) -> _Seg | None:
        i = bisect_right([s.base for s in self._segs], offset) - 1
        if i < 0 or offset >= self._segs[i].next_offset:
            return None
        return self._segs[i]

    def read_record(self, offset: int) -> Record | None:
        seg = self._find(offset) if offset >= self._start else None
        if seg is None:
            return None
        i = seg.index(offset)
        item = seg.records[i] if i < len(seg.records) else None
        if type(item) is KafkaItem:
            return next((r for r in expand(item) if r.offset == offset), None)
        return item if item is not None and item.offset == offset else None  # type: ignore[return-value]

    def read(self, offset: int) -> bytes | None:
        rec = self.read_record(offset)
        return None if rec is None else rec.payload

    def scan_records(self, start: int = 0) -> Iterator[Record]:
        start = max(start, self._start)
        for seg in list(self._segs):
            if seg.next_offset > start:
                for item in seg.records[seg.index(start) :]:
                    if type(item) is KafkaItem:
                        yield from (r for r in expand(item) if r.offset >= start)
                    else:
                        yield item  # type: ignore[misc]

    def scan_frames(self, start: int = 0) -> Iterator[Frame]:
        start = max(start, self._start)
        for seg in list(self._segs):
            if seg.next_offset > start:
                for item in seg.records[seg.index(start) :]:
                    if type(item) is KafkaItem:
                        yield Frame(item.offset, item.count, item.timestamp_ms, item.batch, [])
                    else:
                        yield Frame(item.offset, 1, item.timestamp_ms, None, [item])  # type: ignore[list-item]

    def scan(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        for rec in self.scan_records(start):
            yield rec.offset, rec.payload

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        for seg in self._segs:
            if seg.max_ts < timestamp_ms:
                continue
            for item in seg.records:
                if item.timestamp_ms >= timestamp_ms:  # a batch's is its max
                    for rec in expand(item):
                        if rec.timestamp_ms >= timestamp_ms:
                            return max(rec.offset, self._start)
        return self.next_offset

    def segments(self) -> list[SegmentInfo]:
        last = self._segs[-1]
        return [SegmentInfo(s.base, s.next_offset, s.size, s.max_ts, s is last) for s in self._segs]

    def segment_of(self, offset: int) -> int | None:
        seg = self._find(offset)
        return None if seg is None else seg.base

    def closed_segments(self) -> list[_Seg]:
        """Closed segments: what compaction may rewrite."""
        return self._segs[:-1]

    def replace_segment(self, old: _Seg, kept: list[Record] | None) -> bool:
        """Swap a closed segment's records for the compacted subset (None or [] deletes
        it); offsets and the segment's end stay. False if ``old`` is no longer here."""
        i = next((j for j, s in enumerate(self._segs[:-1]) if s is old), None)
        if i is None:
            return False
        if not kept:
            return self.delete_segment(old.base)
        new = _Seg(old.base, max_ts=old.max_ts)
        for rec in kept:
            new.add(rec)
            new.size += record.frame_size(len(rec.payload), len(rec.key) if rec.key else 0)
        new.next_offset = old.next_offset
        self._segs[i] = new
        return True

    def roll(self) -> None:
        if self._segs[-1].size:
            self._segs.append(_Seg(self._segs[-1].next_offset))

    def delete_segment(self, base_offset: int) -> bool:
        for i, seg in enumerate(self._segs):
            if seg.base == base_offset:
                if seg is self._segs[-1]:
                    if not seg.size:
                        return False
                    self.roll()
                del self._segs[i]
                return True
        return False

    def set_start(self, offset: int) -> None:
        """Kafka's log start offset, as ``SegmentLog.set_start``."""
        self._start = max(self._start, min(offset, self.next_offset))
        self.delete_before(self._start)

    def delete_before(self, offset: int) -> int:
        n = 0
        while len(self._segs) > 1 and self._segs[0].next_offset <= offset:
            del self._segs[0]
            n += 1
        return n

    async def sync(self) -> None:
        return None

    async def wait_durable(self, offset: int) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
