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

from . import record
from .api import LogStats, Record, SegmentInfo


@dataclass
class _Seg:
    base: int
    records: list[Record] = field(default_factory=list)
    size: int = 0
    max_ts: int = -1
    next_offset: int = -1  # one past the last offset it holds (compaction may leave gaps)
    offsets: list[int] = field(default_factory=list)  # record offsets, for bisecting gaps

    def __post_init__(self) -> None:
        if self.next_offset < 0:
            self.next_offset = self.base

    def add(self, rec: Record) -> None:
        self.records.append(rec)
        self.offsets.append(rec.offset)
        self.next_offset = rec.offset + 1

    def index(self, offset: int) -> int:
        """Position of the first record at or after ``offset``."""
        if not self.records or self.records[-1].offset - self.base == len(self.records) - 1:
            return max(0, offset - self.base)  # dense: no compaction has touched it
        return bisect_left(self.offsets, offset)


class MemoryLog:
    """Records in lists; every append is immediately 'durable' (there is no disk)."""

    def __init__(self, *, segment_bytes: int = 32 << 20, **_ignored: object) -> None:
        self.segment_bytes = segment_bytes
        self._segs = [_Seg(0)]
        self._stats = LogStats()

    first_offset = property(lambda self: self._segs[0].base)
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

    def _find(self, offset: int) -> _Seg | None:
        i = bisect_right([s.base for s in self._segs], offset) - 1
        if i < 0 or offset >= self._segs[i].next_offset:
            return None
        return self._segs[i]

    def read_record(self, offset: int) -> Record | None:
        seg = self._find(offset)
        if seg is None:
            return None
        i = seg.index(offset)
        rec = seg.records[i] if i < len(seg.records) else None
        return rec if rec is not None and rec.offset == offset else None

    def read(self, offset: int) -> bytes | None:
        rec = self.read_record(offset)
        return None if rec is None else rec.payload

    def scan_records(self, start: int = 0) -> Iterator[Record]:
        for seg in list(self._segs):
            if seg.next_offset > start:
                yield from seg.records[seg.index(start) :]

    def scan(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        for rec in self.scan_records(start):
            yield rec.offset, rec.payload

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        for rec in self.scan_records():
            if rec.timestamp_ms >= timestamp_ms:
                return rec.offset
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
