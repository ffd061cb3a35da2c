"""Produce and ListOffsets handlers against an in-memory broker: appends to the named
partition, auto-creation, every refusal with Kafka's code, all-or-nothing per partition,
acks=0, the durable wait, and the offsets ListOffsets answers."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.config import Config
from smartbroker.kafka import codec, records
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers, Node
from smartbroker.kafka.offsets import lookup
from smartbroker.kafka.produce import NO_RESPONSE, Producer, Topics
from smartbroker.store.memory import MemoryLog
from tests.unit.kafka.kafka_fixtures import SESSION, THREE_PARTITIONS, broker_with

PRODUCE = codec.REQUESTS[0]
LIST = codec.REQUESTS[2]
TS = 1_700_000_000_000


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS, "classic": None})


def handlers(broker: Broker) -> KafkaHandlers:
    return KafkaHandlers(broker, Node("h", 9092, Node.cluster_id_for("x"), "/"))


def produce(h: KafkaHandlers, parts: list[tuple[str, int, bytes | None]], acks: int = 1,
            version: int = 9, transactional_id: str | None = None) -> Any:
    topics: dict[str, list[Any]] = {}
    for topic, index, data in parts:
        topics.setdefault(topic, []).append(
            PRODUCE.TopicProduceData.PartitionProduceData(index=index, records=data))
    body = PRODUCE(version=version, transactional_id=transactional_id, acks=acks,
                   timeout_ms=1000, topic_data=[PRODUCE.TopicProduceData(name=t, partition_data=p)
                                                for t, p in topics.items()])
    return h.handle(codec.Request(codec.Header(0, version, 1, "c"), body), SESSION)


def results(response: Any) -> list[tuple[str, int, int, int]]:
    return [(t.name, p.index, p.error_code, p.base_offset)
            for t in response.responses for p in t.partition_responses]


def batch(*values: bytes, key: bytes | None = b"k", **kwargs: Any) -> bytes:
    return codec.write_batch([(TS + i, key, v, [("h", b"x")]) for i, v in enumerate(values)],
                             **kwargs)


def test_appends_to_the_named_partition(broker: Broker) -> None:
    h = handlers(broker)
    assert results(produce(h, [("orders", 2, batch(b"a", b"b"))])) == [("orders", 2, 0, 0)]
    assert results(produce(h, [("orders", 2, batch(b"c"))])) == [("orders", 2, 0, 2)]
    stream = broker.vhosts["/"].queues["orders"]
    assert [lg.next_offset for lg in stream.logs] == [0, 0, 3]
    rec = stream.logs[2].read_record(1)
    assert rec.timestamp_ms == TS + 1
    assert records.stored_to_record(rec.payload, rec.timestamp_ms) == (TS + 1, b"k", b"b",
                                                                       [("h", b"x")])


def test_auto_creation(broker: Broker) -> None:
    h = handlers(broker)
    assert results(produce(h, [("fresh", 0, batch(b"a"))])) == [("fresh", 0, 0, 0)]
    q = broker.vhosts["/"].queues["fresh"]
    assert q.type_name == "stream" and q.durable and len(q.logs) == 1
    broker.config.kafka_auto_create_topics = False
    assert results(produce(h, [("other", 0, batch(b"a"))])) == [
        ("other", 0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)]
    assert "other" not in broker.vhosts["/"].queues


def test_refusals(broker: Broker) -> None:
    h = handlers(broker)
    good = batch(b"a")
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF  # inside the CRC
    broker.config.max_message_size = 10
    resp = produce(h, [("classic", 0, good), ("bad name", 0, good), ("orders", 3, good),
                       ("orders", 0, bytes(corrupt)), ("orders", 1, batch(b"x" * 11)),
                       ("orders", 2, b"\x00\x01")])
    assert [(n, i, c) for n, i, c, _ in results(resp)] == [
        ("classic", 0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("bad name", 0, ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("orders", 3, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("orders", 0, ErrorCode.CORRUPT_MESSAGE),
        ("orders", 1, ErrorCode.MESSAGE_TOO_LARGE),
        ("orders", 2, ErrorCode.CORRUPT_MESSAGE)]
    assert all(p.error_message for t in resp.responses for p in t.partition_responses)
    assert [lg.next_offset for lg in broker.vhosts["/"].queues["orders"].logs] == [0, 0, 0]
    assert "classic" in broker.vhosts["/"].queues


def test_producer_id_refusals(broker: Broker) -> None:
    resp = produce(handlers(broker), [
        ("orders", 2, batch(b"a", producer_id=7, producer_epoch=0, base_sequence=-1)),
        ("orders", 2, batch(b"a", producer_id=7, producer_epoch=0, base_sequence=0,
                            transactional=True))])
    assert [c for _, _, c, _ in results(resp)] == [
        ErrorCode.INVALID_RECORD,  # a producer id without a sequence
        ErrorCode.INVALID_TXN_STATE]  # in no ongoing transaction
    assert broker.vhosts["/"].queues["orders"].logs[2].next_offset == 0


def test_partition_is_all_or_nothing(broker: Broker) -> None:
    broker.config.max_message_size = 10
    data = batch(b"ok") + batch(b"y" * 11)  # the second batch is refused: so is the first
    assert results(produce(handlers(broker), [("orders", 0, data)]))[0][2] == ErrorCode.MESSAGE_TOO_LARGE
    assert broker.vhosts["/"].queues["orders"].logs[0].next_offset == 0


def test_transactional_id_and_bad_acks(broker: Broker) -> None:
    h = handlers(broker)
    # Kafka takes non-transactional batches in a request naming a transactional id
    assert results(produce(h, [("orders", 0, batch(b"a"))], transactional_id="tx"))[0][2] == \
        ErrorCode.NONE
    assert results(produce(h, [("orders", 0, batch(b"a"))], acks=2))[0][2] == \
        ErrorCode.INVALID_REQUIRED_ACKS


def test_acks_zero_appends_without_a_response(broker: Broker) -> None:
    assert produce(handlers(broker), [("orders", 1, batch(b"a"))], acks=0) is NO_RESPONSE
    assert broker.vhosts["/"].queues["orders"].logs[1].next_offset == 1


def test_acks_zero_through_the_connection(broker: Broker) -> None:
    """The listener's path: nothing is written for acks=0, and the next response goes."""
    from smartbroker.kafka.handlers import SUPPORTED
    from smartbroker.kafka.protocol import KafkaConnection

    conn = KafkaConnection(SUPPORTED)
    h = handlers(broker)
    body = PRODUCE(version=3, transactional_id=None, acks=0, timeout_ms=1000, topic_data=[
        PRODUCE.TopicProduceData(name="orders", partition_data=[
            PRODUCE.TopicProduceData.PartitionProduceData(index=0, records=batch(b"a"))])])
    body.with_header(correlation_id=5, client_id="c")
    frame = bytes(body.encode(header=True, framed=True))
    conn.receive_data(frame)
    request = conn.next_request()
    assert h.handle(request, SESSION) is NO_RESPONSE
    assert conn.no_response(request) == b"" and conn.in_flight == 0


