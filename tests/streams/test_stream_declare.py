"""Declaring a stream: its arguments, what routes into it, and what is refused (406)."""

from __future__ import annotations

from decimal import Decimal

import pika
import pytest
from stream_helpers import declare_stream, publish, read_all, stream_args

from tests.integration.helpers import channel_error, connect


def test_declare_with_retention_arguments(ch, stream, broker_url):
    q = stream(max_age="7D", max_length_bytes=10_000_000, stream_max_segment_size_bytes=1_000_000)
    ok = declare_stream(ch, q, max_age="7D", max_length_bytes=10_000_000,
                        stream_max_segment_size_bytes=1_000_000)  # equivalent redeclare
    assert ok.method.queue == q
    assert ok.method.message_count == 0
    publish(ch, q, [f"m{i}" for i in range(5)])
    assert ch.queue_declare(q, passive=True).method.message_count == 0  # streams report 0


@pytest.mark.extension
@pytest.mark.parametrize("policy", ["delete", "compact", "compact,delete"])
def test_declare_with_partitions_and_cleanup_policy(ch, stream, broker_url, policy):
    q = stream(partitions=3, cleanup_policy=policy, max_age="12h")
    publish(ch, q, [f"m{i}" for i in range(6)], headers=lambda i: {"x-message-key": f"k{i}"})
    got = read_all(broker_url, q, 6)
    assert sorted(g.text for g in got) == [f"m{i}" for i in range(6)]
    assert {g.partition for g in got} <= {0, 1, 2}


@pytest.mark.parametrize("kind,key", [("topic", "orders.eu.created"), ("fanout", "anything")])
def test_any_exchange_routes_into_a_stream(ch, stream, broker_url, uid, kind, key):
    q = stream()
    x = f"test.streams.{kind}.{uid}"
    ch.exchange_declare(x, kind, auto_delete=True)
    try:
        ch.queue_bind(q, x, "orders.#" if kind == "topic" else "")
        publish(ch, q, ["a", "b", "c"], exchange=x, routing_key=key)
        got = read_all(broker_url, q, 3)
        assert [g.text for g in got] == ["a", "b", "c"]
        assert [g.routing_key for g in got] == [key] * 3
        assert [g.offset for g in got] == [0, 1, 2]
    finally:
        ch.exchange_delete(x)


def test_consumption_never_empties_a_stream(ch, stream, broker_url):
    q = stream()
    publish(ch, q, [f"m{i}" for i in range(10)])
    first = read_all(broker_url, q, 10)  # acks every delivery
    assert [g.text for g in first] == [f"m{i}" for i in range(10)]
    again = read_all(broker_url, q, 10)
    assert [g.text for g in again] == [f"m{i}" for i in range(10)]
    assert [g.offset for g in again] == list(range(10))


def declare_fails(url: str, name: str, **kwargs) -> pika.exceptions.ChannelClosedByBroker:
    with connect(url) as c, channel_error(406) as err:
        c.channel().queue_declare(name, **kwargs)
    return err[0]


@pytest.mark.parametrize("props,text", [
    ({"durable": False}, "non-durable"),
    ({"durable": True, "exclusive": True}, "exclusive"),
    ({"durable": True, "auto_delete": True}, "auto-delete"),
])
def test_invalid_queue_properties_are_refused(broker_url, qname, props, text):
    err = declare_fails(broker_url, qname, arguments=stream_args(), **props)
    assert text in err.reply_text
    with connect(broker_url) as c, channel_error(404):
        c.channel().queue_declare(qname, passive=True)  # nothing was created


@pytest.mark.parametrize("arg,value", [("x-message-ttl", 1000), ("x-dead-letter-exchange", "dlx")])
def test_classic_only_arguments_are_refused(broker_url, qname, arg, value):
    err = declare_fails(broker_url, qname, durable=True,
                        arguments={**stream_args(), arg: value})
    assert arg in err.reply_text


@pytest.mark.extension
@pytest.mark.parametrize("args,text", [
    ({"max_age": "7 days"}, "x-max-age"),
    ({"max_age": "7d"}, "x-max-age"),  # units are Y M D h m s: lower-case d is not days
    ({"partitions": 0}, "x-partitions"),
    ({"partitions": -2}, "x-partitions"),
    ({"partitions": "3"}, "x-partitions"),
    ({"partitions": Decimal("2.5")}, "x-partitions"),
    ({"partitions": True}, "x-partitions"),
    ({"cleanup_policy": "shred"}, "x-cleanup-policy"),
])
def test_invalid_stream_arguments_say_what_is_wrong(broker_url, qname, args, text):
    err = declare_fails(broker_url, qname, durable=True, arguments=stream_args(**args))
    assert text in err.reply_text
    bad = str(next(iter(args.values())))
    assert bad in err.reply_text, err.reply_text  # the offending value is quoted back


@pytest.mark.extension
def test_non_integer_length_is_refused(broker_url, qname):
    err = declare_fails(broker_url, qname, durable=True,
                        arguments=stream_args(max_length_bytes="big"))
    assert "x-max-length-bytes" in err.reply_text and "integer" in err.reply_text


@pytest.mark.extension
def test_redeclare_with_other_partition_count_is_refused(stream, broker_url):
    q = stream(partitions=2)
    err = declare_fails(broker_url, q, durable=True, arguments=stream_args(partitions=3))
    assert "x-partitions" in err.reply_text
