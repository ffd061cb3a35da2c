"""SegmentLog: the on-disk log (a directory of segments) with group commit.

Layout: ``<base:020d>.log`` data files, ``<base>.idx`` saved sparse indexes, and
``<start>-<end>.hole`` markers for segments deleted out of order (so recovery can tell a
deliberate gap from a lost file). Offsets are never reused: the newest segment is never
deleted, and its file name keeps the next offset even when it is empty.

Opening the directory is ``recovery.py``, the markers ``holes.py``, the fsync rounds
``commit.py`` (each round's bookkeeping ``rounds.py``) and the compaction policy
``compact.py``; this module appends, reads and deletes through ``retire.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from bisect import bisect_right
from collections.abc import Iterator
from concurrent.futures import Executor

from . import record
from .api import Frame, LogStats, Record, SegmentInfo, StoreUnavailable
from .commit import GroupCommit
from .grouping import AppendGroup, sealed_first
from .handles import HandleCache
from .holes import HoleMarkers
from .recovery import COMPACT_SUFFIX, recover
from .retire import Retirer
from .rounds import SyncRounds
from .segment import Segment, data_name

__all__ = ["COMPACT_SUFFIX", "DIRECT_BYTES", "SegmentLog"]  # COMPACT_SUFFIX: compact.py and tests import it here
log = logging.getLogger(__name__)
DIRECT_BYTES = 64 << 10  # a Kafka batch this large is written from the request, not buffered


class SegmentLog:
    """Append-only segment log; see ``api.Log`` for the contract."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: str = "batch",
        segment_bytes: int = 32 << 20,
        sync_interval_ms: float = 5.0,
        idle_fsync_ms: float | None = None,  # unwaited data's fsync interval (commit.py)
        index_interval: int = 4096,
        write_buffer_bytes: int = 1 << 20,
        verify: bool = False,
        executor: Executor | None = None,  # for fsyncs (store/executors.py); None: the loop's
        handles: HandleCache | None = None,  # the broker's (Executors.handles); None: its own
    ) -> None:
        self.directory = os.fspath(directory)
        self._handles = handles if handles is not None else HandleCache()
        os.makedirs(self.directory, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.index_interval = index_interval
        self.write_buffer_bytes = write_buffer_bytes
        self._stats = LogStats()
        self._start = 0  # Kafka's log start offset (set_start); below it nothing is read
        self._segs: list[Segment] = []
        self._bases: list[int] = []
        self._holes = HoleMarkers(self.directory)
        self._unsynced: dict[int, Segment] = {}  # base -> segment written but not fsynced
        self._to_close: list[int] = []
        self._dir_dirty = False  # the next fsync round opens and fsyncs the directory
        self._unavailable: Exception | None = None
        self._closed = False
        self._group = AppendGroup(self)  # append_grouped's records, not framed yet
        self.append_grouped = self._group.append  # type: ignore[method-assign] # one call less per publish
        self._retirer = Retirer(self)  # deletion and compaction swaps (retire.py)
        self._open(verify)
        rounds = SyncRounds(self)  # what each fsync round covers (rounds.py)
        self._commit = GroupCommit(
            rounds.prepare, rounds.finished, rounds.has_pending, fsync, sync_interval_ms / 1000,
            durable=self.next_offset, executor=executor, write_out=self.write_out,
            idle_fsync=None if idle_fsync_ms is None else idle_fsync_ms / 1000,
        )

    # -- opening ---------------------------------------------------------------------

    def _open(self, verify: bool) -> None:
        self._segs, top = recover(self.directory, self.index_interval, self._stats,
                                  self._holes, verify, self._handles)
        self._bases = [s.base for s in self._segs]
        if not self._segs or top > self._segs[-1].next_offset:
            self._create(top)  # never reuse offsets a lost or unreadable tail may have held
        self._holes.drop_below(self._bases[0])

    def _create(self, base: int) -> Segment:
        handles = self._handles
        fd = handles.open_file(os.path.join(self.directory, data_name(base)), os.O_RDWR | os.O_CREAT)
        seg = Segment(self.directory, base, fd, self.index_interval, self._stats, handles)
        handles.opened(seg)
        self._segs.append(seg)
        self._bases.append(base)
        self._dir_dirty = True
        return seg

    # -- properties ------------------------------------------------------------------

    @property
    def first_offset(self) -> int:
        return max(self._segs[0].base, self._start)

    @property
    def next_offset(self) -> int:
        return self._segs[-1].next_offset + self._group.count

    @property
    def durable_offset(self) -> int:
        return self._commit.durable

    def set_idle_fsync_ms(self, ms: float) -> None:
        """Unwaited data's fsync interval from now on (a topic's flush.ms, commit.py)."""
        self._commit.set_idle_fsync(ms / 1000)

    @property
    def size_bytes(self) -> int:
        return sum(s.end for s in self._segs)

    @property
    def segment_count(self) -> int:
        return len(self._segs)

    @property
    def stats(self) -> LogStats:
        self._stats.fsyncs = self._commit.fsyncs
        return self._stats

    # -- appending -------------------------------------------------------------------

    def append(self, payload: bytes, timestamp_ms: int | None = None, key: bytes | None = None) -> int:
        """Buffer one record; returns its offset. Durable only after ``sync``/``wait_durable``."""
        if self._group.items:
            self._group.seal()
        if self._unavailable is not None:
            self._retry()
        seg = self._segs[-1]
        if seg.end + record.OVERHEAD + len(payload) > self.segment_bytes and seg.end:
            seg = self._roll()
        off = seg.next_offset
        seg.append(off, int(time.time() * 1000) if timestamp_ms is None else timestamp_ms, key, payload)
        if len(seg.buf) >= self.write_buffer_bytes:
            self._write_out(seg)
        self._commit.kick()
        return off

    def append_grouped(self, payload: bytes, key: bytes | None = None, head: bytes = b"") -> int:
        """Buffer one record, ``head + payload``, to be framed with the others this loop
        pass appends (``grouping.py``); returns its offset at once."""
        return self._group.append(payload, key, head)

    def append_batch(
        self, payloads: list[bytes], timestamp_ms: int | None = None, keys: list[bytes | None] | None = None
    ) -> list[int]:
        """Buffer several records as one frame: after a crash all are there or none is."""
        if not payloads:
            return []
        if self._group.items:
            self._group.seal()
        if self._unavailable is not None:
            self._retry()
        seg = self._segs[-1]
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        frame = record.encode_batch(seg.next_offset, ts, list(zip(keys or [None] * len(payloads), payloads, strict=True)))
        if seg.end + len(frame) > self.segment_bytes and seg.end:
            seg = self._roll()
            frame = record.encode_batch(seg.next_offset, ts, list(zip(keys or [None] * len(payloads), payloads, strict=True)))
        off = seg.next_offset
        seg.append_frame(off, len(payloads), ts, frame)
        if len(seg.buf) >= self.write_buffer_bytes:
            self._write_out(seg)
        self._commit.kick()
        return list(range(off, off + len(payloads)))

    def append_kafka_batch(self, batch: bytes | bytearray | memoryview, count: int,
                           max_ts: int) -> int:
        """Buffer a Kafka RecordBatch v2 as one frame of ``count`` offsets (copied once,
        baseOffset patched); returns its base offset."""
        if self._group.items:
            self._group.seal()
        if self._unavailable is not None:
            self._retry()
        seg = self._segs[-1]
        if seg.end + record.OVERHEAD + len(batch) > self.segment_bytes and seg.end:
            seg = self._roll()
        off = seg.next_offset
        if len(batch) < DIRECT_BYTES:
            seg.append_kafka(off, count, max_ts, batch)
            if len(seg.buf) >= self.write_buffer_bytes:
                self._write_out(seg)
        else:  # a large batch goes to the OS from the request's bytes: no copy to buffer
            self._write_out(seg)
            if self._unavailable is not None:
                seg.append_kafka(off, count, max_ts, batch)  # kept for the retry
            else:
                try:
                    seg.write_kafka(off, count, max_ts, batch)
                except OSError as e:
                    log.error("write to %s failed: %s", seg.path, e)
                    self._unavailable = e
                self._unsynced[seg.base] = seg
        self._commit.kick()
        return off

    def _write_out(self, seg: Segment) -> None:
        """Hand a buffer to the OS; a failure is remembered (the data stays buffered)."""
        try:
            if seg.write_out():
                self._unsynced[seg.base] = seg
        except OSError as e:
            log.error("write to %s failed: %s", seg.path, e)
            self._unavailable = e

    def _retry(self) -> None:
        """While the disk is failing, refuse new records unless pending ones now go through."""
        seg = self._segs[-1]
        try:
            if seg.write_out():
                self._unsynced[seg.base] = seg
        except OSError as e:
            self._unavailable = e
            raise StoreUnavailable(f"storage unavailable: {e}") from e
        self._unavailable = None

    def _roll(self) -> Segment:
        """Close the active segment and start a new one at the next offset."""
        old = self._segs[-1]
        try:
            if old.write_out():
                self._unsynced[old.base] = old
            new = self._create(old.next_offset)
        except OSError as e:
            self._unavailable = e
            raise StoreUnavailable(f"cannot roll segment: {e}") from e
        old.save_index()
        return new

    def roll(self) -> None:
        if self._group.items:
            self._group.seal()
        if self._segs[-1].end:
            self._roll()

    # -- durability (each round's bookkeeping is rounds.py) ------------------------------

    async def sync(self) -> None:
        """Return when everything appended before the call is durable (shared fsync)."""
        await self._commit.wait(self.next_offset)

    async def wait_durable(self, offset: int) -> None:
        await self._commit.wait(offset + 1)

    @sealed_first
    def write_out(self) -> None:
        """Hand buffered records to the OS now (no fsync): they then survive a crash of
        this process, though not a power cut. Cheap: one pwrite of the buffer."""
        if self._unavailable is None:
            self._write_out(self._segs[-1])

    @sealed_first
    def flush(self) -> None:
        """Blocking write + fsync on this thread (for close and non-async callers)."""
        self._commit.sync_blocking()

    # -- reading ---------------------------------------------------------------------

    def _find(self, offset: int) -> Segment | None:
        if self._group.items:
            self._group.seal()
        i = bisect_right(self._bases, offset) - 1
        if i < 0 or offset >= self._segs[i].next_offset:
            return None
        return self._segs[i]

    def read_record(self, offset: int) -> Record | None:
        seg = self._find(offset) if offset >= self._start else None
        return seg.read(offset) if seg is not None else None

    def read(self, offset: int) -> bytes | None:
        rec = self.read_record(offset)
        return rec.payload if rec is not None else None

    @sealed_first
    def scan_records(self, start: int = 0) -> Iterator[Record]:
        start = max(start, self._start)
        i = max(0, bisect_right(self._bases, start) - 1)
        for seg in list(self._segs[i:]):
            if seg.next_offset > start and not seg.deleted:
                yield from seg.records(start)

    @sealed_first
    def scan_frames(self, start: int = 0) -> Iterator[Frame]:
        start = max(start, self._start)
        i = max(0, bisect_right(self._bases, start) - 1)
        for seg in list(self._segs[i:]):
            if seg.next_offset > start and not seg.deleted:
                yield from seg.frame_views(start)

    def scan(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        for rec in self.scan_records(start):
            yield rec.offset, rec.payload

    @sealed_first
    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """First offset whose record timestamp is >= the given one (next_offset if none)."""
        for seg in self._segs:
            found = seg.first_at_or_after(timestamp_ms)
            if found is not None:
                return max(found, self._start)
        return self.next_offset

    # -- segments and deletion -------------------------------------------------------

    @sealed_first
    def segments(self) -> list[SegmentInfo]:
        last = self._segs[-1]
        return [SegmentInfo(s.base, s.next_offset, s.end, s.max_ts, s is last) for s in self._segs]

    def segment_of(self, offset: int) -> int | None:
        if self._group.items:
            self._group.seal()
        last = self._segs[-1]
        if last.base <= offset < last.next_offset:  # the usual case: a recent record
            return last.base
        seg = self._find(offset)
        return seg.base if seg is not None else None

    @sealed_first
    def delete_segment(self, base_offset: int) -> bool:
        """Delete one whole segment (e.g. all its enqueues acked). The active one is rolled first."""
        return self._retirer.delete_segment(base_offset)

    @sealed_first
    def set_start(self, offset: int) -> None:
        """Kafka's log start offset (``api.Log.set_start``); the caller keeps it durable
        (queues/stream_storage.py) and sets it again when the log reopens."""
        self._start = max(self._start, min(offset, self.next_offset))
        self._retirer.delete_before(self._start)

    @sealed_first
    def delete_before(self, offset: int) -> int:
        """Delete closed segments lying entirely below ``offset``; returns how many."""
        return self._retirer.delete_before(offset)

    # -- compaction primitives (the policy lives in compact.py) ------------------------

    @sealed_first
    def closed_segments(self) -> list[Segment]:
        """Closed segments entirely in their files: immutable, so a compaction thread may
        read them through descriptors of its own."""
        return [s for s in self._segs[:-1] if not s.buf]

    @sealed_first
    def replace_segment(self, old: Segment, new: Segment | None) -> bool:
        """Swap closed segment ``old`` for its compacted rewrite ``new`` (written and
        fsynced at ``old.path + COMPACT_SUFFIX``), or delete it when ``new`` is None: an
        atomic rename (``retire.py``). False, changing nothing, if ``old`` is gone."""
        return self._retirer.replace_segment(old, new)

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Flush, fsync (unless policy ``never``), save the active index, close files."""
        if self._closed:
            return
        try:
            self.flush()
        except StoreUnavailable as e:
            log.error("closing with unflushed data: %s", e)
        if not self._segs[-1].buf:
            self._segs[-1].save_index()
        self._closed = True
        for seg in self._segs:
            if (fd := seg.close()) >= 0:
                os.close(fd)
        for fd in self._to_close:
            os.close(fd)
        self._to_close.clear()

    async def aclose(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.sync()
        self.close()
