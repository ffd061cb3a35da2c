"""Grouped appends (store/grouping.py): a loop pass's records framed as one batch."""

from __future__ import annotations

import asyncio
import errno
import os
import zlib

import pytest

from smartbroker.store import SegmentLog, StoreUnavailable, segment
from smartbroker.store.grouping import GROUP_BYTES, GROUP_RECORDS
from smartbroker.store.record import (
    ENTRY,
    FLAG_BATCH,
    FLAG_CRC32C,
    HEAD,
    MAGIC,
    PREFIX,
    PREFIX_SIZE,
)

GROUPED = FLAG_BATCH | FLAG_CRC32C  # a group's frame: a batch, CRC-32C


def frame_flags(directory: os.PathLike[str]) -> list[tuple[int, int]]:
    """(flags, record count) of every frame in the directory's segment files."""
    out = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos + PREFIX_SIZE <= len(data):
            _, length, _ = PREFIX.unpack_from(data, pos)
            _, _, flags, count = HEAD.unpack_from(data, pos + PREFIX_SIZE)
            out.append((flags, count))
            pos += PREFIX_SIZE + length
    return out


def test_offsets_come_at_once_and_one_frame_holds_the_pass(tmp_path):
    log = SegmentLog(tmp_path / "a")

    async def main() -> list[int]:
        offsets = [log.append_grouped(b"m%d" % i) for i in range(50)]
        assert log.next_offset == 50
        assert log.read(49) == b"m49"  # a read frames the group first
        more = [log.append_grouped(b"n%d" % i) for i in range(5)]
        await log.sync()
        return offsets + more

    assert asyncio.run(main()) == list(range(55))
    log.close()
    frames = frame_flags(tmp_path / "a")
    assert frames == [(GROUPED, 50), (GROUPED, 5)]
    again = SegmentLog(tmp_path / "a")
    assert [p for _, p in again.scan()] == [b"m%d" % i for i in range(50)] + [b"n%d" % i for i in range(5)]
    again.close()


def test_a_full_group_is_framed_at_once_and_offsets_run_on(tmp_path):
    log = SegmentLog(tmp_path / "a")
    n = GROUP_RECORDS + 10
    assert [log.append_grouped(b"r%d" % i) for i in range(n)] == list(range(n))
    big = [log.append_grouped(b"b" * (GROUP_BYTES // 3)) for _ in range(4)]
    assert big == list(range(n, n + 4))
    log.close()
    frames = frame_flags(tmp_path / "a")
    assert frames[0] == (GROUPED, GROUP_RECORDS) and sum(c for _, c in frames) == n + 4


def test_the_end_of_the_loop_pass_frames_the_group(tmp_path):
    log = SegmentLog(tmp_path / "a")

    async def main() -> None:
        for i in range(3):
            log.append_grouped(b"x%d" % i)
        await asyncio.sleep(0)  # one loop pass: the group's call_soon ran
        assert not log._group.items  # noqa: SLF001 - the pass's end framed it

    asyncio.run(main())
    log.close()
    assert frame_flags(tmp_path / "a") == [(GROUPED, 3)]


def test_a_group_never_overfills_a_segment(tmp_path):
    log = SegmentLog(tmp_path / "a", segment_bytes=4096)
    for i in range(100):
        assert log.append_grouped(b"%03d" % i + b"x" * 200) == i
    log.close()
    again = SegmentLog(tmp_path / "a", segment_bytes=4096)
    assert again.segment_count > 3
    assert all(s.size_bytes <= 4096 for s in again.segments())
    assert [p[:3] for _, p in again.scan()] == [b"%03d" % i for i in range(100)]
    again.close()


def test_other_appends_come_after_the_group(tmp_path):
    log = SegmentLog(tmp_path / "a")
    assert log.append_grouped(b"a") == 0
    assert log.append(b"b") == 1  # frames the group first: offsets stay in order
    assert log.append_grouped(b"c") == 2
    assert log.append_batch([b"d", b"e"]) == [3, 4]
    log.close()
    assert [p for _, p in SegmentLog(tmp_path / "a").scan()] == [b"a", b"b", b"c", b"d", b"e"]


def test_a_failed_roll_keeps_the_group_and_fails_its_fsync(tmp_path, monkeypatch, caplog):
    log = SegmentLog(tmp_path / "a", segment_bytes=1024)
    log.append(b"x" * 900)

    def disk_full(fd: int, data: memoryview, pos: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main() -> None:
        monkeypatch.setattr(segment, "_pwrite", disk_full)
        off = log.append_grouped(b"y" * 900)  # needs a roll, which needs the old buffer out
        assert off == 1
        await asyncio.sleep(0)  # the pass's end cannot frame it: no traceback, kept pending
        with pytest.raises(StoreUnavailable):
            await log.wait_durable(off)
        monkeypatch.undo()
        await log.wait_durable(off)  # the disk is back: the group is framed and synced

    asyncio.run(main())
    log.close()
    assert "Traceback" not in caplog.text and "Exception in callback" not in caplog.text
    assert [p[:1] for _, p in SegmentLog(tmp_path / "a", segment_bytes=1024).scan()] == [b"x", b"y"]


def test_frames_written_with_zlibs_crc_still_read(tmp_path):
    """Segments from before FLAG_CRC32C hold frames with zlib's CRC-32: they read as before."""
    body = HEAD.pack(0, 1, FLAG_BATCH, 2) + ENTRY.pack(-1, 1) + b"a" + ENTRY.pack(-1, 1) + b"b"
    os.makedirs(tmp_path / "a")
    with open(tmp_path / "a" / segment.data_name(0), "wb") as f:
        f.write(PREFIX.pack(MAGIC, len(body), zlib.crc32(body)) + body)
    log = SegmentLog(tmp_path / "a")
    assert log.append_grouped(b"c") == 2
    assert [p for _, p in log.scan()] == [b"a", b"b", b"c"]
    assert log.stats.bad_records == 0
    log.close()


def test_a_damaged_crc32c_frame_is_skipped(tmp_path):
    log = SegmentLog(tmp_path / "a")
    for body in (b"first", b"second"):
        log.append_grouped(body)
    log.write_out()  # frames the first group
    log.append_grouped(b"third")
    log.close()
    path = tmp_path / "a" / segment.data_name(0)
    data = bytearray(path.read_bytes())
    data[data.index(b"second")] ^= 1
    path.write_bytes(bytes(data))
    again = SegmentLog(tmp_path / "a")
    assert [p for _, p in again.scan()] == [b"third"]
    assert again.stats.bad_records == 1
    again.close()
