"""Fixtures for the storage tests: one factory per Log implementation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smartbroker.store import MemoryLog, SegmentLog


@pytest.fixture(params=["memory", "disk"])
def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Build a log of the parametrized kind; closed after the test."""
    made: list[object] = []

    def make(**kw: object) -> object:
        log = MemoryLog(**kw) if request.param == "memory" else SegmentLog(tmp_path / "log", **kw)
        made.append(log)
        return log

    yield make
    for log in made:
        log.close()
