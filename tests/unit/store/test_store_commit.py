"""Disk-only: group commit, fsync policies, and disk-full / fsync failures."""

from __future__ import annotations

import asyncio
import errno
import threading
import time

import pytest

from smartbroker.store import SegmentLog, StoreUnavailable, commit, segment


def test_unknown_policy_is_refused(tmp_path):
    with pytest.raises(ValueError):
        SegmentLog(tmp_path / "a", fsync="sometimes")


def test_concurrent_waiters_share_one_fsync(tmp_path):
    log = SegmentLog(tmp_path / "a")

    async def one(i: int) -> None:
        off = log.append(b"%d" % i)
        await log.wait_durable(off)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(100)))

    asyncio.run(main())
    assert log.durable_offset == 100
    assert 1 <= log.stats.fsyncs <= 3
    log.close()


def test_never_policy_does_not_fsync(tmp_path):
    log = SegmentLog(tmp_path / "a", fsync="never")

    async def main() -> None:
        log.append(b"x")
        await log.sync()

    asyncio.run(main())
    assert log.durable_offset == 1 and log.stats.fsyncs == 0
    log.close()
    assert SegmentLog(tmp_path / "a").read(0) == b"x"


@pytest.mark.parametrize("policy", ["always", "batch"])
def test_unawaited_appends_become_durable_in_the_background(tmp_path, policy):
    log = SegmentLog(tmp_path / "a", fsync=policy, sync_interval_ms=1)

    async def main() -> None:
        log.append(b"nobody waits for me")
        deadline = time.monotonic() + 5
        while log.durable_offset < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0)  # yield to the loop; the commit round runs meanwhile

    asyncio.run(main())
    assert log.durable_offset == 1 and log.stats.fsyncs >= 1
    log.close()


def test_fsync_runs_off_the_loop_while_appends_continue(tmp_path, monkeypatch):
    log = SegmentLog(tmp_path / "a")
    entered, gate = threading.Event(), threading.Event()
    real = commit.fsync_all

    def slow_fsync(fds: list[int]) -> None:
        entered.set()
        assert gate.wait(5)
        real(fds)

    monkeypatch.setattr(commit, "fsync_all", slow_fsync)

    async def main() -> None:
        log.append(b"a")
        first = asyncio.create_task(log.sync())
        assert await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
        assert not first.done()
        off = log.append(b"b")  # the loop is free: appends and reads go on
        assert log.read(off) == b"b"
        second = asyncio.create_task(log.wait_durable(off))
        gate.set()
        await first
        await second
        assert log.durable_offset == 2

    asyncio.run(main())
    log.close()


def test_a_waiter_the_running_round_covers_is_released_by_it(tmp_path, monkeypatch):
    """A wait for an offset written out before the running fsync began returns with that
    fsync, even when newer appends need another round (a publisher's confirm goes out one
    fsync sooner)."""
    log = SegmentLog(tmp_path / "a")
    gates = [threading.Event(), threading.Event()]
    entered = [threading.Event(), threading.Event()]
    calls = []
    real = commit.fsync_all

    def gated_fsync(fds: list[int]) -> None:
        n = len(calls)
        calls.append(n)
        entered[min(n, 1)].set()
        assert gates[min(n, 1)].wait(5)
        real(fds)

    monkeypatch.setattr(commit, "fsync_all", gated_fsync)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        off = log.append(b"a")
        first = asyncio.create_task(log.wait_durable(off))
        assert await loop.run_in_executor(None, entered[0].wait, 5)
        late = asyncio.create_task(log.wait_durable(off))  # mid-round, an offset it covers
        newer = log.append(b"b")
        after = asyncio.create_task(log.wait_durable(newer))  # needs the next round
        gates[0].set()
        await asyncio.wait_for(first, 5)
        await asyncio.wait_for(late, 5)  # not held by the second round's fsync
        assert not after.done()
        gates[1].set()
        await asyncio.wait_for(after, 5)

    asyncio.run(main())
    assert log.stats.fsyncs == 2
    log.close()


def test_disk_full_refuses_then_recovers_without_damage(tmp_path, monkeypatch):
    log = SegmentLog(tmp_path / "a")
    real = segment._pwrite
    calls: list[int] = []

    def disk_full(fd: int, data: memoryview, pos: int) -> int:
        if not calls:  # the first write lands halfway, as when the disk fills mid-write
            calls.append(1)
            return real(fd, bytes(data[:10]), pos)
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main() -> None:
        for i in range(10):
            log.append(b"ok%d" % i)
        await log.sync()
        monkeypatch.setattr(segment, "_pwrite", disk_full)
        pending = log.append(b"pending")  # accepted into the buffer
        with pytest.raises(StoreUnavailable):
            await log.sync()
        with pytest.raises(StoreUnavailable):
            log.append(b"refused")
        with pytest.raises(StoreUnavailable):
            log.append_batch([b"refused too"])
        assert log.durable_offset == 10 and log.stats.write_errors >= 2
        monkeypatch.setattr(segment, "_pwrite", real)  # space is back
        await log.sync()
        assert log.durable_offset == pending + 1
        assert log.append(b"later") == pending + 1
        await log.sync()

    asyncio.run(main())
    log.close()
    log = SegmentLog(tmp_path / "a")
    assert [p for _, p in log.scan()] == [b"ok%d" % i for i in range(10)] + [b"pending", b"later"]
    assert log.stats.bad_records == 0 and log.stats.truncated_bytes == 0
    log.close()


