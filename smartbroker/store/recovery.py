"""Opening a log directory: which segments are there, which are readable, what is lost.

Recovery never fails on a bad file: an unreadable segment is skipped and reported in the
log's stats, and the offsets a lost file may have held are never handed out again.
"""

from __future__ import annotations

import logging
import os

from .api import LogStats
from .handles import HandleCache
from .holes import HoleMarkers, unlink
from .segment import Segment, data_name

log = logging.getLogger("smartbroker.store.log")  # the name these messages always had
COMPACT_SUFFIX = ".compact"  # a compacted rewrite of <base>.log before it is renamed over it


def recover(directory: str, index_interval: int, stats: LogStats, holes: HoleMarkers,
            verify: bool, handles: HandleCache) -> tuple[list[Segment], int]:
    """The readable segments in offset order, and the lowest offset a new segment may
    start at (past every lost or unreadable file). Fills ``holes`` from their markers."""
    logs, idxs = set(), set()
    for name in os.listdir(directory):
        stem, _, ext = name.partition(".")
        if ext == "log" and stem.isdigit():
            logs.add(int(stem))
        elif ext == "idx" and stem.isdigit():
            idxs.add(int(stem))
        elif ext == "hole" and "-" in stem:
            holes.found(stem)
        elif ext.endswith(COMPACT_SUFFIX):  # a compaction cut short: the old file stands
            unlink(directory, name)
    bases = sorted(logs)
    top = max([*bases, holes.top])
    for base in sorted(idxs - logs):
        log.error("segment %s is missing (its index is there)", data_name(base))
        top = max(top, base + 1)
    segs: list[Segment] = []
    for i, base in enumerate(bases):
        path = os.path.join(directory, data_name(base))
        seg = None
        try:
            seg = Segment(directory, base, handles.open_file(path), index_interval, stats, handles)
            handles.opened(seg)  # recovering thousands of segments keeps only so many open
            seg.recover(tail=i == len(bases) - 1, trust_index=not verify)
        except OSError as e:
            log.error("segment %s is unreadable, skipping it: %s", path, e)
            stats.unreadable_segments.append(path)
            if seg is not None and (fd := seg.close()) >= 0:
                os.close(fd)
            top = max(top, base + 1)
            continue
        segs.append(seg)
    for prev, seg in zip(segs, segs[1:], strict=False):
        if prev.next_offset < seg.base and not holes.covers(prev.next_offset, seg.base):
            log.error("offsets %d..%d are missing (segment lost)", prev.next_offset, seg.base - 1)
            stats.missing_ranges.append((prev.next_offset, seg.base))
    return segs, top
