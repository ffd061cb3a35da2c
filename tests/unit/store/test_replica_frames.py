"""store/replica.py on real files: a follower's log built from a leader's raw frames is
the leader's log (same records at the same offsets, after a restart too); truncation;
epoch checkpoints."""

from __future__ import annotations

import asyncio

import pytest

from smartbroker.store.log import SegmentLog
from smartbroker.store.replica import (
    BadChunk,
    Chunk,
    Cursor,
    EpochCheckpoints,
    append_chunk,
    read_chunk,
    reset,
    truncate,
)


def records(log: SegmentLog) -> list[tuple[int, bytes | None, bytes]]:
    return [(r.offset, r.key, r.payload) for r in log.scan_records(0)]


def ship(leader: SegmentLog, follower: SegmentLog, cursor: Cursor, **kw: object) -> int:
    """Chunks until the follower holds everything; how many chunks it took."""
    n = 0
    while True:
        chunk = read_chunk(leader, cursor, **kw)  # type: ignore[arg-type]
        if chunk.start == chunk.end:
            return n
        append_chunk(follower, chunk)
        n += 1


def test_follower_log_equals_leader_log(tmp_path) -> None:
    leader = SegmentLog(tmp_path / "l", segment_bytes=4096)
    follower = SegmentLog(tmp_path / "f", segment_bytes=4096)
    cursor = Cursor(0)
    for i in range(50):
        leader.append(b"x" * 100 + str(i).encode(), key=b"k" if i % 3 else None)
    leader.append_batch([b"a", b"b", b"c"])
    for i in range(5):
        leader.append_grouped(b"g%d" % i)  # grouped, not yet framed: read seals them
    assert ship(leader, follower, cursor) == 1  # one chunk over several segments
    assert follower.segment_count == leader.segment_count > 1
    assert follower.next_offset == leader.next_offset == 58
    assert records(follower) == records(leader)
    # the sequential case: one slice of what was appended since
    leader.append(b"later-1")
    leader.append(b"later-2")
    chunk = read_chunk(leader, cursor)
    assert (chunk.start, chunk.end) == (58, 60)
    append_chunk(follower, chunk)
    asyncio.run(follower.sync())
    assert follower.durable_offset == 60
    follower.close()
    again = SegmentLog(tmp_path / "f", segment_bytes=4096)
    assert records(again) == records(leader)
    again.close()
    leader.close()


def test_scan_from_the_middle_and_limit(tmp_path) -> None:
    leader = SegmentLog(tmp_path / "l")
    for i in range(20):
        leader.append(b"r%d" % i)
    follower = SegmentLog(tmp_path / "f")
    follower.append(b"r0")
    follower.append(b"r1")
    cursor = Cursor(2)
    chunk = read_chunk(leader, cursor, limit=7)  # an epoch boundary at 7
    assert (chunk.start, chunk.end) == (2, 7)
    append_chunk(follower, chunk)
    chunk = read_chunk(leader, cursor, max_bytes=100)  # small chunks: a few frames each
    assert chunk.start == 7 and 7 < chunk.end < 20
    append_chunk(follower, chunk)
    ship(leader, follower, cursor)
    assert records(follower) == records(leader)


def test_bad_chunks_are_refused(tmp_path) -> None:
    leader = SegmentLog(tmp_path / "l")
    for i in range(3):
        leader.append(b"r%d" % i)
    follower = SegmentLog(tmp_path / "f")
    chunk = read_chunk(leader, Cursor(0))
    with pytest.raises(BadChunk) as err:
        append_chunk(follower, Chunk(1, 3, chunk.data))
    assert err.value.next_offset == 0
    broken = bytearray(chunk.data)
    broken[-1] ^= 0xFF  # the last frame's payload: its CRC fails
    with pytest.raises(BadChunk) as err:
        append_chunk(follower, Chunk(0, 3, bytes(broken)))
    assert err.value.next_offset == 2  # the two good frames are in
    assert [p for _o, _k, p in records(follower)] == [b"r0", b"r1"]


