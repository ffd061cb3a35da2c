"""basic.publish: every basic property round-trips (pika and aio-pika), user-id checks,
body sizes around frame boundaries, mandatory returns and the unsupported immediate flag."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import aio_pika
import pika
import pika.exceptions
import pytest
from pamqp import body, commands
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import (
    Broker,
    channel_error,
    drain,
    run,
    wait_until,
)
from .rawamqp import RawAMQP, content_header

# --- properties and bodies ------------------------------------------------------------


def test_all_basic_properties_round_trip_pika(cch: BlockingChannel) -> None:
    """Every basic property, and a headers table with nested values, comes back unchanged."""
    q = cch.queue_declare("", exclusive=True).method.queue
    headers = {
        "str": "s",
        "utf8": "h\u00e9llo \u2603",
        "int": 1,
        "big": 2**40,
        "neg": -5,
        "true": True,
        "false": False,
        "void": None,
        "bytes": b"\x00\xff",
        "decimal": decimal.Decimal("3.14"),
        "timestamp": datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "array": [1, "a", [2, 3], {"n": 1}],
        "nested": {"a": {"b": {"c": 1}}},
        "empty_array": [],
        "empty_table": {},
    }
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=7,
        correlation_id="cid-1",
        reply_to="reply.queue",
        expiration="60000",
        message_id="mid-1",
        timestamp=1700000000,
        type="my.type",
        user_id="guest",
        app_id="app-1",
    )
    cch.basic_publish("", q, b"body", props)
    method, got, payload = cch.basic_get(q, auto_ack=True)
    assert payload == b"body"
    assert got.headers == headers
    for name in (
        "content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
        "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id",
    ):
        assert getattr(got, name) == getattr(props, name), name


def test_absent_properties_stay_absent(cch: BlockingChannel) -> None:
    q = cch.queue_declare("", exclusive=True).method.queue
    cch.basic_publish("", q, b"x")
    _, got, _ = cch.basic_get(q, auto_ack=True)
    assert got.headers is None and got.content_type is None and got.delivery_mode is None
    assert got.timestamp is None and got.priority is None


def test_properties_round_trip_aio_pika(broker_url: str) -> None:
    """aio-pika: floats, byte arrays, decimals, timestamps, nested tables and arrays."""
    headers = {
        "float": 1.5,
        "negative_float": -0.25,
        "int": 1,
        "bool": True,
        "void": None,
        "bytearray": bytearray(b"\x00\x01"),
        "decimal": decimal.Decimal("1.23"),
        "ts": datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "array": [1, 2.5, "x"],
        "table": {"x": {"y": 1}},
        "str": "s",
    }

    async def body_() -> None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("", exclusive=True)
            ts = datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC)
            await channel.default_exchange.publish(
                aio_pika.Message(b"x", headers=headers, timestamp=ts, priority=3, expiration=10,
                                 content_type="text/plain", correlation_id="c", message_id="m",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT, app_id="a",
                                 type="t", user_id="guest", reply_to="r"),
                routing_key=queue.name,
            )
            msg = await queue.get(no_ack=True, timeout=5)
            assert msg.headers == headers
            assert msg.timestamp == ts
            assert (msg.priority, msg.content_type, msg.correlation_id, msg.message_id) == (3, "text/plain", "c", "m")
            assert (msg.app_id, msg.type, msg.user_id, msg.reply_to) == ("a", "t", "guest", "r")
            assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT

    run(body_)


def test_wrong_user_id_406(conn: pika.BlockingConnection) -> None:
    """user_id must equal the authenticated user: otherwise channel.close 406 PRECONDITION_FAILED."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    with channel_error(406):
        ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="not-guest"))
    assert conn.is_open


@pytest.mark.parametrize("size", [0, 1, 131063, 131064, 131065, 300 * 1024, 1024 * 1024])
def test_body_sizes_byte_exact(cch: BlockingChannel, size: int) -> None:
    """Bodies of any size, including empty and those split over several frames (frame_max 131072)."""
    q = cch.queue_declare("", exclusive=True).method.queue
    payload = bytes((i * 7 + size) % 251 for i in range(size))
    cch.basic_publish("", q, payload)
    _, _, got = cch.basic_get(q, auto_ack=True)
    assert got == payload


def test_large_body_consume_aio_pika(broker_url: str) -> None:
    """A 1 MiB + 3 byte body delivered via basic.consume to aio-pika, byte-exact."""
    payload = bytes(range(256)) * 4096 + b"end"

    async def body_() -> None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("", exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(payload), routing_key=queue.name)
            async with queue.iterator() as it:
                async for msg in it:
                    async with msg.process():
                        assert msg.body == payload
                    break

    run(body_)


# --- mandatory / immediate --------------------------------------------------------------


def test_mandatory_unroutable_returned_312(conn: pika.BlockingConnection, xname: str) -> None:
    """mandatory publish that routes nowhere: basic.return 312 NO_ROUTE with the message."""
    ch = conn.channel()
    ch.exchange_declare(xname, "direct")
    returned: list[tuple[Any, pika.BasicProperties, bytes]] = []
    ch.add_on_return_callback(lambda _c, m, p, b: returned.append((m, p, b)))
    ch.basic_publish(xname, "no.such.key", b"lost", pika.BasicProperties(message_id="m1"), mandatory=True)
    wait_until(conn, lambda: bool(returned))
    method, props, payload = returned[0]
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert (method.exchange, method.routing_key) == (xname, "no.such.key")
    assert (props.message_id, payload) == ("m1", b"lost")


def test_mandatory_routable_not_returned(cch: BlockingChannel) -> None:
    q = cch.queue_declare("", exclusive=True).method.queue
    cch.basic_publish("", q, b"ok", mandatory=True)  # raises UnroutableError if returned
    assert drain(cch, q) == [b"ok"]


def test_non_mandatory_unroutable_silently_dropped(cch: BlockingChannel, xname: str) -> None:
    cch.exchange_declare(xname, "fanout")
    cch.basic_publish(xname, "", b"dropped")  # confirmed (ack), no return
    assert cch.is_open


def test_immediate_not_implemented_540(broker: Broker) -> None:
    """basic.publish immediate=true: connection.close 540 NOT_IMPLEMENTED naming basic.publish (60, 40)."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Basic.Publish(exchange="", routing_key="x", immediate=True), 1)
        raw.send_frame(content_header(1), 1)
        raw.send_frame(body.ContentBody(b"x"), 1)
        close = raw.expect_connection_close()
        assert (close.reply_code, close.class_id, close.method_id) == (540, 60, 40)
