"""Produce stores a RecordBatch v2 as it arrived and Fetch serves those bytes; AMQP
readers decode the same batches; the header-only checks answer with Kafka's codes."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.records import route_for
from smartbroker.queues.kafka_batch import HEADER_SIZE
from tests.unit.kafka.kafka_fixtures import THREE_PARTITIONS, broker_with
from tests.unit.kafka.test_fetch import _CURRENT, fetch, only, publish, request
from tests.unit.kafka.test_kafka_produce import handlers, produce, results
from tests.unit.queues.classic_queue_helpers import FakeConsumer

TS = 1_700_000_000_000


@pytest.fixture
def broker() -> Iterator[Broker]:
    for made in broker_with({"orders": THREE_PARTITIONS,
                             "compacted": {"x-queue-type": "stream", "x-cleanup-policy": "compact"}}):
        _CURRENT[:] = [made]  # whose topic ids test_fetch.request names topics by
        yield made


def batch(*values: bytes, key: bytes | None = b"k", ts: int = TS) -> bytes:
    return codec.write_batch([(ts + i, key, v, [("h", b"x")]) for i, v in enumerate(values)])


def with_crc(data: bytearray) -> bytes:
    struct.pack_into(">I", data, 17, codec.crc32c(memoryview(data)[21:]))
    return bytes(data)


def gzipped(*values: bytes) -> bytes:
    """The same records, gzip-compressed as a producer would send them."""
    plain = bytearray(batch(*values))
    data = bytearray(plain[:HEADER_SIZE]) + gzip.compress(bytes(plain[HEADER_SIZE:]))
    struct.pack_into(">i", data, 8, len(data) - 12)
    struct.pack_into(">h", data, 21, 1)
    return with_crc(data)


def test_fetch_serves_the_produced_bytes(broker: Broker) -> None:
    sent = [batch(b"a", b"b"), batch(b"c", b"d", b"e")]
    h = handlers(broker)
    assert results(produce(h, [("orders", 0, sent[0])])) == [("orders", 0, 0, 0)]
    assert results(produce(h, [("orders", 0, sent[1])])) == [("orders", 0, 0, 2)]
    part = only(fetch(broker, request(offset=3)))
    assert part.high_watermark == 5
    stored = part.records  # the batch holding offset 3, whole, from its base offset 2
    assert struct.unpack_from(">q", stored)[0] == 2
    assert stored[16:] == sent[1][16:]
    assert [(r.offset, r.value) for r in codec.read_records(stored)] == [
        (2, b"c"), (3, b"d"), (4, b"e")]


def test_amqp_and_kafka_records_interleave_in_one_fetch(broker: Broker) -> None:
    publish(broker, 1, b"amqp0")
    produce(handlers(broker), [("orders", 1, batch(b"k1", b"k2"))])
    publish(broker, 1, b"amqp3")
    records = codec.read_records(only(fetch(broker, request(partition=1))).records)
    assert [(r.offset, r.value) for r in records] == [
        (0, b"amqp0"), (1, b"k1"), (2, b"k2"), (3, b"amqp3")]


def test_the_first_batch_goes_even_over_max_bytes_then_whole_batches_only(broker: Broker) -> None:
    h = handlers(broker)
    for i in range(3):
        produce(h, [("orders", 0, batch(b"x" * 200, b"y%d" % i))])
    size = len(batch(b"x" * 200, b"y0"))
    part = only(fetch(broker, request(partition_max_bytes=10)))
    assert len(part.records) == size  # KIP-74: one batch although over the limit
    part = only(fetch(broker, request(partition_max_bytes=2 * size + 5)))
    assert [r.offset for r in codec.read_records(part.records)] == [0, 1, 2, 3]


def test_amqp_readers_get_kafka_records_as_messages(broker: Broker) -> None:
    produce(handlers(broker), [("orders", 2, batch(b"a", b"b"))])
    produce(handlers(broker), [("orders", 2, gzipped(b"c"))])
    q = broker.vhosts["/"].queues["orders"]
    consumer = FakeConsumer()
    consumer.arguments = {"x-stream-offset": "first", "x-stream-partition": 2}
    q.add_consumer(consumer)
    got = [(e.offset, e.message.body, e.message.routing_key, e.message.properties.headers)
           for e in consumer.received]
    assert [g[:3] for g in got] == [(0, b"a", "orders"), (1, b"b", "orders"), (2, b"c", "orders")]
    headers = got[1][3]
    assert headers["x-message-key"] == "k" and headers["h"] == "x"
    assert headers["x-stream-offset"] == 1
    assert consumer.received[1].message.exchange_rk_ss == route_for("orders")


def test_a_compacted_topic_still_stores_records_with_their_keys(broker: Broker) -> None:
    assert results(produce(handlers(broker), [("compacted", 0, batch(b"a", b"b"))])) == [
        ("compacted", 0, 0, 0)]
    log = broker.vhosts["/"].queues["compacted"].logs[0]
    assert [(r.offset, r.key) for r in log.scan_records()] == [(0, b"k"), (1, b"k")]


@pytest.mark.parametrize("change,code", [
    (lambda b: struct.pack_into(">h", b, 21, 5), ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),  # no codec
    (lambda b: struct.pack_into(">i", b, 23, 5), ErrorCode.INVALID_RECORD),  # lastOffsetDelta
    (lambda b: struct.pack_into(">b", b, 16, 1), ErrorCode.CORRUPT_MESSAGE),  # magic
    (lambda b: struct.pack_into(">i", b, 8, 10**6), ErrorCode.CORRUPT_MESSAGE),  # length
])
def test_header_checks(broker: Broker, change: Any, code: ErrorCode) -> None:
    data = bytearray(batch(b"a", b"b"))
    change(data)
    assert results(produce(handlers(broker), [("orders", 0, with_crc(data))]))[0][2] == code
    assert broker.vhosts["/"].queues["orders"].logs[0].next_offset == 0


def test_truncated_data_after_a_good_batch_refuses_the_partition(broker: Broker) -> None:
    data = batch(b"a") + batch(b"b")[:30]
    assert results(produce(handlers(broker), [("orders", 0, data)]))[0][2] == ErrorCode.CORRUPT_MESSAGE
    assert broker.vhosts["/"].queues["orders"].logs[0].next_offset == 0
