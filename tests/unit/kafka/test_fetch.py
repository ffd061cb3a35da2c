"""Fetch against an in-memory broker: records, offsets and bounds as Kafka answers them,
errors per partition, sessions not kept, and the long-poll (a future completed by an
append or by max_wait_ms, its hooks gone afterwards)."""

from __future__ import annotations

import asyncio
import random
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.protocol.consumer import FetchRequest
from pamqp import commands

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.handlers import SUPPORTED, KafkaHandlers, Node
from smartbroker.kafka.protocol import KafkaConnection
from smartbroker.message import Message
from smartbroker.queues.stream_records import encode_record
from tests.unit.kafka.kafka_fixtures import SESSION, THREE_PARTITIONS, broker_with

T = FetchRequest.FetchTopic
P = T.FetchPartition


_CURRENT: list[Broker] = []  # the test's broker, whose streams hold the topic ids


@pytest.fixture
def broker() -> Iterator[Broker]:
    for made in broker_with({"orders": THREE_PARTITIONS, "classic": None}):
        _CURRENT[:] = [made]
        yield made


def stream(broker: Broker) -> Any:
    return broker.vhosts["/"].queues["orders"]


def publish(broker: Broker, partition: int, body: bytes) -> None:
    """Straight into one partition: x-stream-partition is a consume argument, so append the
    way publish does and notify as publish does."""
    q = stream(broker)
    props = commands.Basic.Properties(headers={"x-message-key": "k", "h": "v"})
    q.logs[partition].append(encode_record(Message.build("", "orders", body, props)), 1234, None)
    q.appended(partition)


def request(version: int = 11, *, offset: int = 0, partition: int = 0, topic: str = "orders",
            max_wait_ms: int = 0, min_bytes: int = 1, max_bytes: int = 1 << 20,
            partition_max_bytes: int = 1 << 20, session_id: int = 0, session_epoch: int = -1,
            partitions: list[tuple[int, int]] | None = None,
            topic_id: uuid.UUID | None = None, isolation_level: int = 0) -> bytes:
    parts = [P(partition=p, current_leader_epoch=-1, fetch_offset=o, log_start_offset=-1,
               last_fetched_epoch=-1, partition_max_bytes=partition_max_bytes)
             for p, o in (partitions or [(partition, offset)])]
    r = FetchRequest(version=version, replica_id=-1, max_wait_ms=max_wait_ms,
                     min_bytes=min_bytes, max_bytes=max_bytes, isolation_level=isolation_level,
                     session_id=session_id, session_epoch=session_epoch,
                     topics=[T(topic=topic, topic_id=topic_id or topic_uuid(topic),
                               partitions=parts)], forgotten_topics_data=[],
                     rack_id="")
    r.with_header(correlation_id=1, client_id="t")
    return bytes(r.encode(header=True, framed=True))


def topic_uuid(name: str) -> uuid.UUID:
    """The id Metadata gives ``name`` (what a v13+ Fetch names it by): the one stored with
    the test broker's stream (the zero id for no topic)."""
    return KafkaHandlers(_CURRENT[0], Node("h", 9092, "c", "/")).topic_id(name)


def handlers(broker: Broker) -> KafkaHandlers:
    return KafkaHandlers(broker, Node("h", 9092, "c", "/"))


def answer(h: KafkaHandlers, frame: bytes) -> tuple[KafkaConnection, Any, Any]:
    conn = KafkaConnection(SUPPORTED)
    conn.receive_data(frame)
    req = conn.next_request()
    return conn, req, h.handle(req, SESSION)


def decoded(conn: KafkaConnection, req: Any, body: Any) -> Any:
    out = conn.send_response(req, body)
    return codec.response_class(1).decode(out[4:], version=req.api_version, header=True)


def fetch(broker: Broker, frame: bytes) -> Any:
    conn, req, body = answer(handlers(broker), frame)
    assert not isinstance(body, asyncio.Future)
    return decoded(conn, req, body)


def only(resp: Any) -> Any:
    [topic] = resp.responses
    [part] = topic.partitions
    return part


@pytest.mark.parametrize("version", [4, 5, 7, 11, 12, 13, 15, 16])
def test_records_from_the_offset_with_watermarks(broker: Broker, version: int) -> None:
    for i in range(5):
        publish(broker, 1, b"m%d" % i)
    part = only(fetch(broker, request(version, partition=1, offset=2)))
    assert part.error_code == 0
    assert part.high_watermark == 5
    assert part.last_stable_offset == 5
    if version >= 5:
        assert part.log_start_offset == 0
    records = codec.read_records(part.records)
    assert [(r.offset, r.value, r.key) for r in records] == [
        (2, b"m2", b"k"), (3, b"m3", b"k"), (4, b"m4", b"k")]
    assert records[0].timestamp == 1234
    assert ("h", b"v") in records[0].headers


