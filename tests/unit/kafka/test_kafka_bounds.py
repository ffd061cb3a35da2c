"""Bounds a hostile Kafka client meets, each found by the abuse and fuzz tests: the
listener's back-pressure on answers, nulls the schema does not allow, gzip bombs, record
counts and offset deltas that lie."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.kafka import codec, listener
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers, Node
from smartbroker.kafka.listener import KafkaClientProtocol
from smartbroker.queues import kafka_batch
from tests.unit.kafka.batch_builders import refusal, with_records
from tests.unit.kafka.listener_fakes import FakeTransport, api_versions, correlation_ids


def connected() -> tuple[KafkaClientProtocol, FakeTransport]:
    proto = KafkaClientProtocol(KafkaHandlers(Broker(Config()), Node(None, 9092, "c", "/")), set())
    transport = FakeTransport(local="127.0.0.1")
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport


def test_a_pipeline_is_answered_a_bounded_amount_per_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_ANSWERED bytes of answers in one pass, the rest of what was read waits for
    the next loop pass with reading paused; all are answered, in order."""
    monkeypatch.setattr(listener, "MAX_ANSWERED", 600)  # a few ApiVersions answers

    async def run() -> None:
        proto, transport = connected()
        proto.data_received(b"".join(api_versions(c) for c in range(1, 11)))
        first = correlation_ids(transport.writes)
        assert first == list(range(1, len(first) + 1)) and len(first) < 5
        assert proto.backlog and not transport.reading
        for _ in range(10):
            await asyncio.sleep(0)
        assert correlation_ids(transport.writes) == list(range(1, 11))
        assert not proto.backlog and transport.reading

    asyncio.run(run())


def test_unread_answers_stop_reading_until_the_client_reads() -> None:
    async def run() -> None:
        proto, transport = connected()
        proto.pause_writing()  # the transport's buffer passed its high-water mark
        assert not transport.reading
        proto.data_received(api_versions(1))  # already in flight: still answered
        proto.resume_writing()
        assert transport.reading and correlation_ids(transport.writes) == [1]

    asyncio.run(run())


def test_backlog_waits_for_resume_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener, "MAX_ANSWERED", 1)

    async def run() -> None:
        proto, transport = connected()
        proto.pause_writing()
        proto.data_received(api_versions(1) + api_versions(2))
        for _ in range(5):
            await asyncio.sleep(0)
        assert correlation_ids(transport.writes) == [1]  # nothing more while blocked
        proto.resume_writing()
        for _ in range(5):
            await asyncio.sleep(0)
        assert correlation_ids(transport.writes) == [1, 2] and transport.reading
        proto.connection_lost(None)

    asyncio.run(run())


# -- nulls ------------------------------------------------------------------------------------


def request(api_key: int, version: int, body: bytes) -> bytes:
    flexible = b"\x00" if codec.is_flexible(api_key, version) else b""
    return struct.pack(">hhih", api_key, version, 1, 1) + b"c" + flexible + body


@pytest.mark.parametrize("key,version,body", [
    (13, 4, b"\x00\x00\x00"),  # LeaveGroup v4: null group id and members (compact)
    (13, 0, b"\xff\xff" + b"\x00\x01m"),  # LeaveGroup v0: group id length -1
    (3, 1, b"\x00\x00\x00\x01\xff\xff"),  # Metadata v1: a topic name of length -1
    (18, 3, b"\x00\x00\x00"),  # ApiVersions v3: null software name and version
])
def test_nulls_where_the_schema_allows_none_are_refused(key: int, version: int,
                                                        body: bytes) -> None:
    with pytest.raises(codec.DecodeError, match="not nullable"):
        codec.decode_request(request(key, version, body))


