"""The Log contract, run against MemoryLog and SegmentLog alike."""

from __future__ import annotations

import asyncio

from smartbroker.store import Record


def test_offsets_are_dense_from_zero_and_read_back(make_log):
    log = make_log()
    assert (log.first_offset, log.next_offset) == (0, 0)
    offs = [log.append(b"m%d" % i) for i in range(10)]
    assert offs == list(range(10))
    assert log.next_offset == 10
    assert [log.read(i) for i in range(10)] == [b"m%d" % i for i in range(10)]


def test_read_outside_the_log_is_none(make_log):
    log = make_log()
    log.append(b"a")
    assert log.read(-1) is None
    assert log.read(1) is None
    assert log.read(10**9) is None


def test_key_timestamp_and_empty_payload_round_trip(make_log):
    log = make_log()
    log.append(b"", timestamp_ms=1234, key=b"k1")
    log.append(b"v", timestamp_ms=99)
    assert log.read_record(0) == Record(0, 1234, b"k1", b"")
    assert log.read_record(1) == Record(1, 99, None, b"v")


def test_scan_in_order_from_any_start(make_log):
    log = make_log(segment_bytes=2048)
    for i in range(50):
        log.append(bytes([i]) * 100)
    assert [o for o, _ in log.scan()] == list(range(50))
    got = list(log.scan(37))
    assert [o for o, _ in got] == list(range(37, 50))
    assert got[0][1] == bytes([37]) * 100
    assert list(log.scan(50)) == []


def test_batch_gets_contiguous_offsets(make_log):
    log = make_log()
    log.append(b"before")
    offs = log.append_batch([b"a", b"b", b"c"], timestamp_ms=5, keys=[b"x", None, b"z"])
    assert offs == [1, 2, 3]
    assert log.append_batch([]) == []
    assert log.append(b"after") == 4
    assert log.read_record(3) == Record(3, 5, b"z", b"c")
    assert [p for _, p in log.scan()] == [b"before", b"a", b"b", b"c", b"after"]


def test_segments_roll_at_size_and_report_membership(make_log):
    log = make_log(segment_bytes=4096)
    for i in range(40):
        log.append(b"%04d" % i * 64)  # 256 bytes + header
    segs = log.segments()
    assert log.segment_count == len(segs) > 2
    assert segs[0].base_offset == 0 and segs[-1].active
    assert all(a.next_offset == b.base_offset for a, b in zip(segs, segs[1:], strict=False))
    assert all(s.size_bytes <= 4096 for s in segs)
    for s in segs:
        assert log.segment_of(s.base_offset) == s.base_offset
        assert log.segment_of(s.next_offset - 1) == s.base_offset
    assert log.segment_of(40) is None
    assert log.size_bytes == sum(s.size_bytes for s in segs)


def test_oversized_record_gets_its_own_segment(make_log):
    log = make_log(segment_bytes=1024)
    log.append(b"small")
    big = log.append(b"B" * 5000)
    log.append(b"next")
    assert log.read(big) == b"B" * 5000
    assert log.segment_of(big) == big
    assert log.segment_of(big + 1) == big + 1


def test_delete_middle_segment_leaves_a_gap(make_log):
    log = make_log(segment_bytes=4096)
    for i in range(40):
        log.append(b"%04d" % i * 64)
    victim = log.segments()[1]
    assert log.delete_segment(victim.base_offset)
    assert not log.delete_segment(victim.base_offset)
    gone = range(victim.base_offset, victim.next_offset)
    assert all(log.read(o) is None for o in gone)
    assert [o for o, _ in log.scan()] == [o for o in range(40) if o not in gone]
    assert log.read(0) == b"0000" * 64


def test_delete_before_drops_whole_segments_only(make_log):
    log = make_log(segment_bytes=4096)
    for i in range(40):
        log.append(b"%04d" % i * 64)
    segs = log.segments()
    cut = segs[2].base_offset + 1  # inside the third segment
    assert log.delete_before(cut) == 2
    assert log.first_offset == segs[2].base_offset
    assert log.read(segs[2].base_offset) is not None
    assert log.read(0) is None
    before = log.segment_count
    assert log.delete_before(10**9) == before - 1
    assert log.segment_count == 1
    assert log.next_offset == 40  # the active segment survives: offsets are not reused
    assert log.append(b"x") == 40


def test_deleting_the_active_segment_rolls_and_keeps_offsets(make_log):
    log = make_log()
    log.append(b"a")
    log.append(b"b")
    assert log.delete_segment(0)
    assert log.read(0) is None and log.read(1) is None
    assert log.next_offset == 2 and log.first_offset == 2
    assert log.append(b"c") == 2
    assert not log.delete_segment(5)


def test_offset_for_timestamp(make_log):
    log = make_log(segment_bytes=2048)
    for i in range(60):
        log.append(b"p" * 100, timestamp_ms=1000 + 10 * i)
    assert log.offset_for_timestamp(0) == 0
    assert log.offset_for_timestamp(1000) == 0
    assert log.offset_for_timestamp(1001) == 1
    assert log.offset_for_timestamp(1000 + 10 * 45) == 45
    assert log.offset_for_timestamp(10**12) == 60


def test_sync_makes_everything_durable(make_log):
    log = make_log()

    async def main() -> None:
        for i in range(100):
            log.append(b"%d" % i)
        await log.sync()
        assert log.durable_offset >= 100
        off = log.append(b"more")
        await log.wait_durable(off)
        assert log.durable_offset > off

    asyncio.run(main())


def test_concurrent_publishers_all_get_their_confirm(make_log):
    log = make_log()

    async def publisher(n: int) -> list[int]:
        done = []
        for i in range(20):
            off = log.append(b"%d-%d" % (n, i))
            await log.wait_durable(off)
            assert log.durable_offset > off
            done.append(off)
        return done

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(publisher(n) for n in range(10)))

    results = asyncio.run(main())
    assert sorted(o for r in results for o in r) == list(range(200))
    assert log.read(199) is not None
