"""One segment: a data file of frames, its write buffer and its sparse offset/time index.

The index keeps one entry per ``index_interval`` bytes (offset, file position, max timestamp
so far), so a read is one bisect plus one small pread. It is saved next to the data file
when the segment is closed; if it is missing or stale, it is rebuilt by scanning.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterator

from . import record
from .api import Frame, LogStats, Record
from .handles import HandleCache

log = logging.getLogger(__name__)

# Module-level so tests can inject disk-full / I/O errors.
_pwrite = os.pwrite
_pwritev = os.pwritev
_pread = os.pread

IDX_HEAD = struct.Struct("<4sIQQQqI")  # magic, version, base, data size, next offset, max ts, n
IDX_MAGIC = b"SBIX"
READ_CHUNK = 16 * 1024
_encode_into = record.encode_into
SCAN_CHUNK = 1 << 20


def data_name(base: int) -> str:
    return f"{base:020d}.log"


def index_name(base: int) -> str:
    return f"{base:020d}.idx"


class Segment:
    """A data file plus its in-memory sparse index; appends go to ``buf`` until written.

    ``fd`` is -1 while the file is closed by its log's ``handles`` cache (reopened on the
    next read or write); ``deleted`` once the file is gone for good. A segment without a
    cache (a compaction's reader) keeps its descriptor until closed.
    """

    def __init__(self, directory: str, base: int, fd: int, index_interval: int, stats: LogStats,
                 handles: HandleCache | None = None) -> None:
        self.directory = directory
        self.handles = handles
        self.base = base
        self.fd = fd
        self.path = os.path.join(directory, data_name(base))
        self.index_path = os.path.join(directory, index_name(base))
        self.interval = index_interval
        self.stats = stats
        self.written = 0  # bytes in the file
        self.buf = bytearray()  # frames not yet written; they follow ``written``
        self.next_offset = base
        self.max_ts = -1
        self.idx_off = array("q")
        self.idx_pos = array("q")
        self.idx_ts = array("q")
        self._last_idx = -index_interval
        self._bad_seen: set[int] = set()
        self.used = True  # read or written since the handle cache's clock last passed
        self.dirty = False  # written bytes not yet fsynced: the handle must stay open
        self.writes = 0  # write_out calls so far: a commit round clears ``dirty`` only if unchanged
        self.deleted = False
        self.ino = (-1, -1)  # (st_dev, st_ino) of ``fd``: the cache closes only its own file

    def handle(self) -> int:
        """The open descriptor, reopening an evicted file."""
        self.used = True
        fd = self.fd
        if fd >= 0:
            return fd
        if self.handles is None:
            raise OSError(errno.EBADF, "segment file is closed", self.path)
        return self.handles.reopen(self)

    def close(self, deleted: bool = False) -> int:
        """Leave the handle cache; returns the descriptor (-1 if none) for the caller to
        close, now or, while an fsync thread may hold it, after the commit round."""
        if self.handles is not None:
            self.handles.forget(self)
        fd, self.fd = self.fd, -1
        self.deleted = self.deleted or deleted
        return fd

    # -- writing ---------------------------------------------------------------------

    @property
    def end(self) -> int:
        """Logical size: written bytes plus buffered ones."""
        return self.written + len(self.buf)

    def note(self, offset: int, count: int, ts: int, pos: int) -> None:
        """Account for a frame placed at ``pos``; add a sparse index entry when due."""
        if ts > self.max_ts:
            self.max_ts = ts
        if pos - self._last_idx >= self.interval:
            self.idx_off.append(offset)
            self.idx_pos.append(pos)
            self.idx_ts.append(self.max_ts)
            self._last_idx = pos
        self.next_offset = offset + count

    def append(self, offset: int, ts: int, key: bytes | None, payload: bytes) -> None:
        """The hot path: ``note`` inlined, one encode into the buffer."""
        buf = self.buf
        pos = self.written + len(buf)
        if ts > self.max_ts:
            self.max_ts = ts
        if pos - self._last_idx >= self.interval:
            self.idx_off.append(offset)
            self.idx_pos.append(pos)
            self.idx_ts.append(self.max_ts)
            self._last_idx = pos
        self.next_offset = offset + 1
        _encode_into(buf, offset, ts, key, payload)

    def append_frame(self, offset: int, count: int, ts: int, frame: bytes | bytearray) -> None:
        self.note(offset, count, ts, self.written + len(self.buf))
        if self.buf or type(frame) is not bytearray:
            self.buf += frame
        else:  # a fresh frame (record.encode_parts) becomes the empty buffer: no copy
            self.buf = frame

    def append_kafka(self, offset: int, count: int, ts: int,
                     batch: bytes | bytearray | memoryview) -> None:
        """A Kafka batch as one frame, copied once into the buffer (record.py)."""
        self.note(offset, count, ts, self.written + len(self.buf))
        record.encode_kafka_into(self.buf, offset, ts, count, batch)

    def write_kafka(self, offset: int, count: int, ts: int,
                    batch: bytes | bytearray | memoryview) -> None:
        """A Kafka batch as one frame written to the file straight from the request's
        bytes (an empty buffer first: file order is offset order), one copy less than
        ``append_kafka``. On an error the unwritten rest is buffered, as ``write_out``
        leaves it, and the error raised."""
        assert not self.buf
        self.note(offset, count, ts, self.written)
        head = record.kafka_head(offset, ts, count, batch)
        rest = memoryview(batch)[record.KAFKA_BATCH_CRC:]
        total = len(head) + len(rest)
        done = 0
        try:
            fd = self.handle()
            self.dirty = True
            self.writes += 1
            while done < total:
                parts = [head[done:], rest] if done < len(head) else [rest[done - len(head):]]
                done += _pwritev(fd, parts, self.written + done)
        except OSError:
            self.stats.write_errors += 1
            self.buf = bytearray((head + bytes(rest))[done:])
            raise
        finally:
            self.written += done

    def write_out(self) -> bool:
        """Write the buffer to the file (page cache). Returns True if bytes were written.

        On an error the unwritten remainder stays buffered and is retried next time; the
        file never holds anything but whole frames followed by (at worst) one partial one.
        """
        if not self.buf:
            return False
        data, self.buf = self.buf, bytearray()
        done = 0
        try:
            fd = self.handle()
            self.dirty = True
            self.writes += 1
            with memoryview(data) as mv:
                while done < len(data):
                    done += _pwrite(fd, mv[done:], self.written + done)
        except OSError:
            self.stats.write_errors += 1
            self.buf = data[done:] + self.buf
            raise
        finally:
            self.written += done
        return True

    # -- reading ---------------------------------------------------------------------

    def _read(self, pos: int, n: int) -> bytes:
        """Bytes at [pos, pos+n) of the logical segment (file, then buffer)."""
        if pos >= self.written:
            rel = pos - self.written
            return bytes(self.buf[rel : rel + n])
        data = _pread(self.handle(), min(n, self.written - pos), pos)
        if pos + n > self.written and len(data) == self.written - pos:
            data += bytes(self.buf[: pos + n - self.written])
        return data

    def frames(self, pos: int, chunk: int = SCAN_CHUNK, end: int | None = None) -> Iterator[tuple[int, bytes, int]]:
        """Yield (pos, data, rel) for each valid frame from ``pos``; bad frames are counted, skipped.

        After the generator finishes, ``self.stop_pos`` is where valid data ends when the
        rest was torn or garbage (else None): recovery truncates the tail segment there.
        """
        end = self.end if end is None else end
        self.stop_pos: int | None = None
        data, dpos = b"", pos
        while pos < end:
            rel = pos - dpos
            status, size = record.check(data, rel)
            if status == record.INCOMPLETE and pos + size > end:
                status = record.BAD  # runs past the end: torn, unless a valid frame follows
            if status == record.INCOMPLETE:
                data, dpos = self._read(pos, max(chunk, size)), pos
                continue
            if status == record.BAD:
                nxt = self._resync(pos + 1, end)
                if nxt is None:  # nothing valid after it: a torn tail (or garbage to the end)
                    self.stop_pos = pos
                    return
                if pos not in self._bad_seen:
                    self._bad_seen.add(pos)
                    self.stats.bad_records += 1
                    log.warning("bad record at %s:%d, skipping it", self.path, pos)
                pos = nxt
                continue
            yield pos, data, rel
            pos += size

    def _resync(self, pos: int, end: int) -> int | None:
        """Position of the next valid frame at or after ``pos`` (found by its magic), if any."""
        while pos < end:
            blk = self._read(pos, SCAN_CHUNK)
            if not blk:
                return None
            i = blk.find(record.MAGIC)
            while i >= 0:
                cand = pos + i
                status, size = record.check(blk, i)
                if status == record.INCOMPLETE and cand + size <= end:
                    status, size = record.check(self._read(cand, size), 0)
                if status == record.OK:
                    return cand
                i = blk.find(record.MAGIC, i + 1)
            pos += max(1, len(blk) - len(record.MAGIC) + 1)
        return None

    def locate(self, offset: int) -> int:
        """File position of the last indexed frame at or before ``offset``."""
        i = bisect_right(self.idx_off, offset) - 1
        return self.idx_pos[i] if i >= 0 else 0

    def read(self, offset: int) -> Record | None:
        if not self.base <= offset < self.next_offset:
            return None
        for _pos, data, rel in self.frames(self.locate(offset), READ_CHUNK):
            base, ts, flags, count = record.head(data, rel)
            if base > offset:
                return None  # a gap (compacted or skipped as corrupt)
            if offset < base + count:
                if flags & record.FLAG_KAFKA:  # a control record or none: no record there
                    return next((r for r in record.records_of(data, rel) if r.offset == offset), None)
                key, payload = record.entries(data, rel)[offset - base]
                return Record(offset, ts, key, payload)
        return None

    def records(self, start: int) -> Iterator[Record]:
        for _pos, data, rel in self.frames(self.locate(start) if start > self.base else 0):
            base, ts, flags, count = record.head(data, rel)
            if base + count <= start:
                continue
            if flags & record.FLAG_KAFKA:
                for rec in record.records_of(data, rel):
                    if rec.offset >= start:
                        yield rec
                continue
            for i, (key, payload) in enumerate(record.entries(data, rel)):
                if base + i >= start:
                    yield Record(base + i, ts, key, payload)

    def frame_views(self, start: int) -> Iterator[Frame]:
        """Frames from the one holding ``start``: Kafka batches as bytes, no decoding."""
        for _pos, data, rel in self.frames(self.locate(start) if start > self.base else 0):
            base, ts, flags, count = record.head(data, rel)
            if base + count <= start:
                continue
            if flags & record.FLAG_KAFKA:
                yield Frame(base, count, ts, record.kafka_batch(data, rel), [])
            else:
                yield Frame(base, count, ts, None,
                            [Record(base + i, ts, key, payload)
                             for i, (key, payload) in enumerate(record.entries(data, rel))])

    def first_at_or_after(self, ts: int) -> int | None:
        """Offset of the first record whose timestamp is >= ``ts`` (None if there is none)."""
        if self.max_ts < ts:
            return None
        i = bisect_right(self.idx_ts, ts - 1) - 1  # last entry whose max-so-far is < ts
        for _pos, data, rel in self.frames(self.idx_pos[i] if i >= 0 else 0, READ_CHUNK):
            base, fts, flags, _count = record.head(data, rel)
            if fts >= ts:
                if not flags & record.FLAG_KAFKA:
                    return base
                # a batch's frame time is its max: the first record at or after ts is inside
                found = next((r.offset for r in record.records_of(data, rel) if r.timestamp_ms >= ts), None)
                if found is not None:
                    return found
        return None

    # -- recovery and the index file -------------------------------------------------

    def recover(self, tail: bool, trust_index: bool = True) -> None:
        """Load the index file, then scan whatever it does not cover; cut a torn tail."""
        size = os.fstat(self.handle()).st_size
        self.written = size
        start = self.load_index(size, tail) if trust_index else 0
        if start == size and start > 0:
            return
        if start == 0 and size > 0:
            self.stats.rebuilt_indexes += 1
        for pos, data, rel in self.frames(start, SCAN_CHUNK, size):
            base, ts, _flags, count = record.head(data, rel)
            self.note(base, count, ts, pos)
        if self.stop_pos is not None and not tail:
            self.stats.bad_records += 1  # a closed segment ends in garbage; keep it, skip it
            log.warning("bad data at the end of %s:%d", self.path, self.stop_pos)
        elif self.stop_pos is not None:
            cut = size - self.stop_pos
            log.warning("truncating %d torn bytes at the tail of %s", cut, self.path)
            self.stats.truncated_bytes += cut
            os.ftruncate(self.handle(), self.stop_pos)
            self.written = self.stop_pos

    def load_index(self, size: int, tail: bool) -> int:
        """Load the saved index; returns the data size it covers (0 = none usable)."""
        try:
            with open(self.index_path, "rb") as f:
                raw = f.read()
        except OSError:
            return 0
        try:
            magic, version, base, covered, nxt, max_ts, n = IDX_HEAD.unpack_from(raw, 0)
            body_end = IDX_HEAD.size + 24 * n
            ok = (
                magic == IDX_MAGIC
                and version == 1
                and base == self.base
                and len(raw) == body_end + 4
                and zlib.crc32(raw[:body_end]) == struct.unpack_from("<I", raw, body_end)[0]
                and (covered <= size if tail else covered == size)
            )
        except struct.error:
            ok = False
        if not ok:
            log.warning("index %s is stale or damaged; rebuilding", self.index_path)
            return 0
        cols = [array("q") for _ in range(3)]
        for i, col in enumerate(cols):
            col.frombytes(raw[IDX_HEAD.size + 8 * n * i : IDX_HEAD.size + 8 * n * (i + 1)])
        self.idx_off, self.idx_pos, self.idx_ts = cols
        self._last_idx = self.idx_pos[-1] if n else -self.interval
        self.next_offset, self.max_ts = nxt, max_ts
        return covered

    def save_index(self) -> None:
        """Write the index for the bytes written so far (atomically, via rename)."""
        n = len(self.idx_off)
        body = IDX_HEAD.pack(IDX_MAGIC, 1, self.base, self.written, self.next_offset, self.max_ts, n)
        body += self.idx_off.tobytes() + self.idx_pos.tobytes() + self.idx_ts.tobytes()
        tmp = self.index_path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(body + struct.pack("<I", zlib.crc32(body)))
            os.replace(tmp, self.index_path)
        except OSError as e:  # only costs a rescan at the next start
            log.warning("could not save index %s: %s", self.index_path, e)
