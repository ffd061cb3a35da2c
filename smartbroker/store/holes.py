"""Hole markers: ``<start>-<end>.hole`` files naming offset ranges deleted on purpose.

A segment deleted out of order (or a compacted segment's dropped tail) leaves a gap in
the offsets. The marker lets recovery tell that deliberate gap from a lost file.
"""

from __future__ import annotations

import contextlib
import os

from .api import StoreUnavailable


def unlink(directory: str, name: str) -> None:
    """Remove a file of the log directory; already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, name))


def hole_name(start: int, end: int) -> str:
    return f"{start:020d}-{end:020d}.hole"


class HoleMarkers:
    """The ``[start, end)`` ranges of one log directory, in step with their files."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.ranges: list[tuple[int, int]] = []

    def found(self, stem: str) -> None:
        """A marker file seen while opening the directory (``stem`` is ``start-end``)."""
        a, b = stem.split("-")
        self.ranges.append((int(a), int(b)))

    @property
    def top(self) -> int:
        """The highest offset any marker reaches (0 without markers)."""
        return max([e for _, e in self.ranges] + [0])

    def covers(self, start: int, end: int) -> bool:
        """Whether markers (touching or overlapping) cover all of ``[start, end)``."""
        for a, b in sorted(self.ranges):
            if a <= start < b:
                start = b
        return start >= end

    def drop_below(self, first: int) -> None:
        """Forget markers wholly below the first segment: nothing there to explain."""
        for a, b in [h for h in self.ranges if h[1] <= first]:
            self.ranges.remove((a, b))
            unlink(self.directory, hole_name(a, b))

    def add(self, start: int, end: int) -> None:
        """Mark [start, end) as deliberately empty; touching markers merge into one (so a
        compacted stream does not pile up one file per deleted segment). The new marker is
        created before the old ones go, so a crash leaves overlapping markers, never none."""
        for a, b in list(self.ranges):
            if a <= end and start <= b:
                start, end = min(a, start), max(b, end)
        try:
            with open(os.path.join(self.directory, hole_name(start, end)), "wb"):
                pass
        except OSError as e:
            raise StoreUnavailable(f"cannot record deletion: {e}") from e
        for a, b in [h for h in self.ranges if start <= h[0] and h[1] <= end]:
            self.ranges.remove((a, b))
            if (a, b) == (start, end):
                continue
            unlink(self.directory, hole_name(a, b))
        self.ranges.append((start, end))
