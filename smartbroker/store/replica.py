"""A ``SegmentLog`` as a replica: its stored frames read and written as raw bytes at their
exact offsets, truncated after a leader change, and its leader-epoch checkpoints.

Replication (``cluster/replication``) ships a log's frames from the leader to its
followers unchanged, so a follower holds the very log the leader would recover from:

* ``read_chunk``: the leader's next frames from a ``Cursor``. In the usual case (the
  cursor in the segment being written) that is ONE slice of bytes the leader already
  wrote, whatever the number of records; frames are walked one by one only when a
  follower catches up from older segments or a chunk must stop at an epoch boundary.
* ``append_chunk``: a follower appends those bytes at their offsets (each frame's CRC
  checked, the sparse index kept), then fsyncs them with the log's own group commit.
* ``truncate`` / ``reset``: a follower cuts what the new leader does not hold.
* ``EpochCheckpoints``: Kafka's leader-epoch-checkpoint: which epoch wrote which offsets,
  persisted next to the segments, so a follower finds where it diverged (KIP-101/279).

These functions are the log's friends (as ``retire.py`` is): they use its segment list.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from bisect import bisect_right
from typing import TYPE_CHECKING, NamedTuple

from crc32c import crc32c as _crc32c

from . import record
from .api import StoreUnavailable
from .holes import hole_name, unlink
from .pathsync import fsync_paths
from .segment import Segment, data_name

if TYPE_CHECKING:
    from .log import SegmentLog

__all__ = ["CHECKPOINT_FILE", "BadChunk", "Chunk", "Cursor", "EpochCheckpoints",
           "append_chunk", "read_chunk", "reset", "truncate"]

CHECKPOINT_FILE = "leader-epoch-checkpoint"  # Kafka's name, Kafka's text format
CHUNK_BYTES = 1 << 20  # at most this much per chunk (one frame may make it larger)
_frame_len = record.PREFIX.unpack_from
_head = record.HEAD.unpack_from
_PREFIX = record.PREFIX_SIZE


class BadChunk(ValueError):
    """A chunk that cannot go at this log's end: it does not start where the log ends,
    overlaps it, or holds a bad frame. ``next_offset``: where this log ends now."""

    def __init__(self, text: str, next_offset: int) -> None:
        super().__init__(text)
        self.next_offset = next_offset


class Chunk(NamedTuple):
    """Frames covering offsets ``start`` .. ``end - 1`` (there may be gaps inside:
    compacted or skipped offsets), as stored."""

    start: int
    end: int
    data: bytes


class Cursor:
    """Where a reader of the log is: the next offset, and (when known) the segment and
    byte position of the frame holding it, so sequential reads never search."""

    __slots__ = ("offset", "pos", "seg")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.seg: Segment | None = None
        self.pos = 0

    def reset(self, offset: int) -> None:
        self.offset, self.seg, self.pos = offset, None, 0


def _seal(log: SegmentLog) -> None:
    if log._group.items:  # noqa: SLF001 - grouped records get their frame first
        log._group.seal()  # noqa: SLF001


def read_chunk(log: SegmentLog, cursor: Cursor, max_bytes: int = CHUNK_BYTES,
               limit: int | None = None) -> Chunk:
    """The frames from ``cursor.offset`` on (at most about ``max_bytes``; none at or past
    ``limit``), advancing the cursor. An empty chunk when there is nothing new."""
    _seal(log)
    start = cursor.offset
    seg = cursor.seg
    segs = log._segs  # noqa: SLF001
    if seg is not None and not seg.deleted and (limit is None or limit >= seg.next_offset):
        if cursor.pos == seg.end and seg is not segs[-1]:  # rolled: on to the next one
            i = bisect_right(log._bases, seg.base)  # noqa: SLF001
            if i < len(segs) and segs[i - 1] is seg and segs[i].base == seg.next_offset:
                seg = cursor.seg = segs[i]
                cursor.pos = 0
            else:
                seg = None
        if seg is not None and seg.end - cursor.pos <= max_bytes:
            data = seg._read(cursor.pos, seg.end - cursor.pos)  # noqa: SLF001
            cursor.pos = seg.end
            cursor.offset = max(start, seg.next_offset)
            return Chunk(start, cursor.offset, data)
    return _scan(log, cursor, max_bytes, limit)


def _scan(log: SegmentLog, cursor: Cursor, max_bytes: int, limit: int | None) -> Chunk:
    """The slow path: frame by frame from wherever ``cursor.offset`` is (catch-up, an
    epoch boundary, a compacted or deleted segment under the cursor)."""
    start = offset = cursor.offset
    segs = log._segs  # noqa: SLF001
    i = max(0, bisect_right(log._bases, offset) - 1)  # noqa: SLF001
    parts: list[bytes] = []
    size = 0
    for seg in list(segs[i:]):
        stopped = False
        pos = seg.locate(offset) if offset > seg.base else 0
        last = pos
        for fpos, data, rel in seg.frames(pos):
            base, _ts, _flags, count = _head(data, rel + _PREFIX)
            flen = _PREFIX + _frame_len(data, rel)[1]
            if base + count <= offset:
                last = fpos + flen
                continue
            if (limit is not None and base >= limit) or (parts and size + flen > max_bytes):
                stopped = True
                break
            parts.append(bytes(data[rel:rel + flen]))
            size += flen
            offset = base + count
            last = fpos + flen
        cursor.seg, cursor.pos = seg, last
        if stopped:
            break
        if limit is None or seg.next_offset <= limit:
            offset = max(offset, seg.next_offset)  # past a gap at the segment's end
        if size >= max_bytes:
            break
    cursor.offset = offset
    return Chunk(start, offset, b"".join(parts))


def append_chunk(log: SegmentLog, chunk: Chunk) -> int:
    """Append a leader's chunk at its offsets (it must start at this log's end); returns
    the new end. Durable once ``log.sync()`` returns, as any append. ``BadChunk`` if it
    does not fit (what went before a bad frame stays appended)."""
    _seal(log)
    if log._unavailable is not None:  # noqa: SLF001
        log._retry()  # noqa: SLF001 - raises StoreUnavailable while the disk fails
    if chunk.start != log.next_offset:
        raise BadChunk(f"chunk starts at {chunk.start}, the log ends at {log.next_offset}",
                       log.next_offset)
    data = chunk.data
    seg = log._segs[-1]  # noqa: SLF001
    run = 0  # data[run:pos] is not in the segment's buffer yet
    pos = 0
    total = len(data)
    limit = log.segment_bytes
    at = seg.end  # the segment's end before data[run:pos]
    view = memoryview(data)
    try:
        while pos < total:
            # the usual frame, one record, checked inline (the checks ``record.check``
            # makes for that kind); anything else (a batch, a Kafka frame, a bad one)
            # goes through ``record.check``
            flen = 0
            if pos + _SINGLE_MIN <= total:
                magic, length, crc = _prefix_unpack(data, pos)
                flen = _PREFIX + length
                base, ts, flags, count, klen, plen = _single_unpack(data, pos + _PREFIX)
                if (magic != _MAGIC or pos + flen > total or count != 1
                        or _SINGLE_MIN + (klen if klen > 0 else 0) + plen != flen
                        or flags & ~_FLAG_CRC32C
                        or (_crc32c if flags else _crc)(view[pos + _PREFIX:pos + flen]) != crc):
                    flen = 0
            if not flen:
                status, flen = record.check(data, pos)
                if status != record.OK:
                    raise BadChunk(f"bad frame at byte {pos} of a chunk from {chunk.start}",
                                   seg.next_offset)
                base, ts, _flags, count = _head(data, pos + _PREFIX)
            if base < seg.next_offset:
                raise BadChunk(f"frame at offset {base} overlaps the log's end "
                               f"{seg.next_offset}", seg.next_offset)
            where = at + (pos - run)
            if where + flen > limit and where:
                seg.buf += view[run:pos]
                run = pos
                seg = log._roll()  # noqa: SLF001 - a gap before ``base`` may open it
                at = where = seg.end
            seg.note(base, count, ts, where)
            pos += flen
    finally:
        if pos > run:
            seg.buf += view[run:pos]
        view.release()
        if pos:
            if len(seg.buf) >= log.write_buffer_bytes:
                log._write_out(seg)  # noqa: SLF001
            log._commit.kick()  # noqa: SLF001
    if chunk.end > seg.next_offset:
        seg.next_offset = chunk.end  # the leader's gap after its last frame
    return log.next_offset


_SINGLE = record.SINGLE  # HEAD + one ENTRY
_single_unpack = _SINGLE.unpack_from
_prefix_unpack = record.PREFIX.unpack_from
_MAGIC = record.MAGIC
_crc = zlib.crc32  # frames written before CRC-32C
_FLAG_CRC32C = record.FLAG_CRC32C
_SINGLE_MIN = _PREFIX + _SINGLE.size


async def _quiet(log: SegmentLog) -> None:
    """Everything appended is durable and no fsync round runs: the segment list and the
    durable offset may change under no one."""
    _seal(log)
    commit = log._commit  # noqa: SLF001
    while commit.busy or commit._task is not None or log._unsynced:  # noqa: SLF001
        await log.sync()
        if not (commit.busy or commit._task is not None):  # noqa: SLF001
            break
        await asyncio.sleep(0.001)  # an idle round still running: its fsync ends soon


async def truncate(log: SegmentLog, offset: int) -> int:
    """Cut every record at or past ``offset`` (a frame that straddles it goes whole);
    returns the new end. Offsets cut are given out again: only a follower does this, to
    hold exactly the new leader's log. The cut is fsynced before this returns."""
    await _quiet(log)
    segs = log._segs  # noqa: SLF001
    if offset >= log.next_offset:
        return log.next_offset
    if offset <= segs[0].base:
        return await reset(log, offset)
    while segs[-1].base >= offset:
        _drop(log, segs[-1])
    seg = segs[-1]
    cut = seg.end
    end = seg.next_offset
    for fpos, data, rel in seg.frames(seg.locate(offset)):
        base, _ts, _flags, count = _head(data, rel + _PREFIX)
        if base + count > offset:
            cut, end = fpos, min(base, offset)
            break
    fd = seg.handle()
    os.ftruncate(fd, cut)
    os.fsync(fd)
    seg.written = cut
    seg.buf = bytearray()
    seg.next_offset = min(end, offset)
    keep = bisect_right(seg.idx_pos, cut - 1)
    del seg.idx_off[keep:], seg.idx_pos[keep:], seg.idx_ts[keep:]
    seg._last_idx = seg.idx_pos[-1] if keep else -seg.interval  # noqa: SLF001
    unlink(log.directory, os.path.basename(seg.index_path))  # stale now: rebuilt if needed
    _cut_holes(log, log.next_offset)
    fsync_paths([log.directory])
    log._commit.durable = log.next_offset  # noqa: SLF001
    return log.next_offset


