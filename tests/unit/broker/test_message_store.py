"""The shared message store: enqueue/deliver/forget records and what recovery makes of
them, for marks written one per loop pass (``d``/``a``) and for older single-offset logs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smartbroker.broker.durable import MessageStore, encode_mark
from smartbroker.message import Message


def message(body: bytes) -> Message:
    return Message.build("", "q", body)


def recovered(directory: Path) -> dict[tuple[str, str], list[tuple[int, bool]]]:
    store = MessageStore(directory)
    try:
        return {key: [(e.offset, e.redelivered) for e in entries]
                for key, entries in store.recover().items()}
    finally:
        store.close()


def test_marks_made_in_one_loop_pass_are_one_record_per_queue_and_recover(tmp_path: Path):
    store = MessageStore(tmp_path)

    async def one_pass() -> list[int]:
        offsets = [store.enqueue("/", ("q1", "q2"), message(b"m%d" % i)) for i in range(5)]
        for off in offsets[:3]:
            store.delivered("/", "q1", off)
        for off in offsets[:2]:
            store.forget("/", "q1", off)
        store.forget("/", "q2", offsets[4])
        records_before = store.log.next_offset
        store.write_out_now()
        # 5 enqueues, then d(q1), a(q1), a(q2): three mark records, not six
        assert store.log.next_offset - records_before == 3
        return offsets

    offsets = asyncio.run(one_pass())
    store.close()
    got = recovered(tmp_path)
    assert got[("/", "q1")] == [(offsets[2], True), (offsets[3], False), (offsets[4], False)]
    assert got[("/", "q2")] == [(off, False) for off in offsets[:4]]


def test_marks_outside_an_event_loop_are_written_at_once(tmp_path: Path):
    store = MessageStore(tmp_path)
    off = store.enqueue("/", ("q",), message(b"x"))
    before = store.log.next_offset
    store.forget("/", "q", off)
    assert store.log.next_offset == before + 1
    store.close()
    assert recovered(tmp_path) == {}


def test_single_offset_marks_of_older_logs_still_recover(tmp_path: Path):
    store = MessageStore(tmp_path)
    first = store.enqueue("/", ("q",), message(b"a"))
    second = store.enqueue("/", ("q",), message(b"b"))
    store.log.append(encode_mark(b"D", second, "/", "q"))
    store.log.append(encode_mark(b"A", first, "/", "q"))
    store.close()
    assert recovered(tmp_path) == {("/", "q"): [(second, True)]}


def test_segments_whose_enqueues_are_all_forgotten_are_deleted_from_the_head(tmp_path: Path):
    store = MessageStore(tmp_path, segment_bytes=4096)

    async def fill_and_ack() -> tuple[list[int], int]:
        offsets = [store.enqueue("/", ("q",), message(b"x" * 500)) for _ in range(40)]
        store.write_out_now()
        segments_before = len(store.log.segments())
        for off in offsets[:-1]:  # the last message stays queued
            store.forget("/", "q", off)
        store.write_out_now()
        return offsets, segments_before

    offsets, before = asyncio.run(fill_and_ack())
    after = store.log.segments()
    assert before >= 5
    assert len(after) <= 2  # the segment holding the queued message, and the active one
    assert after[0].base_offset <= offsets[-1]
    store.close()
    assert recovered(tmp_path) == {("/", "q"): [(offsets[-1], False)]}


def test_a_message_whose_properties_cannot_be_read_is_kept_and_counted(tmp_path: Path):
    """Recovery never fails on one message: properties damaged on disk (here a priority
    flag with no priority byte, an expiration that overruns the header) cost the message
    its priority and TTL, not its place in the queue, and are counted for the log."""
    import struct

    store = MessageStore(tmp_path)
    good = store.enqueue("/", ("q",), message(b"good"))
    for flags, values in ((0x0800, b""), (0x0100, b"\x09abc")):
        header = struct.pack("!HHQH", 60, 0, 7, flags) + values
        store.enqueue("/", ("q",), Message("", "q", b"\x00\x01q", header, b"damaged"))
    store.close()
    store = MessageStore(tmp_path)
    try:
        entries = store.recover()[("/", "q")]
        assert [e.offset for e in entries][0] == good and len(entries) == 3
        assert all(e.priority == 0 and e.expiration_ms is None for e in entries[1:])
        assert store.undecodable_properties == 2
    finally:
        store.close()