def test_disk_full_on_roll_refuses_the_record(tmp_path, monkeypatch):
    log = SegmentLog(tmp_path / "a", segment_bytes=1024)
    log.append(b"x" * 900)

    def disk_full(fd: int, data: memoryview, pos: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment, "_pwrite", disk_full)
    with pytest.raises(StoreUnavailable):
        log.append(b"y" * 900)  # needs a roll, which needs the old buffer written
    assert log.next_offset == 1
    monkeypatch.undo()
    assert log.append(b"z" * 900) == 1
    log.close()
    assert [p[:1] for _, p in SegmentLog(tmp_path / "a", segment_bytes=1024).scan()] == [b"x", b"z"]


def test_fsync_failure_nacks_waiters_and_retries(tmp_path, monkeypatch):
    log = SegmentLog(tmp_path / "a")

    def broken(fds: list[int]) -> None:
        raise OSError(errno.EIO, "I/O error")

    async def main() -> None:
        monkeypatch.setattr(commit, "fsync_all", broken)
        log.append(b"a")
        with pytest.raises(StoreUnavailable):
            await log.sync()
        assert log.durable_offset == 0 and log.stats.fsync_errors == 1
        monkeypatch.undo()
        await log.sync()
        assert log.durable_offset == 1

    asyncio.run(main())
    log.close()


def test_flush_is_a_blocking_sync(tmp_path):
    log = SegmentLog(tmp_path / "a")
    log.append(b"a")
    assert log.durable_offset == 0
    log.flush()
    assert log.durable_offset == 1 and log.stats.fsyncs == 1
    log.close()


def test_segment_deleted_during_a_failing_fsync_is_forgotten(tmp_path, monkeypatch):
    log = SegmentLog(tmp_path / "a", segment_bytes=1024)
    entered, gate = threading.Event(), threading.Event()

    def failing(fds: list[int]) -> None:
        entered.set()
        assert gate.wait(5)
        raise OSError(errno.EIO, "I/O error")

    async def main() -> None:
        log.append(b"x" * 900)
        log.append(b"y" * 900)  # rolls: segment 0 is closed, waiting for its fsync
        monkeypatch.setattr(commit, "fsync_all", failing)
        task = asyncio.create_task(log.sync())
        assert await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
        assert log.delete_segment(0)  # while the fsync thread holds its fd
        gate.set()
        with pytest.raises(StoreUnavailable):
            await task
        monkeypatch.undo()
        await log.sync()  # must not try to fsync the deleted segment's fd
        assert log.durable_offset == 2 and log.read(1) == b"y" * 900

    asyncio.run(main())
    log.close()


def test_unexpected_error_in_a_round_fails_waiters_instead_of_hanging(tmp_path, monkeypatch):
    log = SegmentLog(tmp_path / "a")

    def weird(fds: list[int]) -> None:
        raise ValueError("not an OSError")

    async def main() -> None:
        monkeypatch.setattr(commit, "fsync_all", weird)
        log.append(b"a")
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(log.sync(), 5)
        monkeypatch.undo()
        await log.sync()
        assert log.durable_offset == 1

    asyncio.run(main())
    log.close()


def test_idle_fsync_writes_out_soon_and_fsyncs_later(tmp_path):
    """A stream partition's unwaited records reach the OS within the short interval but
    wait for the idle fsync tick; a waiter still gets its fsync at once."""
    log = SegmentLog(tmp_path / "a", sync_interval_ms=1, idle_fsync_ms=60_000)
    on_disk = tmp_path / "a" / segment.data_name(0)

    async def main() -> None:
        log.append(b"nobody waits for me")
        deadline = time.monotonic() + 5
        while on_disk.stat().st_size == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        assert on_disk.stat().st_size > 0  # written out: a kill -9 keeps it
        assert log.stats.fsyncs == 0 and log.durable_offset == 0  # not fsynced yet
        off = log.append(b"a confirm waits for me")
        await log.wait_durable(off)  # no minute's wait: a round starts at once
        assert log.durable_offset == 2 and log.stats.fsyncs == 1

    asyncio.run(main())
    log.close()


def test_idle_fsync_tick_makes_unwaited_records_durable(tmp_path):
    log = SegmentLog(tmp_path / "a", sync_interval_ms=1, idle_fsync_ms=20)

    async def main() -> None:
        log.append(b"nobody waits for me")
        deadline = time.monotonic() + 5
        while log.durable_offset < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    asyncio.run(main())
    assert log.durable_offset == 1 and log.stats.fsyncs == 1
    log.close()
