"""The Kafka record <-> AMQP message mapping (smartbroker/kafka/records.py), both ways."""

from __future__ import annotations

import pytest
from pamqp import commands

from smartbroker.kafka import records as r
from smartbroker.message import Message
from smartbroker.queues.partitioner import header_key_partition, kafka_partition
from smartbroker.queues.stream_records import decode_record, encode_record

ROUTE = r.route_for("orders")
TS = 1_700_000_000_123

ROUND_TRIPS = [
    (TS, b"user-1", b"payload", [("a", b"1"), ("b", b"")]),
    (TS, b"\xff\xfe not utf-8", b"v", []),
    (TS, None, b"unkeyed", []),
    (TS, b"", b"empty key is not a null key", []),
    (TS, None, None, []),  # a tombstone
    (TS, b"k", b"", []),  # an empty value is not a null one
    (TS, None, b"v", [("dup", b"1"), ("dup", b"2"), ("null", None)]),
    (TS, None, b"v", [("x-message-key", b"not the key"), ("x-stream-offset", b"7"),
                      ("x-kafka-header:x", b"y"), ("x-kafka-empty-value", b"")]),
    (TS, None, b"v", [("x-amqp-content-type", b"application/json"),  # AMQP's order
                      ("x-amqp-priority", b"5"), ("x-amqp-correlation-id", b"c-1")]),
    (TS, None, b"v", [("x-amqp-priority", b"not a number"), ("x-amqp-timestamp", b"12")]),
]


@pytest.mark.parametrize("record", ROUND_TRIPS)
def test_record_message_record_round_trip(record):
    message = r.record_to_message(ROUTE, *record)
    assert message.exchange == "" and message.routing_key == "orders"
    assert r.message_to_record(message, record[0]) == record
    assert r.stored_to_record(encode_record(message), record[0]) == record
    assert r.stored_record(ROUTE, *record) == encode_record(message)


def test_record_as_amqp_sees_it():
    message = r.record_to_message(ROUTE, TS, b"user-1", b"body",
                                  [("trace", b"abc"), ("x-message-key", b"fake"),
                                   ("x-amqp-content-type", b"text/plain")])
    props = message.properties
    assert message.body == b"body"
    assert props.headers["x-message-key"] == "user-1"
    assert props.headers["trace"] == "abc"
    assert props.headers["x-kafka-header:x-message-key"] == "fake"
    assert props.content_type == "text/plain"
    assert int(props.timestamp) == TS // 1000
    # what an AMQP reader of the stream gets (the stream adds offset and partition)
    delivered = decode_record(encode_record(message), 2, 41)
    assert delivered.properties.headers["x-stream-offset"] == 41
    assert delivered.properties.headers["x-message-key"] == "user-1"


def test_null_value_is_an_empty_body_and_no_marker():
    message = r.record_to_message(ROUTE, TS, b"k", None, [])
    assert message.body == b""
    assert "x-kafka-empty-value" not in message.properties.headers


def test_header_name_too_long_is_refused():
    with pytest.raises(r.RecordError):
        r.record_header(TS, None, b"v", [("h" * 256, b"x")])


def test_amqp_message_as_record():
    props = commands.Basic.Properties(
        headers={"x-message-key": "user-7", "n": 5, "s": "text", "raw": b"\x00\x01"},
        content_type="a/b", delivery_mode=2, timestamp=100, message_id="m1")
    message = Message.build("amq.direct", "rk", b"hello", props)
    ts, key, value, headers = r.message_to_record(message, 123_456)
    assert (ts, key, value) == (123_456, b"user-7", b"hello")
    assert headers == [("n", b"5"), ("s", b"text"), ("raw", b"\x00\x01"),
                       ("x-amqp-content-type", b"a/b"), ("x-amqp-delivery-mode", b"2"),
                       ("x-amqp-message-id", b"m1"), ("x-amqp-timestamp", b"100")]


def test_amqp_timestamp_equal_to_entry_time_is_not_repeated():
    message = Message.build("", "q", b"x", commands.Basic.Properties(timestamp=123))
    assert r.message_to_record(message, 123_999)[3] == []


def test_message_without_properties():
    message = Message.build("", "q", b"x")
    assert r.message_to_record(message, 5) == (5, None, b"x", [])
    assert r.message_to_record(Message.build("", "q", b""), 5) == (5, None, None, [])


@pytest.mark.parametrize("amqp_key", ["user-1", b"user-1", 42])
def test_key_bytes_are_what_the_partitioner_hashes(amqp_key):
    message = Message.build("", "q", b"x", commands.Basic.Properties(
        headers={"x-message-key": amqp_key}))
    key = r.message_to_record(message, 0)[1]
    assert key is not None
    assert kafka_partition(key, 7) == header_key_partition(amqp_key, 7)
