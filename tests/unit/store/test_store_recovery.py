"""Disk-only: what SegmentLog recovers from (crashes, torn tails, bit flips, lost files)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from smartbroker.store import SegmentLog
from smartbroker.store.record import MAGIC


def fill(path: Path, n: int = 200, size: int = 200, **kw) -> SegmentLog:
    log = SegmentLog(path, segment_bytes=8192, **kw)
    for i in range(n):
        log.append(b"%05d" % i + b"." * (size - 5), timestamp_ms=i)
    return log


def crash_image(log: SegmentLog, dest: Path) -> Path:
    """Copy the files as a crash would leave them: data flushed, tail index never saved."""
    log.flush()
    shutil.copytree(log.directory, dest)
    log.close()
    for idx in dest.glob("*.idx"):
        if idx.stem == sorted(dest.glob("*.log"))[-1].stem:
            idx.unlink()
    return dest


def payload(i: int, size: int = 200) -> bytes:
    return b"%05d" % i + b"." * (size - 5)


def segment_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.log"))


def test_clean_reopen_uses_saved_indexes(tmp_path):
    fill(tmp_path / "a").close()
    log = SegmentLog(tmp_path / "a", segment_bytes=8192)
    assert log.next_offset == 200
    assert log.stats.rebuilt_indexes == 0
    assert [p for _, p in log.scan()] == [payload(i) for i in range(200)]
    assert log.append(b"x") == 200
    log.close()


def test_crash_reopen_scans_the_tail(tmp_path):
    d = crash_image(fill(tmp_path / "a"), tmp_path / "crash")
    log = SegmentLog(d, segment_bytes=8192)
    assert log.next_offset == 200
    assert log.read(199) == payload(199)
    assert log.stats.bad_records == log.stats.truncated_bytes == 0
    log.close()


def test_torn_tail_record_is_truncated(tmp_path):
    d = crash_image(fill(tmp_path / "a"), tmp_path / "crash")
    tail = segment_files(d)[-1]
    size = tail.stat().st_size
    os.truncate(tail, size - 50)  # cut into the last record
    log = SegmentLog(d, segment_bytes=8192)
    assert log.next_offset == 199
    assert log.stats.truncated_bytes == 200 + 41 - 50
    assert log.stats.bad_records == 0
    assert log.read(198) == payload(198) and log.read(199) is None
    assert log.append(b"again") == 199
    log.close()
    log = SegmentLog(d, segment_bytes=8192)
    assert log.read(199) == b"again" and log.stats.truncated_bytes == 0
    log.close()


def flip(path: Path, pos: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def test_bad_crc_in_tail_segment_is_skipped_and_counted(tmp_path):
    d = crash_image(fill(tmp_path / "a", n=220), tmp_path / "crash")
    tail = segment_files(d)[-1]
    base = int(tail.stem)
    assert base + 10 < 220  # the damaged record is not the last one
    flip(tail, 241 + 100)  # inside the payload of the tail's second record
    log = SegmentLog(d, segment_bytes=8192)
    assert log.stats.bad_records == 1
    assert log.read(base + 1) is None
    assert log.read(base) == payload(base) and log.read(base + 2) == payload(base + 2)
    assert log.next_offset == 220
    assert len(list(log.scan())) == 219
    log.close()


def test_corrupt_length_field_resyncs_on_the_next_frame(tmp_path):
    d = crash_image(fill(tmp_path / "a", n=220), tmp_path / "crash")
    tail = segment_files(d)[-1]
    base = int(tail.stem)
    flip(tail, 241 + 5)  # the length field of the second record
    log = SegmentLog(d, segment_bytes=8192)
    assert log.stats.bad_records == 1
    assert log.read(base + 1) is None and log.read(base + 2) == payload(base + 2)
    assert log.next_offset == 220
    log.close()


def test_flip_in_closed_segment_is_found_lazily_or_by_verify(tmp_path):
    fill(tmp_path / "a").close()
    seg = segment_files(tmp_path / "a")[1]
    base = int(seg.stem)
    flip(seg, 241 * 3 + 150)  # inside record base+3
    log = SegmentLog(tmp_path / "a", segment_bytes=8192)
    assert log.stats.bad_records == 0  # trusted index: not scanned at open
    assert log.read(base + 3) is None
    assert log.read(base + 4) == payload(base + 4)
    assert [o for o, _ in log.scan()] == [o for o in range(200) if o != base + 3]
    assert log.stats.bad_records == 1  # counted once, although seen twice
    log.close()
    log = SegmentLog(tmp_path / "a", segment_bytes=8192, verify=True)
    assert log.stats.bad_records == 1
    log.close()


def test_deleted_or_damaged_index_is_rebuilt(tmp_path):
    fill(tmp_path / "a").close()
    idxs = sorted((tmp_path / "a").glob("*.idx"))
    idxs[0].unlink()
    idxs[1].write_bytes(b"garbage")
    log = SegmentLog(tmp_path / "a", segment_bytes=8192)
    assert log.stats.rebuilt_indexes == 2
    assert [p for _, p in log.scan()] == [payload(i) for i in range(200)]
    assert log.read(40) == payload(40)
    log.close()


def test_missing_middle_segment_is_reported_and_rest_served(tmp_path):
    fill(tmp_path / "a").close()
    victim = segment_files(tmp_path / "a")[2]
    start = int(victim.stem)
    end = int(segment_files(tmp_path / "a")[3].stem)
    victim.unlink()
    log = SegmentLog(tmp_path / "a", segment_bytes=8192)
    assert log.stats.missing_ranges == [(start, end)]
    assert log.read(start) is None and log.read(end) == payload(end)
    assert len(list(log.scan())) == 200 - (end - start)
    assert log.append(b"new") == 200
    log.close()


def test_deliberate_deletion_is_not_reported_as_loss(tmp_path):
    log = fill(tmp_path / "a")
    segs = log.segments()
    assert log.delete_segment(segs[2].base_offset)
    log.close()
    assert list((tmp_path / "a").glob("*.hole"))
    log = SegmentLog(tmp_path / "a", segment_bytes=8192)
    assert log.stats.missing_ranges == []
    assert log.read(segs[2].base_offset) is None
    assert log.delete_before(segs[3].base_offset) == 2  # the gap's left side goes
    log.close()
    assert not list((tmp_path / "a").glob("*.hole"))  # markers dropped once moot


def test_unreadable_segment_is_skipped(tmp_path):
    fill(tmp_path / "a").close()
    victim = segment_files(tmp_path / "a")[1]
    victim.unlink()
    victim.mkdir()  # opening it now fails with EISDIR
    log = SegmentLog(tmp_path / "a", segment_bytes=8192)
    assert log.stats.unreadable_segments == [str(victim)]
    assert log.read(0) == payload(0) and log.read(199) == payload(199)
    log.close()


def test_lost_tail_segment_never_reuses_its_offsets(tmp_path):
    fill(tmp_path / "a").close()
    tail = segment_files(tmp_path / "a")[-1]
    tail.unlink()  # its .idx remains and tells where offsets were
    log = SegmentLog(tmp_path / "a", segment_bytes=8192)
    assert log.next_offset > int(tail.stem)
    log.close()


def test_torn_batch_is_all_or_nothing(tmp_path):
    log = SegmentLog(tmp_path / "a")
    log.append(b"single")
    log.append_batch([b"one" * 100, b"two" * 100, b"three" * 100])
    d = crash_image(log, tmp_path / "crash")
    tail = segment_files(d)[-1]
    os.truncate(tail, tail.stat().st_size - 400)  # the third entry and part of the second
    log = SegmentLog(d)
    assert log.next_offset == 1
    assert log.stats.bad_records == 0 and log.stats.truncated_bytes > 0
    assert [p for _, p in log.scan()] == [b"single"]
    log.close()


def test_corrupt_batch_is_skipped_whole(tmp_path):
    log = SegmentLog(tmp_path / "a")
    log.append(b"single")
    log.append_batch([b"one" * 100, b"two" * 100])
    log.append(b"after")
    d = crash_image(log, tmp_path / "crash")
    tail = segment_files(d)[-1]
    flip(tail, 47 + 100)  # inside the batch frame
    log = SegmentLog(d)
    assert [o for o, _ in log.scan()] == [0, 3]
    assert log.stats.bad_records == 1
    log.close()


def test_garbage_before_the_magic_is_not_mistaken_for_a_frame(tmp_path):
    log = SegmentLog(tmp_path / "a")
    log.append(MAGIC * 50)  # payload full of magic bytes
    log.append(b"tail")
    d = crash_image(log, tmp_path / "crash")
    flip(segment_files(d)[-1], 20)
    log = SegmentLog(d)
    assert [p for _, p in log.scan()] == [b"tail"]
    log.close()
