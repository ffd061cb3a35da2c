"""How segments leave a ``SegmentLog``: deleted whole (retention, acked, DeleteRecords'
log start offset) or replaced by a compacted rewrite.

Split from ``log.py`` so that module keeps appending and reading. ``Retirer`` works on
its log's segment list (composition: the log owns the state and delegates these calls;
none of them is on the per-message path).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import TYPE_CHECKING

from .holes import unlink
from .recovery import COMPACT_SUFFIX
from .segment import Segment, data_name, index_name

if TYPE_CHECKING:
    from .log import SegmentLog


class Retirer:
    """Deletes and replaces the segments of one ``SegmentLog``."""

    __slots__ = ("log",)

    def __init__(self, log: SegmentLog) -> None:
        self.log = log

    def delete_segment(self, base_offset: int) -> bool:
        """Delete one whole segment; the active one is rolled first (never left empty)."""
        lg = self.log
        bases, segs = lg._bases, lg._segs  # noqa: SLF001 - the log's own helper
        i = bisect_left(bases, base_offset)
        if i == len(bases) or bases[i] != base_offset:
            return False
        seg = segs[i]
        if i == len(segs) - 1:
            if not seg.end:
                return False
            lg._roll()  # noqa: SLF001
        if i > 0:  # out of order: leave a marker so recovery does not call the gap a loss
            lg._holes.add(seg.base, bases[i + 1])  # noqa: SLF001
        del segs[i], bases[i]
        lg._unsynced.pop(seg.base, None)  # noqa: SLF001
        unlink(lg.directory, data_name(seg.base))
        unlink(lg.directory, os.path.basename(seg.index_path))
        self.close_segment(seg)
        lg._holes.drop_below(bases[0])  # noqa: SLF001
        return True

    def delete_before(self, offset: int) -> int:
        """Delete closed segments lying entirely below ``offset``; returns how many."""
        segs = self.log._segs  # noqa: SLF001
        n = 0
        while len(segs) > 1 and segs[0].next_offset <= offset:
            self.delete_segment(segs[0].base)
            n += 1
        return n

    def replace_segment(self, old: Segment, new: Segment | None) -> bool:
        """See ``SegmentLog.replace_segment``."""
        lg = self.log
        segs = lg._segs  # noqa: SLF001
        i = bisect_left(lg._bases, old.base)  # noqa: SLF001
        if lg._closed or i >= len(segs) - 1 or segs[i] is not old:  # noqa: SLF001
            return False
        if new is None:
            return self.delete_segment(old.base)
        if new.next_offset < old.next_offset:
            lg._holes.add(new.next_offset, old.next_offset)  # noqa: SLF001
        unlink(lg.directory, index_name(old.base))  # a stale index must never describe the new file
        os.replace(old.path + COMPACT_SUFFIX, old.path)
        lg._dir_dirty = True  # noqa: SLF001 - the next commit round fsyncs the directory
        new.stats = lg._stats  # noqa: SLF001
        new.handles = lg._handles  # noqa: SLF001
        new.next_offset = old.next_offset
        new.max_ts = max(new.max_ts, old.max_ts)  # retention ages the segment as before
        segs[i] = new
        lg._unsynced.pop(old.base, None)  # noqa: SLF001
        self.close_segment(old)
        new.dirty = False  # written and fsynced by the compaction before the rename
        lg._handles.opened(new)  # noqa: SLF001
        new.save_index()
        return True

    def close_segment(self, seg: Segment) -> None:
        """A segment leaves the log for good (deleted or replaced)."""
        fd = seg.close(deleted=True)
        if fd < 0:
            return
        if self.log._commit.busy:  # noqa: SLF001
            self.log._to_close.append(fd)  # noqa: SLF001 - an fsync thread may be using it
        else:
            os.close(fd)
