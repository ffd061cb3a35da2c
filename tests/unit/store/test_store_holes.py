"""HoleMarkers: the ``.hole`` files agree with the ranges, and touching ranges merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartbroker.store import StoreUnavailable
from smartbroker.store.holes import HoleMarkers, hole_name


def files(d: Path) -> set[str]:
    return {p.name for p in d.glob("*.hole")}


def test_touching_ranges_merge_into_one_marker(tmp_path: Path) -> None:
    holes = HoleMarkers(str(tmp_path))
    holes.add(10, 20)
    holes.add(20, 30)
    holes.add(40, 50)
    assert sorted(holes.ranges) == [(10, 30), (40, 50)]
    assert files(tmp_path) == {hole_name(10, 30), hole_name(40, 50)}


def test_covers_walks_across_adjacent_markers(tmp_path: Path) -> None:
    holes = HoleMarkers(str(tmp_path))
    holes.ranges += [(10, 20), (20, 25)]  # as recovery finds them, unmerged
    assert holes.covers(10, 25) and holes.covers(12, 18)
    assert not holes.covers(10, 26) and not holes.covers(5, 15)
    assert holes.top == 25


def test_drop_below_forgets_markers_and_files(tmp_path: Path) -> None:
    holes = HoleMarkers(str(tmp_path))
    holes.add(0, 10)
    holes.add(30, 40)
    holes.drop_below(30)
    assert holes.ranges == [(30, 40)] and files(tmp_path) == {hole_name(30, 40)}


def test_found_reads_a_marker_name(tmp_path: Path) -> None:
    holes = HoleMarkers(str(tmp_path))
    holes.found(hole_name(3, 9).partition(".")[0])
    assert holes.ranges == [(3, 9)]


def test_marker_that_cannot_be_written_is_store_unavailable(tmp_path: Path) -> None:
    holes = HoleMarkers(str(tmp_path / "gone"))
    with pytest.raises(StoreUnavailable, match="cannot record deletion"):
        holes.add(1, 2)
    assert holes.ranges == []