def test_truncate_cuts_and_offsets_are_reused(tmp_path) -> None:
    async def run() -> None:
        log = SegmentLog(tmp_path / "t", segment_bytes=2048)
        for i in range(40):
            log.append(b"y" * 60 + b"%d" % i)
        log.append_batch([b"b1", b"b2", b"b3"])  # offsets 40..42, one frame
        await log.sync()
        assert await truncate(log, 41) == 40  # the batch goes whole
        assert log.next_offset == 40 and log.durable_offset == 40
        assert await truncate(log, 10) == 10
        assert log.next_offset == 10 and len(records(log)) == 10
        assert log.append(b"new") == 10
        await log.sync()
        log.close()
        again = SegmentLog(tmp_path / "t", segment_bytes=2048)
        assert again.next_offset == 11 and records(again)[-1] == (10, None, b"new")
        assert await reset(again, 500) == 500
        assert again.next_offset == 500 and records(again) == []
        again.close()
        assert SegmentLog(tmp_path / "t").next_offset == 500

    asyncio.run(run())


def test_epoch_checkpoints(tmp_path) -> None:
    cp = EpochCheckpoints(str(tmp_path))
    assert cp.latest == 0 and cp.end_for(0, 7) == (0, 7)
    cp.assign(5, 0)
    cp.assign(9, 100)
    cp.assign(9, 150)  # not newer: ignored
    cp.assign(12, 180)
    assert cp.end_for(12, 200) == (12, 200)
    assert cp.end_for(10, 200) == (9, 180)  # the largest epoch <= 10 ended at 180
    assert cp.end_for(5, 200) == (5, 100)
    assert cp.end_for(4, 200) == (-1, -1)
    assert cp.epoch_at(120) == (9, 180) and cp.epoch_at(190) == (12, None)
    assert EpochCheckpoints(str(tmp_path)).entries == [(5, 0), (9, 100), (12, 180)]
    cp.truncate_from(150)
    assert cp.entries == [(5, 0), (9, 100)]
    cp.assign(20, 120)  # a new leader at 120: what started later is gone
    assert EpochCheckpoints(str(tmp_path)).entries == [(5, 0), (9, 100), (20, 120)]
    (tmp_path / "leader-epoch-checkpoint").write_text("garbage")
    assert EpochCheckpoints(str(tmp_path)).entries == []


def test_kafka_batches_are_copied_as_stored(tmp_path) -> None:
    from smartbroker.kafka import codec
    from smartbroker.queues import kafka_batch

    def put(lg: SegmentLog, n: int, size: int = 10) -> None:
        data = codec.write_batch([(1_700_000_000_000 + i, b"k", b"v" * size, [])
                                  for i in range(n)])
        (_b, _l, _e, _m, _c, _a, last, _f, max_ts, *_r) = kafka_batch.HEADER.unpack_from(data)
        lg.append_kafka_batch(data, last + 1, max_ts)

    leader = SegmentLog(tmp_path / "l")
    follower = SegmentLog(tmp_path / "f")
    put(leader, 5)
    leader.append(b"amqp")
    put(leader, 3, size=70_000)  # past DIRECT_BYTES: written from the request's bytes
    put(leader, 1)
    assert ship(leader, follower, Cursor(0)) == 1

    def frames(lg: SegmentLog) -> list[tuple[int, int, bytes | None]]:
        return [(f.base, f.count, f.batch) for f in lg.scan_frames(0)]

    assert frames(follower) == frames(leader) and follower.next_offset == 10


def test_single_frames_of_either_crc_are_checked(tmp_path) -> None:
    """The follower's inline check of one-record frames: CRC-32C frames (written now) and
    zlib-CRC ones (written before) are taken; a flipped flags byte is refused."""
    import zlib

    from smartbroker.store import record

    head = record.SINGLE.pack(0, 1, 0, 1, -1, 3)
    legacy = record.PREFIX.pack(record.MAGIC, len(head) + 3, zlib.crc32(head + b"old")) \
        + head + b"old"
    follower = SegmentLog(tmp_path / "f")
    append_chunk(follower, Chunk(0, 1, legacy))
    leader = SegmentLog(tmp_path / "l")
    leader.append(b"old")
    leader.append(b"new")
    second = read_chunk(leader, Cursor(1)).data
    flipped = bytearray(second)
    flipped[record.PREFIX_SIZE + 16] ^= record.FLAG_CRC32C  # claims zlib's CRC
    with pytest.raises(BadChunk):
        append_chunk(follower, Chunk(1, 2, bytes(flipped)))
    append_chunk(follower, Chunk(1, 2, second))
    assert [p for _o, _k, p in records(follower)] == [b"old", b"new"]
