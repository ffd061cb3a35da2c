"""One broker-wide bound on open segment files.

One ``HandleCache`` per broker, owned by its ``Executors`` (store/executors.py; made by
``Persistence`` with the disk threads) and passed by constructor to every ``SegmentLog``
(stream partitions, offsets logs, the message store), which gives it to its segments. A
log built without one (tools, tests) gets a cache of its own.

A segment is opened when it is first read or written and stays open while it is used;
once more than ``capacity`` are open, the least recently used one is closed and reopened
on its next use. So a stream with thousands of tiny segments, or
thousands of streams, hold at most ``capacity`` descriptors between them, and the broker
keeps descriptors for its clients (it used to run out and refuse connections).

Eviction is CLOCK (second chance): a use only sets ``seg.used``, so the hot paths pay one
attribute store, not an LRU reordering. A segment whose written bytes still await fsync
(``seg.dirty``) is never evicted: the commit thread fsyncs through its descriptor.
Segments leave the cache by ``forget`` (``Segment.close``) when deleted, replaced or their
log is closed; the cache closes a descriptor only if it still is the segment's own file
(checked by inode), so a log abandoned without ``close`` (a simulated crash) can never make
it close a descriptor number that was reused for something else.

``SMARTBROKER_SEGMENT_FILES`` overrides the capacity (at least 16).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from typing import Protocol

MIN_CAPACITY = 16
MAX_CAPACITY = 1024


class Handle(Protocol):
    """What the cache needs of a segment (``segment.Segment``)."""

    path: str
    fd: int
    used: bool
    dirty: bool
    deleted: bool
    ino: tuple[int, int]


def default_capacity() -> int:
    """A quarter of the process's descriptor limit (the rest is for sockets and the
    like), between 16 and 1024."""
    env = os.environ.get("SMARTBROKER_SEGMENT_FILES", "")
    if env.isdigit():
        return max(MIN_CAPACITY, int(env))
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CAPACITY
    return max(MIN_CAPACITY, min(MAX_CAPACITY, soft // 4))


class HandleCache:
    """Open segment files, at most ``capacity`` of them (plus any awaiting fsync)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity or default_capacity()
        self._open: dict[Handle, None] = {}  # insertion order = clock order
        self.reopens = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._open)

    def open_file(self, path: str, flags: int = os.O_RDWR, mode: int = 0o644) -> int:
        """``os.open``; out of descriptors, close every idle segment file and try again."""
        try:
            return os.open(path, flags, mode)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            self._evict(len(self._open))
            return os.open(path, flags, mode)

    def opened(self, seg: Handle) -> None:
        """``seg.fd`` was just opened (created, recovered, compacted in): count it."""
        st = os.fstat(seg.fd)
        seg.ino = (st.st_dev, st.st_ino)
        self._open[seg] = None
        seg.used = True
        if len(self._open) > self.capacity:
            self._evict(len(self._open) - self.capacity, keep=seg)

    def reopen(self, seg: Handle) -> int:
        """The descriptor of a segment that was evicted: open its file again."""
        if seg.deleted:
            raise OSError(errno.EBADF, "segment was deleted", seg.path)
        seg.fd = self.open_file(seg.path)
        self.reopens += 1
        self.opened(seg)
        return seg.fd

    def trim(self) -> None:
        """Back down to ``capacity`` once segments that awaited fsync may be closed."""
        if len(self._open) > self.capacity:
            self._evict(len(self._open) - self.capacity)

    def forget(self, seg: Handle) -> None:
        """``seg`` closes its descriptor itself (deleted, replaced, log closed)."""
        self._open.pop(seg, None)

    def _evict(self, n: int, keep: Handle | None = None) -> None:
        """Close ``n`` segments, oldest first, sparing those used since the clock last
        passed (once), those awaiting fsync and ``keep`` (just opened for its caller)."""
        budget = 2 * len(self._open)
        while n > 0 and budget > 0 and self._open:
            budget -= 1
            seg = next(iter(self._open))
            del self._open[seg]
            if seg.dirty or seg.used or seg is keep:
                seg.used = False
                self._open[seg] = None  # to the back of the clock
                continue
            if seg.fd >= 0:
                with contextlib.suppress(OSError):
                    st = os.fstat(seg.fd)
                    if (st.st_dev, st.st_ino) == seg.ino:
                        os.close(seg.fd)
                seg.fd = -1
            self.evictions += 1
            n -= 1

