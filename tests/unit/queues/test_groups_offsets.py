"""The committed-offset store and the offset arithmetic of resets, on real logs (no queue)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smartbroker.queues.offsets import OffsetBook, OffsetReset, PartitionOffsets, position
from smartbroker.store import MemoryLog, SegmentLog


@pytest.fixture
def offsets_log(tmp_path: Path) -> Iterator[Callable[[], SegmentLog]]:
    """Opens the same on-disk offsets log again and again (a broker restart each time)."""
    opened: list[SegmentLog] = []

    def reopen() -> SegmentLog:
        if opened:
            opened[-1].close()
        opened.append(SegmentLog(tmp_path / "offsets", fsync="never"))
        return opened[-1]

    yield reopen
    opened[-1].close()


def partition(timestamps: list[int], first: int = 0) -> MemoryLog:
    """A partition log whose record i was appended at ``timestamps[i]`` (ms); the records
    before ``first`` are deleted (retention), so ``first_offset == first``."""
    lg = MemoryLog(segment_bytes=1)  # one record per segment: retention can drop any head
    for ts in timestamps:
        lg.append(b"x", ts)
    for seg in lg.segments():
        if seg.base_offset < first:
            lg.delete_segment(seg.base_offset)
    assert lg.first_offset == first
    return lg


# -- OffsetBook ------------------------------------------------------------------------------
def test_book_commits_and_reads_back() -> None:
    book = OffsetBook(MemoryLog())
    assert book.get("g", 0) is None and book.groups() == set()
    book.commit("g", 0, 5)
    book.commit("g", 1, 7)
    book.commit("h", 0, 1)
    assert (book.get("g", 0), book.get("g", 1), book.get("h", 0)) == (5, 7, 1)
    assert book.groups() == {"g", "h"} and book.partitions("g") == {0: 5, 1: 7}


def test_book_writes_only_changes() -> None:
    lg = MemoryLog()
    book = OffsetBook(lg)
    book.commit("g", 0, 5)
    book.commit("g", 0, 5)
    assert lg.next_offset == 1
    book.commit("g", 0, 4)  # backwards is a change too (a reset)
    assert lg.next_offset == 2 and book.get("g", 0) == 4


def test_book_survives_reopen_newest_record_wins(offsets_log) -> None:
    book = OffsetBook(offsets_log())
    book.commit("g", 0, 5)
    book.commit("g", 0, 9)
    book.commit("g", 1, 2)
    book.commit("a\x00b", 3, 4)  # a NUL in a group name: the partition is after the last one
    book = OffsetBook(offsets_log())
    assert book.partitions("g") == {0: 9, 1: 2} and book.get("a\x00b", 3) == 4


def test_forget_deletes_a_group_durably(offsets_log) -> None:
    book = OffsetBook(offsets_log())
    book.commit("g", 0, 5)
    book.commit("g", 1, 6)
    book.commit("keep", 0, 1)
    assert book.forget("g") is True
    assert book.forget("g") is False and book.forget("never") is False
    assert book.groups() == {"keep"}
    book = OffsetBook(offsets_log())
    assert book.groups() == {"keep"} and book.get("g", 0) is None
    book.commit("g", 0, 2)  # the name can be used again
    assert OffsetBook(offsets_log()).partitions("g") == {0: 2}


# -- position --------------------------------------------------------------------------------
def test_position_is_never_before_what_retention_kept() -> None:
    lg = partition([0] * 10, first=4)
    assert position(None, lg) == 4  # never committed: the start
    assert position(2, lg) == 4  # committed into deleted records
    assert position(7, lg) == 7


# -- OffsetReset -----------------------------------------------------------------------------
@pytest.mark.parametrize("to, value, committed, expected", [
    ("earliest", None, 6, 2),
    ("latest", None, 6, 8),
    ("offset", 5, 6, 5),
    ("offset", 0, 6, 2),  # clipped up to the first offset kept
    ("offset", 10_000, 6, 8),  # clipped down to the end
    ("shift", -3, 6, 3),
    ("shift", -100, 6, 2),
    ("shift", 1, 6, 7),
    ("shift", 100, 6, 8),
    ("datetime", 3500, 6, 4),  # the first record at or after the time
    ("datetime", 4000, 6, 4),
    ("datetime", 0, 6, 2),  # before everything kept: the first offset kept
    ("datetime", 99_999, 6, 8),  # after everything: the end
])
def test_reset_targets(to: str, value: int | None, committed: int, expected: int) -> None:
    lg = partition([1000 * i for i in range(8)], first=2)  # offsets 2..7 at 2000..7000 ms
    assert OffsetReset(to, value).target(lg, committed) == expected


def test_reset_on_an_empty_partition_stays_at_its_end() -> None:
    lg = partition([])
    for to, value in [("earliest", None), ("latest", None), ("offset", 3), ("shift", -1),
                      ("datetime", 5)]:
        assert OffsetReset(to, value).target(lg, 0) == 0


@pytest.mark.parametrize("to, value", [("sideways", None), ("offset", None), ("shift", None),
                                       ("datetime", None)])
def test_reset_refuses_a_kind_or_a_missing_value(to: str, value: int | None) -> None:
    with pytest.raises(ValueError):
        OffsetReset(to, value)


# -- PartitionOffsets ------------------------------------------------------------------------
def test_partition_offsets() -> None:
    empty = PartitionOffsets.of(0, MemoryLog())
    assert (empty.first, empty.last, empty.next, empty.messages) == (0, None, 0, 0)
    lg = partition([0] * 6, first=2)
    o = PartitionOffsets.of(3, lg)
    assert (o.partition, o.first, o.last, o.next, o.messages) == (3, 2, 5, 6, 4)
    assert o.segments == len(lg.segments()) and o.size_bytes == lg.size_bytes > 0