def test_nullable_fields_may_be_null() -> None:
    decoded = codec.decode_request(request(3, 1, b"\xff\xff\xff\xff"))  # Metadata: all topics
    assert decoded.body.topics is None
    produce = codec.decode_request(request(0, 3, b"\xff\xff" + struct.pack(">hii", 1, 100, 0)))
    assert produce.body.transactional_id is None and produce.body.topic_data == []


# -- batches ----------------------------------------------------------------------------------


def gzip_batch(inner: bytes, count: int) -> bytes:
    return with_records(codec.write_batch([(0, None, b"x", [])]), inner, 1, count)  # 1: gzip


def gzip(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    return z.compress(data) + z.flush()


def test_gzip_bomb_and_broken_gzip() -> None:
    records = codec.write_batch([(0, None, b"v" * 100, [])] * 3)[61:]
    assert refusal(gzip_batch(gzip(records), 3)) is None
    assert refusal(gzip_batch(gzip(b"\x00" * (5 << 20)), 3)) == ErrorCode.MESSAGE_TOO_LARGE
    assert refusal(gzip_batch(b"not gzip at all", 3)) == ErrorCode.CORRUPT_MESSAGE
    assert refusal(gzip_batch(gzip(records), 1000)) == ErrorCode.CORRUPT_MESSAGE  # 3 fit, not 1000


def test_more_records_claimed_than_bytes_can_hold() -> None:
    one = codec.write_batch([(0, None, b"x", [])])
    assert refusal(with_records(one, one[61:], 0, 100)) == ErrorCode.CORRUPT_MESSAGE
    tiny = codec.write_batch([(0, None, b"", [])] * 1000)  # the smallest records there are
    assert refusal(tiny) is None


def test_offset_deltas_that_fall_or_pass_the_batch_are_unreadable() -> None:
    good = codec.write_batch([(0, None, b"a", []), (0, None, b"b", [])])
    assert [r[0] for r in kafka_batch.records(good)] == [0, 1]
    for delta in (5, 0):  # the second record's delta (1): past lastOffsetDelta, or not rising
        bad = bytearray(good)
        second = 61 + 1 + good[61] // 2  # after the first record (its length is one byte)
        assert bad[second + 3] == 2  # zigzag(1)
        bad[second + 3] = delta * 2
        with pytest.raises(kafka_batch.BatchError, match="offset delta"):
            kafka_batch.records(bytes(bad))


def test_answers_held_behind_a_waiting_fetch_are_bounded() -> None:
    """A Fetch that waits, then 500 pipelined requests in one read: their answers must
    wait behind it (request order), but at most MAX_IN_FLIGHT of them are made and held;
    the rest stay unparsed until the Fetch is answered, then all go, in order."""
    from kafka.protocol.consumer import FetchRequest
    from pamqp import commands

    from smartbroker.message import Message

    t = FetchRequest.FetchTopic
    wait = FetchRequest(version=11, replica_id=-1, max_wait_ms=60000, min_bytes=1,
                        max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                        forgotten_topics_data=[], rack_id="",
                        topics=[t(topic="s", partitions=[t.FetchPartition(
                            partition=0, current_leader_epoch=-1, fetch_offset=0,
                            log_start_offset=-1, partition_max_bytes=1 << 20)])])
    wait.with_header(correlation_id=1, client_id="c")

    async def run() -> None:
        proto, transport = connected()
        vhost = proto.handlers.broker.vhosts["/"]
        queue, _ = vhost.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
        proto.data_received(bytes(wait.encode(header=True, framed=True))
                            + b"".join(api_versions(c) for c in range(2, 502)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert proto.conn.in_flight <= listener.MAX_IN_FLIGHT and not transport.writes
        queue.publish(Message.build("", "s", b"x", commands.Basic.Properties()))
        for _ in range(200):
            await asyncio.sleep(0)
            if len(correlation_ids(transport.writes)) == 501:
                break
        assert correlation_ids(transport.writes) == list(range(1, 502))
        assert transport.reading
        proto.connection_lost(None)
        queue.close()

    asyncio.run(run())