async def reset(log: SegmentLog, offset: int) -> int:
    """Drop every segment and start empty at ``offset`` (a follower far behind a leader
    whose log now starts past its end, or one that holds nothing the leader holds)."""
    await _quiet(log)
    segs = log._segs  # noqa: SLF001
    old = list(segs)
    for seg in old:
        _drop(log, seg, keep_last=False)
    log._create(offset)  # noqa: SLF001
    log._holes.drop_below(offset)  # noqa: SLF001
    fsync_paths([log.directory])
    log._dir_dirty = False  # noqa: SLF001
    log._commit.durable = offset  # noqa: SLF001
    log._start = min(log._start, offset)  # noqa: SLF001
    return offset


def _cut_holes(log: SegmentLog, end: int) -> None:
    """Deletion markers past the new end would make recovery skip offsets: cut them."""
    holes = log._holes  # noqa: SLF001
    for a, b in [h for h in holes.ranges if h[1] > end]:
        holes.ranges.remove((a, b))
        unlink(log.directory, hole_name(a, b))
        if a < end:
            holes.add(a, end)


def _drop(log: SegmentLog, seg: Segment, keep_last: bool = True) -> None:
    segs, bases = log._segs, log._bases  # noqa: SLF001
    if keep_last and len(segs) == 1:
        return
    i = segs.index(seg)
    del segs[i], bases[i]
    log._unsynced.pop(seg.base, None)  # noqa: SLF001
    unlink(log.directory, data_name(seg.base))
    unlink(log.directory, os.path.basename(seg.index_path))
    log._retirer.close_segment(seg)  # noqa: SLF001


