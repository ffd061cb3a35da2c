"""Kafka frames (a RecordBatch v2 kept as it arrived) in both Log implementations: offsets,
reads inside a batch, frames back as bytes, timestamps, recovery and compaction."""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from pathlib import Path

import pytest

from smartbroker.kafka import codec
from smartbroker.queues import kafka_batch
from smartbroker.queues.kafka_mapping import stored_to_record
from smartbroker.store import SegmentLog, StoreUnavailable, segment
from smartbroker.store.compact import Compactor
from smartbroker.store.log import DIRECT_BYTES

TS = 1_700_000_000_000


def batch(n: int, ts: int = TS, key: bytes | None = b"k", tag: bytes = b"v") -> bytes:
    """A producer's batch: base offset 0 and a leader epoch a producer leaves at -1."""
    return codec.write_batch([(ts + i, key, tag + b"%d" % i, [("h", b"x")]) for i in range(n)])


def put(log, data: bytes) -> int:
    (_b, _l, _e, _m, _c, _a, last, _f, max_ts, *_rest) = kafka_batch.HEADER.unpack_from(data)
    return log.append_kafka_batch(data, last + 1, max_ts)


def values(log, start: int = 0) -> list[tuple[int, bytes | None]]:
    return [(r.offset, stored_to_record(r.payload, r.timestamp_ms)[2])
            for r in log.scan_records(start)]


def test_a_batch_takes_count_offsets_among_amqp_records(make_log):
    log = make_log()
    assert log.append(b"amqp0") == 0
    assert put(log, batch(3)) == 1
    assert log.append(b"amqp4") == 4
    assert log.next_offset == 5
    assert [r.offset for r in log.scan_records()] == [0, 1, 2, 3, 4]
    assert [(r.offset, r.payload) for r in log.scan_records(3)][1] == (4, b"amqp4")
    rec = log.read_record(2)
    assert (rec.offset, rec.timestamp_ms, rec.key) == (2, TS + 1, b"k")
    assert stored_to_record(rec.payload, rec.timestamp_ms) == (TS + 1, b"k", b"v1", [("h", b"x")])


def test_frames_give_the_batch_bytes_with_only_the_base_offset_patched(make_log):
    log = make_log()
    log.append(b"amqp0")
    sent = batch(3)
    put(log, sent)
    frames = list(log.scan_frames(2))  # starts at the batch holding offset 2
    assert [(f.base, f.count, f.batch is not None) for f in frames] == [(1, 3, True)]
    stored = frames[0].batch
    assert struct.unpack_from(">q", stored)[0] == 1
    assert struct.unpack_from(">i", stored, 12)[0] == 0  # partitionLeaderEpoch
    assert stored[16:] == sent[16:]  # magic, CRC and everything it covers: as sent
    assert [r.offset for r in codec.read_records(stored)] == [1, 2, 3]  # CRC still valid
    first = list(log.scan_frames(0))
    assert first[0].batch is None and first[0].records[0].payload == b"amqp0"


def test_offset_for_timestamp_looks_inside_a_batch(make_log):
    log = make_log()
    log.append(b"early", timestamp_ms=TS - 100)
    put(log, batch(5, ts=TS))  # record i at TS + i; the frame's time is TS + 4
    assert log.offset_for_timestamp(TS + 2) == 3
    assert log.offset_for_timestamp(TS) == 1
    assert log.offset_for_timestamp(TS + 5) == log.next_offset
    assert log.segments()[-1].max_timestamp_ms == TS + 4  # retention ages by the max


def test_control_batch_occupies_offsets_but_holds_no_record(make_log):
    log = make_log()
    marker = codec.control_batch(7, 0, True, 0, TS)
    put(log, batch(2))
    put(log, marker)
    log.append(b"after")
    assert log.next_offset == 4
    assert [r.offset for r in log.scan_records()] == [0, 1, 3]
    assert log.read_record(2) is None


def test_batches_survive_a_reopen_and_a_torn_one_is_cut(tmp_path: Path):
    path = tmp_path / "log"
    log = SegmentLog(path)
    put(log, batch(3))
    put(log, batch(2, tag=b"w"))
    log.close()
    data = path / f"{0:020d}.log"
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size - 10)  # the second batch's frame is torn
    (path / f"{0:020d}.idx").unlink()
    log = SegmentLog(path)
    assert log.next_offset == 3
    assert values(log) == [(0, b"v0"), (1, b"v1"), (2, b"v2")]
    assert put(log, batch(1)) == 3
    log.close()