def test_at_the_high_watermark_is_empty_not_an_error(broker: Broker) -> None:
    publish(broker, 0, b"x")
    part = only(fetch(broker, request(offset=1)))
    assert (part.error_code, part.high_watermark, part.records) == (0, 1, b"")


@pytest.mark.parametrize("offset", [2, -1])
def test_offset_out_of_range(broker: Broker, offset: int) -> None:
    publish(broker, 0, b"x")
    part = only(fetch(broker, request(offset=offset)))
    assert (part.error_code, part.high_watermark, part.log_start_offset) == (1, -1, -1)


def test_below_the_log_start_after_retention(broker: Broker) -> None:
    q = stream(broker)
    for i in range(3):
        publish(broker, 0, b"x%d" % i)
        q.logs[0].roll()
    q.logs[0].delete_before(2)
    first, _ = q.partitions[0].bounds()
    assert first == 2
    assert only(fetch(broker, request(offset=1))).error_code == 1
    part = only(fetch(broker, request(offset=2)))
    assert part.log_start_offset == 2
    assert [r.value for r in codec.read_records(part.records)] == [b"x2"]


@pytest.mark.parametrize("topic,partition", [("nope", 0), ("classic", 0), ("orders", 3)])
def test_unknown_topic_or_partition(broker: Broker, topic: str, partition: int) -> None:
    part = only(fetch(broker, request(topic=topic, partition=partition, max_wait_ms=500)))
    assert part.error_code == 3


def test_partition_max_bytes_bounds_but_one_record_always_goes(broker: Broker) -> None:
    for i in range(10):
        publish(broker, 0, bytes([65 + i]) * 100)
    part = only(fetch(broker, request(partition_max_bytes=400)))
    got = codec.read_records(part.records)
    assert 1 <= len(got) < 10
    assert len(part.records) <= 400
    part = only(fetch(broker, request(partition_max_bytes=10)))
    assert [r.offset for r in codec.read_records(part.records)] == [0]  # larger, still sent


def test_max_bytes_across_partitions(broker: Broker) -> None:
    for p in range(3):
        for _ in range(5):
            publish(broker, p, b"z" * 200)
    resp = fetch(broker, request(max_bytes=10, partitions=[(0, 0), (1, 0), (2, 0)]))
    counts = [len(codec.read_records(p.records)) for p in resp.responses[0].partitions]
    assert counts == [1, 0, 0]  # the first record of the first partition only
    resp = fetch(broker, request(partitions=[(0, 0), (1, 0), (2, 0)]))
    assert [len(codec.read_records(p.records)) for p in resp.responses[0].partitions] == [5] * 3


def test_incremental_session_is_not_found_full_one_gets_session_0(broker: Broker) -> None:
    resp = fetch(broker, request(session_id=123, session_epoch=4))
    assert (resp.error_code, resp.session_id, resp.responses) == (70, 0, [])
    resp = fetch(broker, request(session_id=0, session_epoch=0))
    assert (resp.error_code, resp.session_id) == (0, 0)


def test_long_poll_completes_on_append_and_drops_its_hook(broker: Broker) -> None:
    async def run() -> None:
        h = handlers(broker)
        conn, req, body = answer(h, request(max_wait_ms=30000))
        assert isinstance(body, asyncio.Future)
        assert not body.done()
        assert stream(broker).on_append  # waiting on the stream
        publish(broker, 2, b"elsewhere")  # a partition nobody asked for: still waiting
        await asyncio.sleep(0)
        assert not body.done()
        publish(broker, 0, b"late")
        resp = decoded(conn, req, await asyncio.wait_for(body, 5))
        assert [r.value for r in codec.read_records(only(resp).records)] == [b"late"]
        assert stream(broker).on_append == []
    asyncio.run(run())


def test_long_poll_times_out_empty(broker: Broker) -> None:
    async def run() -> None:
        conn, req, body = answer(handlers(broker), request(max_wait_ms=20))
        resp = decoded(conn, req, await asyncio.wait_for(body, 5))
        assert (only(resp).error_code, only(resp).records) == (0, b"")
        assert stream(broker).on_append == []
    asyncio.run(run())


