"""Compaction (Kafka semantics) over MemoryLog and SegmentLog, plus on-disk crash safety."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from smartbroker.store import MemoryLog, SegmentLog
from smartbroker.store.compact import Compactor
from smartbroker.store.log import COMPACT_SUFFIX

SEG = 1024
VALUE = b"x" * 60  # ~110-byte frames: about 9 records per 1 KiB segment


def fill(log, rounds: int = 30, keys: int = 3) -> dict[bytes, int]:
    """Write k3/k4 once, then ``rounds`` updates of k0..k{keys-1}; returns newest offset per key."""
    newest = {}
    for k in (b"k3", b"k4"):
        newest[k] = log.append(k + b"=first" + VALUE, key=k)
    for i in range(rounds):
        k = b"k%d" % (i % keys)
        newest[k] = log.append(k + b"=%d" % i + VALUE, key=k)
    log.flush()
    return newest


def keyed(log) -> dict[bytes, list[int]]:
    out: dict[bytes, list[int]] = {}
    for rec in log.scan_records():
        out.setdefault(rec.key, []).append(rec.offset)
    return out


def closed_offsets(log) -> set[int]:
    active = log.segments()[-1].base_offset
    return {r.offset for r in log.scan_records() if r.offset < active}


def test_newest_record_per_key_survives_with_its_offset(make_log):
    log = make_log(segment_bytes=SEG)
    newest = fill(log)
    before = {r.offset: r for r in log.scan_records()}
    result = Compactor(log).run()
    assert result.records_removed > 0
    survivors = keyed(log)
    active = log.segments()[-1].base_offset
    for key, offs in survivors.items():
        closed = [o for o in offs if o < active]
        # at most one survivor per key in closed segments, and only if nothing newer exists
        assert len(closed) <= 1
        assert all(o == newest[key] for o in closed)
    for off in newest.values():
        assert log.read_record(off) == before[off]  # same offset, same record
    assert survivors[b"k3"] == [newest[b"k3"]] and survivors[b"k4"] == [newest[b"k4"]]
    assert log.next_offset == 32  # offsets never reused or renumbered


def test_removed_offsets_read_as_none_and_scans_skip_them(make_log):
    log = make_log(segment_bytes=SEG)
    fill(log)
    Compactor(log).run()
    kept = [r.offset for r in log.scan_records()]
    assert kept == sorted(kept) and len(kept) < 32
    gaps = sorted(set(range(32)) - set(kept))
    assert gaps
    for off in gaps:
        assert log.read(off) is None
        assert log.read_record(off) is None
    for start in range(33):  # a scan from inside a gap starts at the next survivor
        assert [r.offset for r in log.scan_records(start)] == [o for o in kept if o >= start]


def test_records_without_a_key_are_kept(make_log):
    log = make_log(segment_bytes=SEG)
    plain = [log.append(b"nokey%d" % i + VALUE) for i in range(20)]
    fill(log)
    Compactor(log).run()
    assert [log.read(o) for o in plain] == [b"nokey%d" % i + VALUE for i in range(20)]


def test_active_segment_is_never_rewritten_but_supersedes(make_log):
    log = make_log(segment_bytes=SEG)
    old = log.append(b"old" + VALUE, key=b"a")
    for i in range(12):
        log.append(b"filler%d" % i + VALUE)
    assert log.segments()[-1].base_offset > old  # 'old' sits in a closed segment
    newer = log.append(b"new" + VALUE, key=b"a")
    newest = log.append(b"newest" + VALUE, key=b"a")
    log.flush()
    assert log.segment_of(newer) == log.segments()[-1].base_offset
    Compactor(log).run()
    assert log.read(old) is None  # dropped: a newer record exists in the active segment
    assert log.read(newer) == b"new" + VALUE  # the active segment is left alone
    assert log.read(newest) == b"newest" + VALUE


def test_passes_are_incremental(make_log):
    log = make_log(segment_bytes=SEG)
    compactor = Compactor(log)
    newest = fill(log)
    compactor.run()
    for i in range(40):
        k = b"k%d" % (i % 2)
        newest[k] = log.append(k + b"=again%d" % i + VALUE, key=k)
    log.flush()
    compactor.run()
    survivors = keyed(log)
    active = log.segments()[-1].base_offset
    for key, offs in survivors.items():
        assert [o for o in offs if o < active] in ([], [newest[key]])
    assert compactor.run().records_removed == 0  # nothing left to do


def test_tombstone_is_kept_until_delete_retention_then_dropped(make_log):
    log = make_log(segment_bytes=SEG)
    t0 = 1_000_000
    log.append(b"v1" + VALUE, timestamp_ms=t0, key=b"gone")
    tomb = log.append(b"", timestamp_ms=t0 + 1, key=b"gone")
    kept = log.append(b"v" + VALUE, timestamp_ms=t0 + 2, key=b"stay")
    for i in range(15):
        log.append(b"filler%d" % i + VALUE, timestamp_ms=t0 + 3)
    log.flush()
    compactor = Compactor(log, delete_retention_ms=60_000)
    compactor.run(now_ms=t0 + 30_000)
    assert keyed(log)[b"gone"] == [tomb]  # older value gone, tombstone still readable
    assert log.read(tomb) == b""
    compactor.run(now_ms=t0 + 61_000)
    assert b"gone" not in keyed(log)
    assert log.read(kept) == b"v" + VALUE


def test_segment_left_empty_is_deleted_and_offsets_stay(make_log):
    log = make_log(segment_bytes=SEG)
    for i in range(40):
        log.append(b"v%d" % i + VALUE, key=b"only")
    log.flush()
    segments_before = log.segment_count
    result = Compactor(log).run()
    assert result.segments_deleted == segments_before - 1
    assert [r.offset for r in log.scan_records()] == [o for o in range(40) if o >= log.first_offset]
    assert log.read(39) == b"v39" + VALUE
    assert log.append(b"next", key=b"only") == 40


# -- SegmentLog only: files, restart, crashes, the worker thread --------------------------


def disk_log(path: Path) -> SegmentLog:
    return SegmentLog(path, segment_bytes=SEG)


def test_compacted_log_reopens_with_gaps_and_offsets(tmp_path):
    log = disk_log(tmp_path / "a")
    newest = fill(log)
    Compactor(log).run()
    kept = {r.offset: r for r in log.scan_records()}
    log.close()
    for drop_indexes in (False, True):
        if drop_indexes:  # a lost index is rebuilt by scanning the compacted file
            for idx in (tmp_path / "a").glob("*.idx"):
                idx.unlink()
        log = disk_log(tmp_path / "a")
        assert {r.offset: r for r in log.scan_records()} == kept
        assert log.next_offset == 32 + drop_indexes
        assert log.stats.missing_ranges == []  # compaction gaps are not losses
        assert all(log.read(o) == kept[o].payload for o in newest.values())
        assert log.append(b"after", key=b"k0") == 32 + drop_indexes
        kept[32 + drop_indexes] = log.read_record(32 + drop_indexes)
        log.close()


def test_crash_before_the_rename_leaves_the_old_segment(tmp_path):
    log = disk_log(tmp_path / "a")
    fill(log)
    before = list(log.scan_records())
    compactor = Compactor(log)
    rewrites = compactor._work(compactor._snapshot(), None)  # written + fsynced, not renamed
    assert list((tmp_path / "a").glob("*" + COMPACT_SUFFIX))
    # "crash": drop the log without closing it cleanly
    for seg in log._segs:
        os.close(seg.fd)
    for rw in rewrites:
        if rw.new is not None and hasattr(rw.new, "fd"):
            os.close(rw.new.fd)
    log = disk_log(tmp_path / "a")
    assert list(log.scan_records()) == before  # the old data, whole
    assert not list((tmp_path / "a").glob("*" + COMPACT_SUFFIX))  # leftovers swept
    assert log.stats.bad_records == 0
    Compactor(log).run()  # and compaction simply runs again
    assert len(list(log.scan_records())) < len(before)
    log.close()


def test_crash_after_the_rename_leaves_the_new_segment(tmp_path):
    log = disk_log(tmp_path / "a")
    fill(log)
    Compactor(log).run()
    after = list(log.scan_records())
    log.flush()
    # no clean close: indexes of the active segment unsaved
    for seg in log._segs:
        os.close(seg.fd)
    log = disk_log(tmp_path / "a")
    assert list(log.scan_records()) == after
    log.close()


def test_segment_deleted_during_a_pass_is_left_alone(tmp_path):
    log = disk_log(tmp_path / "a")
    fill(log)
    compactor = Compactor(log)
    rewrites = compactor._work(compactor._snapshot(), None)
    first = log.segments()[0].base_offset
    log.delete_segment(first)  # retention wins the race
    assert any(rw.view.base == first for rw in rewrites)
    result = compactor._install(rewrites)
    assert result.segments_rewritten + result.segments_deleted == len(rewrites) - 1
    assert not list((tmp_path / "a").glob("*" + COMPACT_SUFFIX))
    assert log.segment_of(first) is None
    log.close()


def test_async_pass_runs_in_a_thread_and_appends_go_on(tmp_path):
    log = disk_log(tmp_path / "a")
    fill(log, rounds=300, keys=5)

    async def main() -> None:
        compactor = Compactor(log)
        task = asyncio.ensure_future(compactor.run_async())
        extra = [log.append(b"during%d" % i + VALUE, key=b"k9") for i in range(50)]
        result = await task
        assert result.records_removed > 0
        assert 0 <= result.loop_seconds <= result.total_seconds
        assert log.read(extra[-1]) == b"during49" + VALUE
        await log.sync()
        await compactor.run_async()
        assert [o for o in keyed(log)[b"k9"] if o < log.segments()[-1].base_offset] == []

    asyncio.run(main())
    log.close()


def test_deletion_markers_merge(tmp_path):
    log = disk_log(tmp_path / "a")
    for i in range(60):
        log.append(b"v%d" % i + VALUE, key=b"k%d" % (i % 2))
    log.flush()
    Compactor(log).run()
    assert len(list((tmp_path / "a").glob("*.hole"))) <= 1
    log.close()


def test_memory_log_gaps_do_not_break_timestamps():
    log = MemoryLog(segment_bytes=SEG)
    for i in range(30):
        log.append(b"v%d" % i + VALUE, timestamp_ms=i, key=b"k%d" % (i % 2))
    Compactor(log).run()
    first_kept = next(log.scan_records()).offset
    assert log.offset_for_timestamp(0) == first_kept
    assert log.offset_for_timestamp(29) == 29
