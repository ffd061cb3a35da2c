"""The broker-wide bound on open segment files (store/handles.py), on real SegmentLogs
sharing one HandleCache, as a broker's logs share ``Executors.handles``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartbroker.store.executors import Executors
from smartbroker.store.handles import HandleCache
from smartbroker.store.log import SegmentLog

CAP = 16


@pytest.fixture
def cache() -> Iterator[HandleCache]:
    executors = Executors(HandleCache(CAP))  # one per broker, made with the disk threads
    yield executors.handles
    executors.shutdown()


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fill(log: SegmentLog, n: int) -> list[bytes]:
    bodies = [b"record-%04d-" % i + b"x" * 100 for i in range(n)]
    for body in bodies:
        log.append(body)
    return bodies


def test_many_segments_few_descriptors_and_every_record_readable(tmp_path: Path,
                                                                 cache: HandleCache) -> None:
    before = fds()
    log = SegmentLog(tmp_path / "a", segment_bytes=256, handles=cache)  # ~one record per segment
    bodies = fill(log, 400)
    log.flush()
    assert log.segment_count >= 300
    assert fds() - before <= CAP + 4
    assert [p for _, p in log.scan()] == bodies  # replay from the first segment
    assert log.read(7) == bodies[7] and log.read(399) == bodies[399]
    assert cache.reopens > 0
    log.close()
    assert fds() <= before  # (other tests' leftover segments may have been evicted meanwhile)

    # recovery keeps the bound too
    log = SegmentLog(tmp_path / "a", segment_bytes=256, handles=cache)
    assert fds() - before <= CAP + 4
    assert [p for _, p in log.scan()] == bodies
    assert log.append(b"more") == 400
    log.close()
    assert fds() <= before  # (other tests' leftover segments may have been evicted meanwhile)


def test_segments_awaiting_fsync_stay_open(tmp_path: Path, cache: HandleCache) -> None:
    logs = [SegmentLog(tmp_path / f"l{i}", handles=cache) for i in range(3 * CAP)]
    for lg in logs:
        lg.append(b"unsynced")
        lg.write_out()  # in the page cache, not fsynced: its descriptor must stay
    dirty = [lg._segs[-1] for lg in logs]  # noqa: SLF001
    assert all(s.dirty and s.fd >= 0 for s in dirty)
    for lg in logs:
        lg.flush()
    assert not any(s.dirty for s in dirty)
    extra = SegmentLog(tmp_path / "extra", handles=cache)  # the next open evicts down to the bound
    assert len(cache) <= CAP
    for lg in logs + [extra]:
        lg.close()
    for i in range(3 * CAP):
        assert [p for _, p in SegmentLog(tmp_path / f"l{i}", handles=cache).scan()] == [b"unsynced"]


def test_group_commit_across_many_logs(tmp_path: Path, cache: HandleCache) -> None:
    """Concurrent appends + syncs on more logs than the cache holds: every write lands."""
    async def main() -> None:
        logs = [SegmentLog(tmp_path / f"l{i}", segment_bytes=512, handles=cache)
                for i in range(2 * CAP)]
        for round_ in range(20):
            for lg in logs:
                lg.append(b"r%02d" % round_ + b"y" * 200)
            await asyncio.gather(*(lg.sync() for lg in logs))
        for lg in logs:
            await lg.aclose()

    asyncio.run(main())
    for i in range(2 * CAP):
        got = [p[:3] for _, p in SegmentLog(tmp_path / f"l{i}", handles=cache).scan()]
        assert got == [b"r%02d" % r for r in range(20)]


def test_deleted_segment_is_never_reopened(tmp_path: Path, cache: HandleCache) -> None:
    log = SegmentLog(tmp_path / "a", segment_bytes=256, handles=cache)
    fill(log, 50)
    log.flush()
    first = log.segments()[0].base_offset
    seg = log._segs[0]  # noqa: SLF001
    assert log.delete_segment(first)
    assert seg.deleted and seg.fd == -1
    with pytest.raises(OSError):
        seg.handle()
    assert log.read(first) is None
    log.close()


def test_the_bound_is_per_cache_a_log_without_one_has_its_own(tmp_path: Path,
                                                              cache: HandleCache) -> None:
    shared = [SegmentLog(tmp_path / f"s{i}", handles=cache) for i in range(3)]
    alone = SegmentLog(tmp_path / "alone")
    assert len(cache) == 3
    for lg in [*shared, alone]:
        lg.close()
    assert len(cache) == 0


def test_many_idle_logs_hold_no_descriptor_each(tmp_path: Path, cache: HandleCache) -> None:
    """A log's directory is opened only for the fsync round that needs it (a segment
    created or deleted): thousands of idle logs (replicated quorum queues) used to keep a
    descriptor each, and a client declaring queues could exhaust the broker's."""
    before = fds()
    logs = [SegmentLog(tmp_path / f"d{i}", handles=cache) for i in range(4 * CAP)]
    for lg in logs:
        lg.append(b"x")
        lg.flush()  # the new directory entry fsynced through a descriptor of its own
    assert fds() - before <= CAP
    logs[0].append(b"y" * 300)
    logs[0].roll()  # a new segment: the directory is fsynced again in the next round
    logs[0].flush()
    assert fds() - before <= CAP
    for lg in logs:
        lg.close()
    again = SegmentLog(tmp_path / "d0", handles=cache)
    assert [p for _, p in again.scan()] == [b"x", b"y" * 300]
    again.close()