class _FailingLog:
    async def wait_durable(self, offset: int) -> None:
        raise OSError("disk full")


def test_a_failed_fsync_is_a_storage_error(broker: Broker) -> None:
    response = produce(handlers(broker), [("orders", 0, batch(b"a"))])
    done = asyncio.run(Producer._durable(response, [(_FailingLog(), 0)]))
    assert results(done) == [("orders", 0, ErrorCode.KAFKA_STORAGE_ERROR, -1)]


# -- ListOffsets ------------------------------------------------------------------------------


def test_lookup_on_a_log() -> None:
    lg = MemoryLog()
    assert lookup(lg, -2) == (0, -1) and lookup(lg, -1) == (0, -1)
    assert lookup(lg, -3) == (-1, -1) and lookup(lg, TS) == (-1, -1)
    for i, ts in enumerate([TS, TS + 30, TS + 10, TS + 30, TS + 20]):
        assert lg.append(struct.pack(">i", i), ts) == i
    assert lookup(lg, -2) == (0, -1)
    assert lookup(lg, -1) == (5, -1)
    assert lookup(lg, -3) == (1, TS + 30)  # the first record with the largest timestamp
    assert lookup(lg, 0) == (0, TS)
    assert lookup(lg, TS + 31) == (-1, -1)


def list_offsets(h: KafkaHandlers, topic: str, wanted: list[tuple[int, int]],
                 version: int = 7) -> list[tuple[int, int, int, int]]:
    body = LIST(version=version, replica_id=-1, isolation_level=0, topics=[LIST.ListOffsetsTopic(
        name=topic, partitions=[LIST.ListOffsetsTopic.ListOffsetsPartition(
            partition_index=p, current_leader_epoch=-1, timestamp=ts) for p, ts in wanted])])
    resp = h.handle(codec.Request(codec.Header(2, version, 1, "c"), body), SESSION)
    return [(p.partition_index, p.error_code, p.offset, p.timestamp)
            for t in resp.topics for p in t.partitions]


