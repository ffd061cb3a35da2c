"""Where a stream delivery comes from (the in-memory tail, a shared chunk of recent reads,
or the log) never changes what a reader gets: the same offsets, bodies and header bytes."""

from __future__ import annotations

import asyncio

import pytest

from smartbroker.message import Message
from smartbroker.protocol import codec
from smartbroker.queues import stream_delivery, stream_tail
from smartbroker.queues.base import Storage
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_args import StreamSettings
from smartbroker.queues.stream_records import decode_record, delivery_message, encode_record
from smartbroker.queues.stream_tail import CHUNK, TRIM, Chunks, Tail
from tests.unit.queues.test_stream import Reader, attach, fill, msg


def with_headers(body: str) -> Message:
    """A message whose header already has a table (the splice appends to it)."""
    m = Message.build("ex", "rk", body.encode())
    header = codec.add_headers(m.header_payload, m.flags, codec.table_entry_long(b"\x01a", 7))
    return Message("ex", "rk", m.exchange_rk_ss, header, m.body)


@pytest.mark.parametrize("make", [lambda i: msg(f"m{i}"), lambda i: with_headers(f"h{i}")])
def test_a_tail_message_is_byte_for_byte_what_reading_the_record_back_gives(make):
    tail = Tail(3)
    for offset in range(10, 15):
        tail.add(offset, make(offset))
    for offset in range(10, 15):
        got = tail.get(offset)
        want = decode_record(encode_record(make(offset)), 3, offset)
        assert (got.header_payload, got.body, got.exchange_rk_ss, got.flags) == \
            (want.header_payload, want.body, want.exchange_rk_ss, want.flags)
        assert got.headers["x-stream-offset"] == offset
        assert got.headers["x-stream-partition"] == 3
    assert tail.get(12) is tail.get(12)  # built once, shared by every reader
    assert tail.run(10, 15) == [tail.get(offset) for offset in range(10, 15)]  # the same objects


def test_an_append_made_elsewhere_breaks_the_run_and_the_next_publish_starts_anew():
    tail = Tail(0)
    tail.add(0, msg("a"))
    tail.add(1, msg("b"))
    tail.add(5, msg("f"))  # offsets 2-4 were a Kafka batch: not here
    assert (tail.base, tail.end) == (5, 6)
    assert tail.get(5).body == b"f"


def test_the_tail_is_bounded_and_keeps_the_newest():
    tail = Tail(0, max_bytes=10 * 100)
    for offset in range(50):
        tail.add(offset, msg(b"x" * 100))
    assert tail.nbytes <= 1000
    assert tail.end == 50 and tail.base > 0
    assert tail.nbytes == sum(len(m.body) for m in tail.sources)
    tail.clear()
    assert (tail.sources, tail.nbytes) == ([], 0)


def test_chunks_are_aligned_bounded_and_miss_past_their_end():
    chunks = Chunks()
    chunk = chunks.put(CHUNK, [msg("a"), None])
    assert chunks.get(CHUNK + 1) is chunk and chunk.get(CHUNK + 1) is None
    assert chunks.get(CHUNK + 2) is None  # not read yet: a miss, read the log
    for i in range(2, 2 + stream_tail.MAX_CHUNKS):
        chunks.put(i * CHUNK, [msg("b")])
    assert chunks.get(CHUNK) is None  # the oldest went first


def deliveries(reader: Reader) -> list[tuple[int, bytes, bytes]]:
    return [(e.offset, e.message.body, e.message.header_payload) for e in reader.got]


def test_a_reader_behind_the_tail_reads_chunks_and_gets_the_same_as_a_live_one(monkeypatch):
    monkeypatch.setattr(stream_tail, "PARTITION_BYTES", 64)  # a tail of a few records
    monkeypatch.setattr(stream_tail, "STREAM_BYTES", 64)
    q = StreamQueue("s", "/")
    live = attach(q, Reader(credit=10_000))
    n = CHUNK * 2 + 10
    fill(q, n)
    assert q._tails[0].base > 0  # most of it is no longer in the tail
    late = attach(q, Reader(credit=10_000))  # replays from the log, chunk by chunk
    assert deliveries(late) == deliveries(live)
    assert [o for o, _, _ in deliveries(late)] == list(range(n))
    again = attach(q, Reader(credit=10_000))
    # a third reader of the same offsets gets the very messages the chunks hold
    shared = [a.message is b.message for a, b in zip(late.got, again.got, strict=True)]
    assert shared[:CHUNK] == [True] * CHUNK


def test_single_acks_read_ahead_by_chunk_not_by_record(monkeypatch, tmp_path):
    monkeypatch.setattr(stream_tail, "PARTITION_BYTES", 64)
    monkeypatch.setattr(stream_tail, "STREAM_BYTES", 64)
    q = StreamQueue("s", "/", storage=Storage(store=None, data_dir=tmp_path, fsync="never"))
    fill(q, 300)
    reads = []
    scan = q.logs[0].scan_records
    monkeypatch.setattr(q.logs[0], "scan_records", lambda start: reads.append(start) or scan(start))
    r = attach(q, Reader(credit=1))
    for _ in range(299):
        r.settle(q, 1)
        r.got.clear()
    assert r.unacked == 1 and q.readers[r].cursors[0] == 300
    assert reads == [0, CHUNK]  # two chunk reads for 300 deliveries, credit one at a time


