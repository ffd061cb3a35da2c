"""Retention (smartbroker; runs every second): whole closed segments go by size or age,
in the background, while publishers and readers keep working."""

from __future__ import annotations

import pytest
from stream_helpers import Reader, publish, pump_until, read_all

from tests.integration.helpers import eventually

pytestmark = pytest.mark.extension

KIB = b"x" * 1024
SEGMENT = 4096


def first_offset(url: str, q: str) -> int:
    """The offset a new reader from ``first`` starts at."""
    r = Reader(url, q, args={"x-stream-offset": "first"}, prefetch=1)
    try:
        pump_until([r], lambda: len(r.got) >= 1)
        return r.got[0].offset
    finally:
        r.close()


def test_max_length_bytes_deletes_old_segments(ch, stream, broker_url):
    q = stream(max_length_bytes=20_000, stream_max_segment_size_bytes=SEGMENT)
    publish(ch, q, [KIB] * 100)  # ~100 KiB
    eventually(lambda: first_offset(broker_url, q) > 0, timeout=8)
    publish(ch, q, [b"after-%d" % i for i in range(5)])  # publishing still works
    start = first_offset(broker_url, q)
    got = read_all(broker_url, q, 105 - start)
    assert [g.offset for g in got] == list(range(start, 105))  # contiguous from the new head
    assert [g.body for g in got[-5:]] == [b"after-%d" % i for i in range(5)]
    kept = sum(len(g.body) for g in got)
    assert 10 * 1024 <= kept <= 20_000 + SEGMENT  # about max-length-bytes, never far above


def test_reader_in_a_deleted_segment_skips_ahead(ch, stream, broker_url, readers):
    q = stream(max_length_bytes=20_000, stream_max_segment_size_bytes=SEGMENT)
    publish(ch, q, [KIB] * 5)
    r = readers(broker_url, q, args={"x-stream-offset": "first"}, prefetch=3, ack=False)
    pump_until([r], lambda: len(r.got) == 3)  # holds offsets 0..2, cursor at 3
    publish(ch, q, [KIB] * 95)
    eventually(lambda: first_offset(broker_url, q) > 10, timeout=8)
    for g in list(r.got):
        r.ack_msg(g)
    r.ack = True
    pump_until([r], lambda: r.got[-1].offset == 99, what="reader reached the end")
    offs = r.offsets
    assert offs == sorted(set(offs))  # strictly increasing: no duplicates, no going back
    assert offs[3] > 3  # skipped what retention removed
    publish(ch, q, [b"live"])
    pump_until([r], lambda: r.bodies[-1] == "live")
    assert r.got[-1].offset == 100


def test_max_age_deletes_old_segments(ch, stream, broker_url):
    q = stream(max_age="1s", stream_max_segment_size_bytes=SEGMENT)
    publish(ch, q, [KIB] * 30)
    eventually(lambda: first_offset(broker_url, q) > 0, timeout=8)
    publish(ch, q, [b"fresh-%d" % i for i in range(3)])
    start = first_offset(broker_url, q)
    assert start >= 24  # every closed segment of the first 30 is older than 1 s
    got = read_all(broker_url, q, 33 - start)
    assert [g.offset for g in got] == list(range(start, 33))
    assert [g.body for g in got[-3:]] == [b"fresh-%d" % i for i in range(3)]


def test_group_behind_retention_resumes_at_the_new_head(ch, stream, broker_url, uid, readers):
    q = stream(max_length_bytes=20_000, stream_max_segment_size_bytes=SEGMENT)
    g = f"g-{uid}"
    publish(ch, q, [KIB] * 5)
    m = readers(broker_url, q, args={"x-consumer-group": g, "x-stream-offset": "first"},
                prefetch=10, ack=2)
    pump_until([m], lambda: len(m.got) == 5)
    m.close()  # committed offset 2
    publish(ch, q, [KIB] * 95)
    eventually(lambda: first_offset(broker_url, q) > 2, timeout=8)
    head = first_offset(broker_url, q)
    m2 = readers(broker_url, q, args={"x-consumer-group": g}, prefetch=200)
    pump_until([m2], lambda: m2.got and m2.got[-1].offset == 99)
    assert m2.offsets[0] >= head and m2.offsets == list(range(m2.offsets[0], 100))