class EpochCheckpoints:
    """``(epoch, start offset)`` pairs, ascending in both: epoch ``e`` wrote the offsets
    from its start to the next entry's start. Kept in ``leader-epoch-checkpoint`` (Kafka's
    layout: a version line ``0``, a count line, then ``epoch offset`` lines), rewritten
    atomically at each change (a leader change: rare)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, CHECKPOINT_FILE)
        self.entries: list[tuple[int, int]] = self._load()

    def _load(self) -> list[tuple[int, int]]:
        try:
            with open(self.path) as f:
                lines = f.read().split("\n")
            count = int(lines[1])
            entries = [tuple(map(int, line.split())) for line in lines[2:2 + count]]
        except (OSError, ValueError, IndexError):
            return []
        good = [(e[0], e[1]) for e in entries if len(e) == 2]
        return good if good == sorted(good) else []

    def _save(self) -> None:
        text = f"0\n{len(self.entries)}\n" + "".join(f"{e} {o}\n" for e, o in self.entries)
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            raise StoreUnavailable(f"cannot write {self.path}: {e}") from e

    @property
    def latest(self) -> int:
        """The newest epoch (0 when none was ever recorded)."""
        return self.entries[-1][0] if self.entries else 0

    def start_of(self, epoch: int) -> int | None:
        for e, start in self.entries:
            if e == epoch:
                return start
        return None

    def assign(self, epoch: int, start: int) -> None:
        """Epoch ``epoch`` writes from ``start`` on: entries at or past ``start`` go (they
        described offsets since cut); an epoch not newer than the latest is ignored."""
        if self.entries and epoch <= self.entries[-1][0]:
            return
        self.entries = [(e, o) for e, o in self.entries if o < start]
        self.entries.append((epoch, start))
        self._save()

    def epoch_at(self, offset: int) -> tuple[int, int | None]:
        """(the epoch that wrote ``offset``, the start of the next epoch or None)."""
        epoch, following = 0, None
        for e, start in self.entries:
            if start <= offset:
                epoch = e
            else:
                following = start
                break
        return epoch, following

    def end_for(self, epoch: int, log_end: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch: (the largest epoch <= ``epoch`` held here, the
        offset where it ended: the next epoch's start, or ``log_end`` for the latest);
        (-1, -1) when this log holds no epoch that old."""
        floor = [i for i, (e, _o) in enumerate(self.entries) if e <= epoch]
        if not floor:
            return (-1, -1) if self.entries else (0, log_end)
        i = floor[-1]
        if i == len(self.entries) - 1:
            return self.entries[i][0], log_end
        return self.entries[i][0], min(self.entries[i + 1][1], log_end)

    def truncate_from(self, offset: int) -> None:
        """The log was cut at ``offset``: epochs that start at or past it go."""
        kept = [(e, o) for e, o in self.entries if o < offset]
        if kept != self.entries:
            self.entries = kept
            self._save()

    def replace(self, entries: list[tuple[int, int]]) -> None:
        if entries != self.entries:
            self.entries = sorted(entries)
            self._save()
