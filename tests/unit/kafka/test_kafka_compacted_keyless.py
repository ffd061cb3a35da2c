"""A keyless record produced to a compacted topic refuses its batch with INVALID_RECORD and
Kafka's per-record errors (batch index and message), which librdkafka uses to fail that
record alone and its neighbours with _INVALID_DIFFERENT_RECORD (its suite's 0011)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers, Node
from tests.unit.kafka.kafka_fixtures import SESSION, broker_with

PRODUCE = codec.REQUESTS[0]
TS = 1_700_000_000_000


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"compacted": {"x-queue-type": "stream",
                                          "x-cleanup-policy": b"compact"}})


def produce(broker: Broker, keys: list[bytes | None]) -> Any:
    """The partition's answer, encoded and decoded at v9 as a client reads it."""
    data = codec.write_batch([(TS + i, k, b"v", []) for i, k in enumerate(keys)])
    part = PRODUCE.TopicProduceData.PartitionProduceData(index=0, records=data)
    body = PRODUCE(version=9, transactional_id=None, acks=1, timeout_ms=1000,
                   topic_data=[PRODUCE.TopicProduceData(name="compacted", partition_data=[part])])
    h = KafkaHandlers(broker, Node("h", 9092, Node.cluster_id_for("x"), "/"))
    response = h.handle(codec.Request(codec.Header(0, 9, 1, "c"), body), SESSION)
    out = codec.encode_response(0, 9, 1, response)
    decoded = codec.response_class(0).decode(out[4:], version=9, header=True)
    return decoded.responses[0].partition_responses[0]


def test_keyless_records_refuse_the_batch_with_their_indexes(broker: Broker) -> None:
    p = produce(broker, [b"a", None, b"c", None])
    assert (p.error_code, p.base_offset) == (ErrorCode.INVALID_RECORD, -1)
    assert [(e.batch_index, e.batch_index_error_message) for e in p.record_errors] == [
        (i, "Compacted topic cannot accept message without key in topic partition "
            "compacted-0.") for i in (1, 3)]
    assert p.error_message.startswith("One or more records have been rejected due to 2 "
                                      "record errors in total")
    assert broker.vhosts["/"].queues["compacted"].logs[0].next_offset == 0  # nothing stored


def test_keyed_records_are_stored(broker: Broker) -> None:
    p = produce(broker, [b"a", b"b"])
    assert (p.error_code, p.base_offset, p.record_errors) == (0, 0, [])