def test_min_bytes_waits_for_enough(broker: Broker) -> None:
    async def run() -> None:
        conn, req, body = answer(handlers(broker), request(max_wait_ms=30000, min_bytes=300))
        publish(broker, 0, b"a" * 100)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not body.done()
        publish(broker, 0, b"b" * 300)
        resp = decoded(conn, req, await asyncio.wait_for(body, 5))
        assert len(codec.read_records(only(resp).records)) == 2
    asyncio.run(run())


def test_cancelled_wait_drops_timer_and_hook(broker: Broker) -> None:
    async def run() -> None:
        _, _, body = answer(handlers(broker), request(max_wait_ms=30000))
        body.cancel()
        await asyncio.sleep(0)
        assert stream(broker).on_append == []
    asyncio.run(run())


@pytest.mark.parametrize("key,value,headers", [
    (None, None, []), (b"", b"", []), (b"k" * 300, b"v" * 70000, []),
    (b"k", b"v", [("h", b"1"), ("ünï", None), ("x" * 200, b"y" * 200)]),
])
def test_record_size_is_an_upper_bound(key: bytes | None, value: bytes | None,
                                       headers: list[tuple[str, bytes | None]]) -> None:
    records = [(offset, 1700000000000 + offset * 99999, key, value, headers)
               for offset in (5, 9, 2**30)]
    batch = codec.write_batch_at(records)
    assert len(batch) <= codec.BATCH_OVERHEAD + 3 * codec.record_size(key, value, headers)
    assert len(codec.write_batch_at(records[:1])) >= codec.BATCH_OVERHEAD


def test_v13_names_topics_by_the_id_metadata_gives(broker: Broker) -> None:
    publish(broker, 0, b"x")
    resp = fetch(broker, request(13))
    [topic] = resp.responses
    assert topic.topic_id == topic_uuid("orders")
    assert [r.value for r in codec.read_records(topic.partitions[0].records)] == [b"x"]
    unknown = uuid.uuid4()
    resp = fetch(broker, request(16, topic_id=unknown, max_wait_ms=500))
    assert resp.responses[0].topic_id == unknown
    assert only(resp).error_code == 100  # UNKNOWN_TOPIC_ID
    resp = fetch(broker, request(13, topic_id=topic_uuid("classic")))
    assert only(resp).error_code == 100  # a classic queue is no topic, whatever its id


def test_closing_a_session_is_a_plain_full_fetch(broker: Broker) -> None:
    publish(broker, 0, b"x")
    resp = fetch(broker, request(session_id=77, session_epoch=-1))  # FINAL_EPOCH
    assert (resp.error_code, resp.session_id) == (0, 0)
    assert len(codec.read_records(only(resp).records)) == 1


def test_read_committed_reads_what_read_uncommitted_reads(broker: Broker) -> None:
    """No transactions yet: everything is committed, the LSO is the high watermark."""
    for i in range(3):
        publish(broker, 0, b"%d" % i)
    part = only(fetch(broker, request(isolation_level=1)))
    assert (part.last_stable_offset, part.high_watermark, part.aborted_transactions) == (3, 3, [])
    assert len(codec.read_records(part.records)) == 3


def _library_batch(records: list[Any]) -> bytes:
    from kafka.record.default_records import DefaultRecordBatchBuilder
    base = records[0][0]
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=2**31 - 1)
    for offset, timestamp, key, value, headers in records:
        builder.append(offset - base, timestamp=timestamp, key=key, value=value, headers=headers)
    batch = builder.build()
    struct.pack_into(">q", batch, 0, base)
    return bytes(batch)


@pytest.mark.parametrize("seed", range(5))
def test_write_batch_at_is_byte_for_byte_the_library_builder(seed: int) -> None:
    rnd = random.Random(seed)
    offset, records = rnd.randrange(0, 2**40), []
    for _ in range(rnd.randrange(1, 40)):
        offset += rnd.choice([1, 1, 2, 300, 20000])  # compaction gaps, varints of every width

        def blob() -> bytes | None:
            return rnd.choice([None, b"", rnd.randbytes(rnd.choice([1, 127, 128, 20000]))])
        headers = [(rnd.choice(["h", "ünï", "x" * 200]), blob()) for _ in range(rnd.randrange(3))]
        records.append((offset, 1700000000000 + rnd.randrange(-10**7, 10**7), blob(), blob(),
                        headers))
    assert codec.write_batch_at(records) == _library_batch(records)