def test_compacted_streams_and_cursors_below_the_log_start_read_the_log():
    q = StreamQueue("s", "/", settings=StreamSettings(segment_bytes=4096, max_length_bytes=8192))
    r = attach(q, Reader(credit=5))
    fill(q, 400)
    assert q.enforce_retention() > 0
    first = q.logs[0].first_offset
    assert first > 5
    r.settle(q, 5)  # its cursor (5) now lies below the log start: on from there
    assert r.offsets[5] == first


def test_publishes_and_acks_in_one_loop_pass_dispatch_once():
    async def main() -> tuple[int, list[int]]:
        q = StreamQueue("s", "/")
        r = attach(q, Reader(credit=100))
        calls = []
        original = q.dispatch_now
        q.dispatch_now = lambda: calls.append(1) or original()  # type: ignore[method-assign]
        fill(q, 20)
        assert r.offsets == []  # nothing yet: the pass is still running
        await asyncio.sleep(0)
        return len(calls), r.offsets

    calls, offsets = asyncio.run(main())
    assert calls == 1 and offsets == list(range(20))


@pytest.mark.parametrize("make", [lambda i: msg(f"m{i}"), lambda i: with_headers(f"h{i}")])
def test_the_remembered_header_cut_splices_as_codec_add_headers_does(make):
    m = make(1)
    for offset, partition in [(0, 0), (5, 3), (2**40, 7), (6, 3)]:
        got = delivery_message(m.route, m.header_payload, m.flags, m.body, partition, offset)
        extra = codec.table_entry_long(codec.shortstr("x-stream-offset"), offset) \
            + codec.table_entry_int(codec.shortstr("x-stream-partition"), partition)
        assert got.header_payload == codec.add_headers(m.header_payload, m.flags, extra)


class ChannelLikeReader(Reader):
    """A reader that, like a channel's consumer, tells its credit as a count."""

    def credit_left(self) -> int:
        return max(self.credit_limit - self.unacked, 0)

    def __init__(self, credit: int) -> None:
        super().__init__(credit=credit)
        self.credit_limit = credit


def test_a_run_delivered_by_credit_count_is_what_per_record_checks_deliver(monkeypatch):
    monkeypatch.setattr(stream_tail, "PARTITION_BYTES", 64)
    monkeypatch.setattr(stream_tail, "STREAM_BYTES", 64)
    q = StreamQueue("s", "/")
    fill(q, CHUNK + 40)
    plain, counted = attach(q, Reader(credit=7)), attach(q, ChannelLikeReader(7))
    while len(plain.got) < CHUNK + 40:
        assert counted.unacked == plain.unacked == 7
        for r in (plain, counted):
            r.settle(q, 7)
    assert deliveries(counted) == deliveries(plain)
    assert [e.offset for e in counted.got] == list(range(CHUNK + 40))


def test_chunks_of_large_messages_stop_early_and_continue(monkeypatch):
    monkeypatch.setattr(stream_tail, "PARTITION_BYTES", 64)
    monkeypatch.setattr(stream_tail, "STREAM_BYTES", 64)
    monkeypatch.setattr(stream_tail, "CHUNK_BYTES", 10_000)
    monkeypatch.setattr(stream_delivery, "CHUNK_BYTES", 10_000)
    q = StreamQueue("s", "/")
    for i in range(40):
        q.publish(msg(bytes([i]) * 3000))
    r = attach(q, Reader(credit=3))
    while len(r.got) < 40:
        r.settle(q, 3)
    assert [e.message.body[:1] for e in r.got] == [bytes([i]) for i in range(40)]
    chunks = list(q._chunks[0].chunks.values())
    assert len(chunks) > 1 and all(len(c.messages) <= 5 for c in chunks)  # ~10 kB each
    assert chunks[0].base == 0 and all(a.end == b.base for a, b in zip(chunks, chunks[1:], strict=False))


def test_a_run_builds_what_no_reader_built_and_shares_the_rest():
    tail = Tail(0)
    for offset in range(5):
        tail.add(offset, msg(f"m{offset}"))
    seen = tail.get(2)
    run = tail.run(1, 4)
    assert run[1] is seen and [m.headers["x-stream-offset"] for m in run] == [1, 2, 3]
    assert tail.built[1:4] == run and tail.built[0] is None and tail.built[4] is None


def test_what_every_reader_read_leaves_the_tail_and_a_later_reader_reads_it_from_the_log():
    q = StreamQueue("s", "/")
    first = attach(q, ChannelLikeReader(10_000))
    fill(q, TRIM + 10)
    tail = q._tails[0]
    assert (tail.base, len(tail.sources), tail.nbytes) == (TRIM, 10, 10 * len(b"m300"))
    second = attach(q, ChannelLikeReader(10_000))  # from the log, then the tail
    assert deliveries(second) == deliveries(first)
    slow = attach(q, ChannelLikeReader(TRIM // 2))
    fill(q, TRIM + 10, start=TRIM + 10)  # nothing is dropped that a reader has not read
    assert tail.base == TRIM and deliveries(second) == deliveries(first)
    assert [e.offset for e in second.got] == list(range(2 * TRIM + 20))
    while len(slow.got) < 2 * TRIM + 20:
        slow.settle(q, TRIM // 2)
        assert tail.base <= min(slow.offsets[-1] + 1, 2 * TRIM + 20)
    assert tail.base == 2 * TRIM and deliveries(slow) == deliveries(first)
