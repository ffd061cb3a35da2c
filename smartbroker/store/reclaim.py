"""Reclaiming message-store segments that are mostly acked (RabbitMQ's message store GC).

The message store deletes segments from its head once nothing in them is live; one
message nobody consumes pins every segment after it. RabbitMQ's message store compacts
files whose live data falls under a threshold; so does this, for one segment at a time:

1. a segment qualifies when it is closed and its live enqueue bytes are under
   ``threshold`` of its size (tracked by the store: ``live_bytes``, ``refs``);
2. a worker thread reads it through a descriptor of its own and writes the records that
   still matter to ``<base>.log.compact`` (same offsets, so queues' references to their
   messages stay valid and recovery reads the file as before), then fsyncs it:

   * an enqueue is kept iff it is live (``offset in refs``);
   * a forget mark keeps the offsets whose enqueue is still on disk somewhere (an
     enqueue that a mark cancels must never outlive the mark, or it comes back);
   * a delivered mark keeps the offsets still live (their ``redelivered`` flag);

3. on the loop, the file is renamed over the old one (``SegmentLog.replace_segment``:
   atomic; a segment with nothing left is deleted), then the directory is fsynced in a
   thread. Only then does the store count the dropped enqueues as gone from disk, so marks
   elsewhere are dropped only once their enqueues are durably gone.

Passes take turns (one ``.compact`` file per segment). The store may delete the head
segment a pass is reading, or has just installed, once its last live enqueue is acked: the
pass then skips it quietly (a FileNotFoundError only if it opened the file too late).

A kill -9 at any point leaves the old file or the new one, each of which recovers to the
same messages; a leftover ``.compact`` is swept at open. The loop only pays for the
snapshot and the rename; reading and writing run in the compaction thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

from . import compact, record
from .api import LogStats, Record
from .log import SegmentLog
from .segment import Segment

log = logging.getLogger("smartbroker.store")
THRESHOLD = 0.5
INTERVAL = 0.5  # seconds between a forget and the next look for candidates
Presence = list[tuple[int, int, frozenset[int] | None]]  # (base, next offset, enqueues kept)


@dataclass
class ReclaimStats:
    segments_rewritten: int = 0
    segments_deleted: int = 0
    bytes_reclaimed: int = 0


class Reclaimer:
    """Runs the passes for one message store; all state changes happen on the loop."""

    def __init__(
        self,
        log_: SegmentLog,
        refs: dict[int, int],
        live_bytes: dict[int, int],
        marks: tuple[Callable[[bytes], tuple[bytes, str, str, tuple[int, ...]]],
                     Callable[[bytes, str, str, list[int]], bytes]],
        threshold: float = THRESHOLD,
        executor: Executor | None = None,
    ) -> None:
        self.log = log_
        self.executor = executor  # the broker's compaction thread, else the loop's default
        self.refs = refs  # enqueue offset -> (record size << 16) | queues still holding it
        self.live_bytes = live_bytes  # segment base -> bytes of live enqueues
        self.decode_marks, self.encode_marks = marks
        self.threshold = threshold
        self.kept: dict[int, frozenset[int]] = {}  # base -> enqueues left in a rewritten file
        self.done: dict[int, tuple[int, int]] = {}  # base -> (live bytes, gen) at last pass
        self.gen = 0  # bumped whenever enqueues leave the disk: marks elsewhere may go too
        self.stats = ReclaimStats()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._turn = asyncio.Lock()  # one rewrite at a time: two would share <base>.log.compact
        self.closing = False
        self._again = False

    # -- scheduling ----------------------------------------------------------------------
    def schedule(self) -> None:
        """Something was forgotten: look for candidates soon (cheap when already due)."""
        if self._task is not None:
            self._again = True  # the running pass may have looked already: look once more
            return
        if self._timer is not None or self.closing:
            return
        loop = asyncio._get_running_loop()
        if loop is not None:
            self._timer = loop.call_later(INTERVAL, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._again = False
        if not self.closing and self.candidates():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def candidates(self) -> list[Segment]:
        if self.log.stats.unreadable_segments:  # their enqueues' marks must all stay
            return []
        durable = self.log.durable_offset
        out = []
        for seg in self.log.closed_segments():
            live = self.live_bytes.get(seg.base, 0)
            if not seg.end or live >= self.threshold * seg.end or seg.next_offset > durable:
                continue
            done = self.done.get(seg.base)
            if done is not None and live >= done[0] and done[1] == self.gen:
                continue  # nothing changed since its last pass
            out.append(seg)
        return out

    def forget_segment(self, base: int) -> None:
        """The store deleted a head segment."""
        self.kept.pop(base, None)
        self.done.pop(base, None)

    async def aclose(self) -> None:
        self.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    def close(self) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- a pass ----------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            for seg in self.candidates():
                if self.closing:
                    return
                await self.reclaim(seg)
        except Exception:
            log.exception("message store compaction failed; will retry")
        finally:
            self._task = None
            if self._again:
                self._again = False
                self.schedule()

    async def reclaim(self, seg: Segment) -> bool:
        """Rewrite one closed segment; True if it was replaced or deleted.

        Calls take turns (the timer's pass and a direct call, as tests and tools make):
        two rewrites of one segment would write the same ``.compact`` file at once."""
        async with self._turn:
            if seg.deleted:  # deleted, or replaced by the pass this call waited for
                return False
            return await self._reclaim(seg)

    async def _reclaim(self, seg: Segment) -> bool:
        loop = asyncio.get_running_loop()
        live = self.live_bytes.get(seg.base, 0)
        presence: Presence = [(s.base, s.next_offset, self.kept.get(s.base)) for s in self.log._segs]  # noqa: SLF001
        view = compact._View(seg, seg.base, seg.next_offset, seg.written, True)  # noqa: SLF001
        try:
            out, kept, dropped = await loop.run_in_executor(self.executor, self._rewrite, view, presence)
        except FileNotFoundError:
            if not seg.deleted:
                raise
            return False  # its last live enqueues were acked: the store deleted it first
        if seg.deleted:  # deleted by the store while the thread read it: nothing to install
            if out is not None:
                out.discard()
            return False
        self.done[seg.base] = (live, self.gen)
        if self.closing or not dropped:
            if out is not None:
                out.discard()
            return False
        new = out.new if out is not None else None
        if not self.log.replace_segment(seg, new):
            if out is not None:
                out.discard()
            return False
        await loop.run_in_executor(self.executor, _fsync_dir, self.log.directory)
        self.stats.bytes_reclaimed += seg.end - (new.end if new is not None else 0)
        if new is None:
            self.stats.segments_deleted += 1
        else:
            self.stats.segments_rewritten += 1
        self.gen += 1
        if new is None or new.deleted:  # gone, maybe by the store during the fsync above
            self.kept.pop(seg.base, None)
            self.done.pop(seg.base, None)
        else:
            self.kept[seg.base] = kept
            self.done[seg.base] = (live, self.gen)
        return True

    def _rewrite(self, view: compact._View, presence: Presence) -> tuple[compact._Output | None, frozenset[int], int]:  # noqa: SLF001
        """(worker thread) Write what still matters of ``view``; returns (output or None
        if nothing is left, enqueues kept, records dropped or shortened)."""
        refs, kept, dropped = self.refs, set(), 0
        bases = [p[0] for p in presence]
        lo, hi = view.base, view.next_offset

        def on_disk(x: int) -> bool:
            if lo <= x < hi:
                return x in kept  # this file: as decided above (marks follow their enqueue)
            i = bisect_right(bases, x) - 1
            if i < 0 or x >= presence[i][1]:
                return False  # deleted with its segment
            there = presence[i][2]
            return there is None or x in there

        out = compact._Output(view)  # noqa: SLF001
        try:
            for rec in _records(view):
                kind = rec.payload[:1]
                payload: bytes | None = rec.payload
                if kind == b"E":
                    if rec.offset in refs:
                        kept.add(rec.offset)
                    else:
                        payload = None
                elif kind in (b"a", b"A", b"d", b"D"):
                    payload = self._filter_marks(rec.payload, on_disk, refs)
                if payload is None:
                    dropped += 1
                    continue
                if payload is not rec.payload:
                    dropped += 1
                out.add(Record(rec.offset, rec.timestamp_ms, rec.key, payload))
            if out.new is None:
                return None, frozenset(), dropped
            if dropped:
                out.finish()
            return out, frozenset(kept), dropped
        except BaseException:
            out.discard()
            raise

    def _filter_marks(self, payload: bytes, on_disk: Callable[[int], bool],
                      refs: dict[int, int]) -> bytes | None:
        try:
            kind, vhost, queue, offsets = self.decode_marks(payload)
        except (ValueError, IndexError, UnicodeDecodeError):
            return payload  # not ours to judge: keep it
        keep = [x for x in offsets if (on_disk(x) if kind == b"A" else x in refs)]
        if len(keep) == len(offsets):
            return payload
        if not keep:
            return None
        return self.encode_marks(kind.lower(), vhost, queue, keep)


class SparseSegments:
    """Recovery's note of which segments were rewritten (they hold fewer records than
    offsets) and which enqueues they still hold: the reclaimer needs it to tell a mark
    whose enqueue is gone from one it must keep."""

    def __init__(self, log_: SegmentLog, kept: dict[int, frozenset[int]]) -> None:
        self.segs = [(s.base_offset, s.next_offset) for s in log_.segments()]
        self.kept = kept
        self.i, self.records, self.enqueues = 0, 0, []

    def see(self, offset: int, enqueue: bool) -> None:
        while self.i < len(self.segs) and offset >= self.segs[self.i][1]:
            self._close_segment()
        self.records += 1
        if enqueue:
            self.enqueues.append(offset)

    def _close_segment(self) -> None:
        base, end = self.segs[self.i]
        if self.records < end - base:
            self.kept[base] = frozenset(self.enqueues)
        self.i, self.records, self.enqueues = self.i + 1, 0, []

    def finish(self) -> None:
        while self.i < len(self.segs):
            self._close_segment()


def _records(view: compact._View) -> Iterator[Record]:  # noqa: SLF001
    """Records of a closed segment, read through a descriptor of the caller's own."""
    fd = os.open(view.seg.path, os.O_RDONLY)
    try:
        reader = Segment(os.path.dirname(view.seg.path), view.base, fd, 1 << 62, LogStats())
        reader.written = view.written
        reader.next_offset = view.next_offset
        for n, (_pos, data, rel) in enumerate(reader.frames(0, end=view.written)):
            if n % compact.YIELD_EVERY == 0:
                time.sleep(0)  # hand the GIL to the event loop now and then
            base, ts, _flags, _count = record.head(data, rel)
            for i, (key, payload) in enumerate(record.entries(data, rel)):
                yield Record(base + i, ts, key, payload)
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
