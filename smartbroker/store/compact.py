"""Log compaction with Kafka's semantics: keep only the newest record per key.

A ``Compactor`` belongs to one log (one stream partition). Each pass:

1. *scan* (incremental): read the records appended since the last pass, including the
   active segment, and keep ``key -> newest offset`` plus a count of superseded records
   per segment;
2. *rewrite*: for every closed segment holding superseded records or expired tombstones,
   write the survivors to ``<base>.log.compact`` beside it (same offsets, so readers see
   gaps), fsync it;
3. *install*: rename it over the old file (``SegmentLog.replace_segment``): atomic, so a
   crash leaves the old segment or the new one, never a mix; a segment left with no
   records is deleted instead.

Records without a key are always kept. A tombstone (``is_tombstone(payload)``) is kept
until its timestamp is ``delete_retention_ms`` old, then dropped too (older records of
its key are gone already: the tombstone superseded them). A Kafka batch is read through
its records (``record.records_of``); in a rewritten segment its survivors become
single-record frames at their own offsets, as Kafka's cleaner re-encodes a batch with
only its survivors. The active segment is never
rewritten. On a ``SegmentLog``, steps 1 and 2 only read closed (immutable) files and the
written part of the active one through descriptors of their own, so ``run_async`` does
them in a worker thread and the event loop only pays for the snapshot and the renames.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from . import record
from .api import LogStats, Record
from .log import COMPACT_SUFFIX, SegmentLog
from .memory import MemoryLog, expand
from .segment import Segment

WRITE_CHUNK = 1 << 20
YIELD_EVERY = 64  # frames read by the compaction thread between GIL hand-overs
def empty_payload(payload: bytes) -> bool:
    """The default tombstone test: an empty payload."""
    return not payload


@dataclass
class CompactionResult:
    """What one pass did and what it cost the event loop."""

    segments_rewritten: int = 0
    segments_deleted: int = 0
    records_removed: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    loop_seconds: float = 0.0  # time spent on the caller's (event loop) thread
    total_seconds: float = 0.0


@dataclass
class _View:
    """A segment as the pass saw it on the loop: identity plus the bytes it may read."""

    seg: Any  # Segment or MemoryLog's _Seg
    base: int
    next_offset: int
    written: int  # bytes in the file (disk) / records in the list (memory)
    closed: bool


@dataclass
class _Rewrite:
    view: _View
    new: Any  # Segment (disk), list[Record] (memory), or None: delete the segment
    removed: int
    size_before: int
    size_after: int
    dropped_tombstones: list[tuple[bytes, int]] = field(default_factory=list)


class Compactor:
    """Compacts one log; keeps the key index between passes so each record is scanned once."""

    def __init__(
        self,
        log: SegmentLog | MemoryLog,
        *,
        delete_retention_ms: int = 86_400_000,
        is_tombstone: Callable[[bytes], bool] = empty_payload,
        executor: Executor | None = None,
    ) -> None:
        self.log = log
        # the broker's compaction thread (store/executors.py), else the loop's default
        self.executor = executor
        self.delete_retention_ms = delete_retention_ms
        self.is_tombstone = is_tombstone
        self.disk = isinstance(log, SegmentLog)
        self.latest: dict[bytes, int] = {}  # key -> newest offset seen
        self.tombstones: dict[bytes, tuple[int, int]] = {}  # key -> (offset, ts) if newest is one
        self.dead: dict[int, int] = {}  # segment base -> superseded records in it
        self.scanned_to = 0  # offsets below this are in the index
        self._resume: tuple[int, int] = (-1, 0)  # (segment base, position) to scan on from
        self._first_seen = -1
        self.running = False

    # -- the pass, in three steps --------------------------------------------------------

    def run(self, now_ms: int | None = None) -> CompactionResult:
        """One pass, all on the calling thread (MemoryLog, tests, tools)."""
        start = time.perf_counter()
        views = self._snapshot()
        rewrites = self._work(views, now_ms)
        result = self._install(rewrites)
        result.total_seconds = result.loop_seconds = time.perf_counter() - start
        return result

    async def run_async(self, now_ms: int | None = None) -> CompactionResult:
        """One pass; on disk the scan and rewrite run in a worker thread."""
        if not self.disk:
            return self.run(now_ms)
        if self.running:
            raise RuntimeError("a compaction pass is already running on this log")
        self.running = True
        try:
            start = time.perf_counter()
            views = self._snapshot()
            loop_time = time.perf_counter() - start
            rewrites = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._work, views, now_ms)
            t = time.perf_counter()
            result = self._install(rewrites)
        finally:
            self.running = False
        result.loop_seconds = loop_time + time.perf_counter() - t
        result.total_seconds = time.perf_counter() - start
        return result

    def _snapshot(self) -> list[_View]:
        closed = {id(s) for s in self.log.closed_segments()}
        if self.disk:
            durable = self.log.durable_offset
            segs = self.log._segs  # noqa: SLF001 - same package, read-only snapshot
            return [_View(s, s.base, s.next_offset, s.written,
                          id(s) in closed and s.next_offset <= durable) for s in segs]
        segs = self.log._segs  # noqa: SLF001
        return [_View(s, s.base, s.next_offset, len(s.records), id(s) in closed) for s in segs]

    def _work(self, views: list[_View], now_ms: int | None) -> list[_Rewrite]:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._scan(views)
        bases = [v.base for v in views]
        expired_in: set[int] = set()
        cutoff = now_ms - self.delete_retention_ms
        for _key, (off, ts) in self.tombstones.items():
            if ts <= cutoff:
                i = bisect_right(bases, off) - 1
                if i >= 0:
                    expired_in.add(views[i].base)
        rewrites = []
        for v in views:
            if v.closed and (self.dead.get(v.base) or v.base in expired_in):
                rewrites.append(self._rewrite(v, cutoff))
        return rewrites

    def _install(self, rewrites: list[_Rewrite]) -> CompactionResult:
        result = CompactionResult()
        for rw in rewrites:
            if rw.removed == 0:  # nothing to drop after all
                self.dead.pop(rw.view.base, None)
                continue
            done = self.log.replace_segment(rw.view.seg, rw.new)
            if not done and self.disk and rw.new is not None:
                self._discard(rw.view, rw.new)
            if not done:
                continue
            for key, off in rw.dropped_tombstones:
                if self.latest.get(key) == off:
                    del self.latest[key]
                    self.tombstones.pop(key, None)
            self.dead.pop(rw.view.base, None)
            result.records_removed += rw.removed
            result.bytes_before += rw.size_before
            result.bytes_after += rw.size_after
            if rw.new is None:
                result.segments_deleted += 1
            else:
                result.segments_rewritten += 1
        return result

    # -- step 1: the key index -----------------------------------------------------------

    def _scan(self, views: list[_View]) -> None:
        first = views[0].base
        if first != self._first_seen:  # retention deleted head segments: forget their keys
            self._first_seen = first
            self.latest = {k: o for k, o in self.latest.items() if o >= first}
            self.tombstones = {k: t for k, t in self.tombstones.items() if t[0] >= first}
            self.dead = {b: n for b, n in self.dead.items() if b >= first}
            self.scanned_to = max(self.scanned_to, first)
        bases = [v.base for v in views]
        for v in views:
            if v.next_offset <= self.scanned_to:
                continue
            pos = self._resume[1] if self._resume[0] == v.base else 0
            last = -1
            for rec, end in self._read(v, pos):
                self._resume = (v.base, end)
                if rec.offset < self.scanned_to:
                    continue
                last = rec.offset
                if rec.key is not None:
                    self._note(rec, bases, views)
            if last >= 0:
                self.scanned_to = last + 1
            if v.closed:
                self.scanned_to = max(self.scanned_to, v.next_offset)

    def _note(self, rec: Record, bases: list[int], views: list[_View]) -> None:
        old = self.latest.get(rec.key)
        self.latest[rec.key] = rec.offset
        if old is not None:
            i = bisect_right(bases, old) - 1
            if i >= 0:
                self.dead[views[i].base] = self.dead.get(views[i].base, 0) + 1
        if self.is_tombstone(rec.payload):
            self.tombstones[rec.key] = (rec.offset, rec.timestamp_ms)
        else:
            self.tombstones.pop(rec.key, None)

    def _read(self, v: _View, pos: int) -> Iterator[tuple[Record, int]]:
        """Records of a viewed segment from position ``pos``, each with the position after it."""
        if not self.disk:
            for i in range(pos, v.written):
                for rec in expand(v.seg.records[i]):  # a Kafka batch: its records
                    yield rec, i + 1
            return
        try:
            fd = os.open(v.seg.path, os.O_RDONLY)
        except FileNotFoundError:  # deleted by retention meanwhile
            return
        try:
            reader = Segment(os.path.dirname(v.seg.path), v.base, fd, 1 << 62, LogStats())
            reader.written = v.written
            reader.next_offset = v.next_offset
            for n, (fpos, data, rel) in enumerate(reader.frames(pos, end=v.written)):
                if n % YIELD_EVERY == 0:
                    time.sleep(0)  # hand the GIL to the event loop now and then
                size = record.PREFIX_SIZE + record.PREFIX.unpack_from(data, rel)[1]
                for rec in record.records_of(data, rel):  # a Kafka batch's too, decoded
                    yield rec, fpos + size
        finally:
            os.close(fd)

    # -- step 2: the rewrite -------------------------------------------------------------

    def _keep(self, rec: Record, cutoff: int) -> bool:
        if rec.key is None:
            return True
        if self.latest.get(rec.key) != rec.offset:
            return False
        return not (rec.timestamp_ms <= cutoff and self.is_tombstone(rec.payload))

    def _rewrite(self, v: _View, cutoff: int) -> _Rewrite:
        """Decide record by record; on disk the survivors stream straight into the new
        file (no list of records builds up: less memory, shorter GC pauses for the loop)."""
        out = _Output(v) if self.disk else None
        kept: list[Record] = []
        removed = before = after = 0
        tombs: list[tuple[bytes, int]] = []
        try:
            for rec, _end in self._read(v, 0):
                size = record.frame_size(len(rec.payload), len(rec.key or b""))
                before += size
                if self._keep(rec, cutoff):
                    after += size
                    if out is not None:
                        out.add(rec)
                    else:
                        kept.append(rec)
                else:
                    removed += 1
                    if rec.key is not None and self.latest.get(rec.key) == rec.offset:
                        tombs.append((rec.key, rec.offset))
            if out is None:
                return _Rewrite(v, kept or None, removed, before, after, tombs)
            if removed == 0 or out.new is None:  # nothing to drop, or nothing left: no file
                out.discard()
                return _Rewrite(v, None, removed, before, after, tombs)
            out.finish()
            return _Rewrite(v, out.new, removed, before, after, tombs)
        except BaseException:
            if out is not None:
                out.discard()
            raise

    def _discard(self, v: _View, new: Segment) -> None:
        os.close(new.fd)
        _unlink(v.seg.path + COMPACT_SUFFIX)


class _Output:
    """The compacted copy of one segment, written beside it as ``<base>.log.compact``."""

    def __init__(self, v: _View) -> None:
        self.old: Segment = v.seg
        self.base = v.base
        self.new: Segment | None = None

    def add(self, rec: Record) -> None:
        new = self.new
        if new is None:
            fd = os.open(self.old.path + COMPACT_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            new = self.new = Segment(self.old.directory, self.base, fd, self.old.interval, LogStats())
        new.append(rec.offset, rec.timestamp_ms, rec.key, rec.payload)
        if len(new.buf) >= WRITE_CHUNK:
            new.write_out()

    def finish(self) -> None:
        """Write the rest and fsync: only a complete, durable file is renamed in."""
        assert self.new is not None
        self.new.write_out()
        os.fsync(self.new.fd)

    def discard(self) -> None:
        if self.new is not None:
            os.close(self.new.fd)
            _unlink(self.old.path + COMPACT_SUFFIX)
            self.new = None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