def test_a_flipped_bit_inside_a_stored_batch_is_caught_by_its_crc32c(tmp_path: Path):
    path = tmp_path / "log"
    log = SegmentLog(path)
    put(log, batch(3))
    put(log, batch(2, tag=b"w"))
    log.close()
    data = path / f"{0:020d}.log"
    raw = bytearray(data.read_bytes())
    raw[-5] ^= 0x01  # in the second batch's records: outside the frame's own CRC
    data.write_bytes(bytes(raw))
    (path / f"{0:020d}.idx").unlink()
    log = SegmentLog(path)
    assert [r.offset for r in log.scan_records()] == [0, 1, 2]  # the torn tail is cut
    assert log.stats.truncated_bytes > 0
    log.close()


def test_gzip_batches_are_read_and_others_refused_by_the_reader():
    raw = bytearray(batch(2))
    records = kafka_batch.records(bytes(raw))
    assert [(o, v) for o, _t, _k, v, _h in records] == [(0, b"v0"), (1, b"v1")]
    struct.pack_into(">h", raw, 21, 3)  # lz4
    with pytest.raises(kafka_batch.BatchError):
        kafka_batch.records(bytes(raw))


def test_unreadable_records_give_amqp_readers_nothing_not_a_crash(make_log):
    log = make_log()
    bad = bytearray(batch(2))
    struct.pack_into(">i", bad, 57, 3)  # a third record runs off the end (no CRC recheck)
    put(log, bytes(bad))
    log.append(b"next")
    assert [r.offset for r in log.scan_records()] == [2]


def test_compaction_keeps_the_newest_record_per_key_inside_batches(make_log):
    log = make_log(segment_bytes=400)
    put(log, codec.write_batch([(TS, b"a", b"a1", []), (TS, b"b", b"b1", []), (TS, b"a", b"a2", [])]))
    put(log, codec.write_batch([(TS, b"b", b"b2", []), (TS, b"c", b"c1", [])]))
    for i in range(8):  # later segments; the last one stays active
        log.append(b"x" * 100, key=b"z%d" % i)
    log.flush()
    assert len(log.segments()) > 2
    result = Compactor(log).run()
    assert result.records_removed == 2  # a1 and b1
    kept = {r.offset: stored_to_record(r.payload, r.timestamp_ms)[1:3]
            for r in log.scan_records() if r.offset < 5}
    assert kept == {2: (b"a", b"a2"), 3: (b"b", b"b2"), 4: (b"c", b"c1")}
    assert log.next_offset == 13


def big(tag: bytes) -> bytes:
    """A batch over DIRECT_BYTES: written from the request's bytes, not buffered."""
    data = codec.write_batch([(TS, None, tag * 1024, []) for _ in range(80)])
    assert len(data) >= DIRECT_BYTES
    return data


def test_large_batches_written_directly_read_back_and_reopen(tmp_path: Path):
    log = SegmentLog(tmp_path / "log")
    log.append(b"small")
    put(log, batch(2))  # buffered
    assert put(log, big(b"a")) == 3  # the buffer is written first: file order kept
    log.append(b"after")
    put(log, big(b"b"))
    got = [(f.base, f.count) for f in log.scan_frames(0)]
    assert got == [(0, 1), (1, 2), (3, 80), (83, 1), (84, 80)]
    log.close()
    log = SegmentLog(tmp_path / "log")
    assert [(f.base, f.count) for f in log.scan_frames(0)] == got
    assert log.stats.bad_records == 0
    log.close()


def test_a_direct_write_that_fails_is_kept_and_retried(tmp_path: Path, monkeypatch):
    log = SegmentLog(tmp_path / "log")
    real, real_pwrite = segment._pwritev, segment._pwrite
    calls: list[int] = []

    def disk_full(fd: int, parts: list, pos: int) -> int:
        if not calls:  # the first write lands partly, as when the disk fills mid-write
            calls.append(1)
            return real(fd, [bytes(parts[0][:10])], pos)
        raise OSError(errno.ENOSPC, "No space left on device")

    def still_full(fd: int, data: memoryview, pos: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main() -> None:
        monkeypatch.setattr(segment, "_pwritev", disk_full)
        monkeypatch.setattr(segment, "_pwrite", still_full)  # the buffered rest's retry
        assert put(log, big(b"a")) == 0
        with pytest.raises(StoreUnavailable):
            await log.sync()
        with pytest.raises(StoreUnavailable):
            put(log, batch(1))
        monkeypatch.setattr(segment, "_pwritev", real)
        monkeypatch.setattr(segment, "_pwrite", real_pwrite)  # space is back
        await log.sync()
        assert put(log, big(b"b")) == 80
        await log.sync()

    asyncio.run(main())
    log.close()
    log = SegmentLog(tmp_path / "log")
    assert [(f.base, f.count) for f in log.scan_frames(0)] == [(0, 80), (80, 80)]
    assert log.stats.bad_records == 0 and log.stats.truncated_bytes == 0
    log.close()
