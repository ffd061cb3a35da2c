"""KafkaConnection's receive buffers (get_buffer / buffer_updated, as asyncio's
BufferedProtocol drives them): small frames many to a read, a large frame in a buffer of
its own read in pieces, frames across every boundary, the scratch buffer reused without a
decoded request changing, and the size limits applied before anything is allocated."""

from __future__ import annotations

import random
import struct

import pytest
from kafka.protocol import producer

from smartbroker.kafka.handlers import SUPPORTED
from smartbroker.kafka.protocol import LARGE, NEED_DATA, KafkaConnection, KafkaProtocolError

P = producer.ProduceRequest


def produce_frame(corr: int, records: bytes) -> bytes:
    body = P(version=9, transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[
        P.TopicProduceData(name="t", partition_data=[
            P.TopicProduceData.PartitionProduceData(index=0, records=records)])])
    body.with_header(correlation_id=corr, client_id="c")
    return bytes(body.encode(header=True, framed=True))


def feed(conn: KafkaConnection, data: bytes, reads: list[int]) -> list[tuple[int, bytes]]:
    """Read ``data`` in pieces of at most the sizes in ``reads`` (cycled), parsing after
    each as the listener does; (correlation id, records) of every request."""
    got = []
    pos, i = 0, 0
    while pos < len(data):
        room = conn.get_buffer(-1)
        assert len(room) > 0
        n = min(len(room), reads[i % len(reads)], len(data) - pos)
        room[:n] = data[pos:pos + n]
        conn.buffer_updated(n)
        pos += n
        i += 1
        while (request := conn.next_request()) is not NEED_DATA:
            got.append((request.header.correlation_id,
                        request.body.topic_data[0].partition_data[0].records))
    return got


@pytest.mark.parametrize("reads", [[1 << 20], [7], [4096, 3, 65536], [100_000, 1]])
def test_frames_of_every_size_across_read_boundaries(reads: list[int]) -> None:
    rnd = random.Random(14)
    sizes = [10, LARGE - 100, LARGE + 100, 300_000, 5, 2_100_000, 1_000_000, 50, 2_000_000]
    records = [rnd.randbytes(n) for n in sizes]
    data = b"".join(produce_frame(i, r) for i, r in enumerate(records))
    conn = KafkaConnection(SUPPORTED)
    assert feed(conn, data, reads) == list(enumerate(records))
    assert conn.get_buffer(-1) and conn.next_request() is NEED_DATA


def test_decoded_requests_keep_their_bytes_when_buffers_are_reused() -> None:
    conn = KafkaConnection(SUPPORTED)
    first = feed(conn, produce_frame(1, b"a" * 200_000) + produce_frame(2, b"s" * 10), [1 << 20])
    feed(conn, produce_frame(3, b"b" * 200_000) + produce_frame(4, b"t" * 10), [1 << 20])
    assert first == [(1, b"a" * 200_000), (2, b"s" * 10)]


def test_large_frame_read_whole_waits_behind_nothing() -> None:
    """A large frame completed while the reader is not parsing: the scratch takes the
    frames after it, and they come out in order."""
    conn = KafkaConnection(SUPPORTED)
    data = produce_frame(1, b"L" * 100_000) + produce_frame(2, b"s")
    pos = 0
    while pos < len(data):  # read all without parsing
        room = conn.get_buffer(-1)
        n = min(len(room), len(data) - pos)
        room[:n] = data[pos:pos + n]
        conn.buffer_updated(n)
        pos += n
    assert [conn.next_request().header.correlation_id for _ in range(2)] == [1, 2]


def test_limits_before_any_allocation() -> None:
    conn = KafkaConnection(SUPPORTED, max_request_size=100_000)
    room = conn.get_buffer(-1)
    room[:4] = struct.pack(">i", 100_001)
    conn.buffer_updated(4)
    assert len(conn.get_buffer(-1)) < 1 << 20  # no buffer of the claimed size
    with pytest.raises(KafkaProtocolError, match="100001 bytes"):
        conn.next_request()
    pre_auth = KafkaConnection(SUPPORTED)
    pre_auth.pre_auth = frozenset({18})
    pre_auth.receive_data(struct.pack(">i", 600 * 1024))
    with pytest.raises(KafkaProtocolError, match="over the limit of 524288"):
        pre_auth.next_request()
