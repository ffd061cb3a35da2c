"""The log's side of each group-commit round: what to fsync, and what a round's outcome means.

``commit.GroupCommit`` decides when a round runs and waits on it; ``SyncRounds`` answers
its three questions for one ``SegmentLog``: anything pending? (``has_pending``), which
descriptors cover the data so far (``prepare``: writes the active buffer out first), and
what the result means (``finished``: clean segments may be closed by the handle cache; a
failure puts them back to be fsynced again and marks the log unavailable). Split from
``log.py`` (composition: the log owns the state) so that module keeps appending and
reading; these run once per fsync round, never per record.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .log import SegmentLog
    from .segment import Segment

log = logging.getLogger("smartbroker.store.log")


class SyncRounds:
    """Prepares and concludes the fsync rounds of one ``SegmentLog``."""

    __slots__ = ("in_round", "log")

    def __init__(self, lg: SegmentLog) -> None:
        self.log = lg
        self.in_round: list[tuple[Segment, int]] = []  # (segment, its write count) being fsynced

    def prepare(self) -> tuple[int, list[int]]:
        """Write the active buffer out; return the offset the round covers and its fds."""
        lg = self.log
        if lg._group.items:
            lg._group.seal()
        covered = lg.next_offset
        seg = lg._segs[-1]
        if seg.write_out():
            lg._unsynced[seg.base] = seg
        self.in_round = [(s, s.writes) for s in lg._unsynced.values()]
        lg._unsynced.clear()
        fds = [s.handle() for s, _ in self.in_round]  # dirty: open, and kept open meanwhile
        if lg._dir_dirty:  # opened for this round only: a log holds no descriptor while
            # idle, so thousands of logs (replicated queues) cost no descriptor each
            fd = os.open(lg.directory, os.O_RDONLY)
            lg._to_close.append(fd)  # closed by ``finished``, after the fsync
            fds.append(fd)
            lg._dir_dirty = False
        return covered, fds

    def finished(self, error: Exception | None) -> None:
        lg = self.log
        if error is None:
            lg._unavailable = None
            for s, writes in self.in_round:
                if s.writes == writes:  # nothing written since: the cache may close it now
                    s.dirty = False
            lg._handles.trim()
        else:
            log.error("commit failed: %s", error)
            lg._stats.fsync_errors += 1
            lg._unavailable = error
            for s, _ in self.in_round:
                if not s.deleted:
                    lg._unsynced[s.base] = s
            lg._dir_dirty = True
        self.in_round = []
        for fd in lg._to_close:
            os.close(fd)
        lg._to_close.clear()

    def has_pending(self) -> bool:
        lg = self.log
        return bool(lg._group.items or lg._segs[-1].buf or lg._unsynced)