def test_list_offsets(broker: Broker) -> None:
    h = handlers(broker)
    produce(h, [("orders", 0, batch(b"a", b"b", b"c"))])
    assert list_offsets(h, "orders", [(0, -2), (0, -1), (0, TS + 1), (0, -3), (1, -1), (3, -1)]) == [
        (0, 0, 0, -1), (0, 0, 3, -1), (0, 0, 1, TS + 1), (0, 0, 2, TS + 2), (1, 0, 0, -1),
        (3, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]
    assert list_offsets(h, "nope", [(0, -1)]) == [(0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]
    assert "nope" not in broker.vhosts["/"].queues  # ListOffsets creates nothing
    assert list_offsets(h, "classic", [(0, -1)])[0][1] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert list_offsets(h, "orders", [(0, -1)], version=1) == [(0, 0, 3, -1)]


def test_acks_wait_until_the_partition_log_is_durable(tmp_path: Any) -> None:
    """A stream on disk: the response is a future, done only once the records are fsynced."""
    from smartbroker.queues.base import Storage
    from smartbroker.queues.stream import StreamQueue
    from smartbroker.queues.stream_args import StreamSettings

    stream = StreamQueue("disk", "/", settings=StreamSettings(partitions=2),
                         storage=Storage(store=None, data_dir=tmp_path, fsync="always"))

    class OneTopic:
        partition_elsewhere = None  # a single node
        local_partition = Topics.local_partition

        def stream(self, name: str, *, create: bool, need: str | None = None) -> StreamQueue:
            return stream

    producer = Producer(Broker(Config()), OneTopic())  # type: ignore[arg-type]
    body = PRODUCE(version=9, transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[
        PRODUCE.TopicProduceData(name="disk", partition_data=[
            PRODUCE.TopicProduceData.PartitionProduceData(index=1, records=batch(b"a", b"b"))])])

    async def run() -> Any:
        future = producer.produce(codec.Request(codec.Header(0, 9, 1, "c"), body), SESSION)
        assert isinstance(future, asyncio.Future)
        assert stream.logs[1].durable_offset < 2  # appended, not yet fsynced
        response = await future
        assert stream.logs[1].durable_offset >= 2
        return response

    try:
        assert results(asyncio.run(run())) == [("disk", 1, 0, 0)]
    finally:
        stream.close()


def test_under_a_resource_alarm_produce_waits_and_appends_once_it_clears(broker: Broker) -> None:
    """As an AMQP publisher is blocked under a memory or disk alarm, a Produce waits:
    nothing is appended until every alarm has cleared, then it answers as usual."""
    producer = Producer(broker, handlers(broker).streams)
    body = PRODUCE(version=9, transactional_id=None, acks=1, timeout_ms=1000, topic_data=[
        PRODUCE.TopicProduceData(name="orders", partition_data=[
            PRODUCE.TopicProduceData.PartitionProduceData(index=0, records=batch(b"a"))])])
    log0 = broker.vhosts["/"].queues["orders"].logs[0]

    async def run() -> Any:
        broker.alarms.add("disk")
        future = producer.produce(codec.Request(codec.Header(0, 9, 1, "c"), body), SESSION)
        assert isinstance(future, asyncio.Future)
        await asyncio.sleep(0)  # the waiting task runs once: the alarm is still on
        assert not future.done() and log0.next_offset == 0
        broker.alarms.clear()
        return await asyncio.wait_for(future, 5)

    assert results(asyncio.run(run())) == [("orders", 0, 0, 0)]
    assert log0.next_offset == 1
