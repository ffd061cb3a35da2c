"""basic.*: publish/consume/get, properties, big bodies, acks, requeue, qos, cancel."""

from __future__ import annotations

import asyncio
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
    connect,
    connection_error,
    drain,
    eventually,
    ready_count,
    run,
    wait_until,
)
from .rawamqp import RawAMQP, content_header

Delivery = tuple[Any, pika.BasicProperties, bytes]


class Collector:
    """basic_consume callback that records (method, properties, body)."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []

    def __call__(self, _ch: BlockingChannel, method: Any, props: pika.BasicProperties, payload: bytes) -> None:
        self.items.append((method, props, payload))

    @property
    def bodies(self) -> list[bytes]:
        return [b for _, _, b in self.items]


def publish_confirmed(ch: BlockingChannel, queue: str, bodies: list[bytes]) -> None:
    """Publish on a confirm-mode channel, so the messages are enqueued when this returns."""
    for b in bodies:
        ch.basic_publish("", queue, b)


@pytest.fixture
def cch(conn: pika.BlockingConnection) -> BlockingChannel:
    """A channel in confirm mode."""
    c = conn.channel()
    c.confirm_delivery()
    return c


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


# --- consumers ----------------------------------------------------------------------------


def test_round_robin_between_consumers(conn: pika.BlockingConnection) -> None:
    """Two consumers on one queue receive alternate messages."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    a, b = Collector(), Collector()
    ch.basic_consume(q, a, auto_ack=True)
    ch.basic_consume(q, b, auto_ack=True)
    for i in range(6):
        ch.basic_publish("", q, str(i).encode())
    wait_until(conn, lambda: len(a.items) + len(b.items) == 6)
    assert sorted([a.bodies, b.bodies]) == [[b"0", b"2", b"4"], [b"1", b"3", b"5"]]


def test_consumer_tags(conn: pika.BlockingConnection) -> None:
    """A client-chosen tag is echoed back; an empty tag gets a server-generated amq.ctag-*."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    got = Collector()
    assert ch.basic_consume(q, got, consumer_tag="my-tag", auto_ack=True) == "my-tag"
    ch.basic_publish("", q, b"x")
    wait_until(conn, lambda: bool(got.items))
    assert got.items[0][0].consumer_tag == "my-tag"
    ch.basic_cancel("my-tag")


def test_server_generated_consumer_tag_raw(broker: Broker) -> None:
    """basic.consume with an empty tag: consume-ok carries amq.ctag-..."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        q = raw.expect(commands.Queue.DeclareOk).queue
        raw.send_frame(commands.Basic.Consume(queue=q, consumer_tag=""), 1)
        assert raw.expect(commands.Basic.ConsumeOk).consumer_tag.startswith("amq.ctag-")


def test_duplicate_consumer_tag_530(broker: Broker) -> None:
    """Reusing a consumer tag on the same channel: connection.close 530 NOT_ALLOWED (60, 20).

    (pika refuses this client-side, hence the raw client.)
    """
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        q = raw.expect(commands.Queue.DeclareOk).queue
        raw.send_frame(commands.Basic.Consume(queue=q, consumer_tag="dup"), 1)
        raw.expect(commands.Basic.ConsumeOk)
        raw.send_frame(commands.Basic.Consume(queue=q, consumer_tag="dup"), 1)
        close = raw.expect_connection_close()
        assert (close.reply_code, close.class_id, close.method_id) == (530, 60, 20)


def test_same_consumer_tag_on_two_channels_ok(conn: pika.BlockingConnection) -> None:
    """Consumer tags are per channel."""
    ch1, ch2 = conn.channel(), conn.channel()
    q = ch1.queue_declare("", exclusive=True).method.queue
    ch1.basic_consume(q, lambda *a: None, consumer_tag="same")
    ch2.basic_consume(q, lambda *a: None, consumer_tag="same")
    assert ch1.queue_declare(q, passive=True).method.consumer_count == 2


@pytest.mark.parametrize("exclusive_first", [True, False])
def test_exclusive_consumer_conflict_403(conn: pika.BlockingConnection, exclusive_first: bool) -> None:
    """An exclusive consume with another consumer present (or any consume while an exclusive
    consumer exists): channel.close 403 ACCESS_REFUSED."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None, exclusive=exclusive_first)
    other = conn.channel()
    with channel_error(403):
        other.basic_consume(q, lambda *a: None, exclusive=not exclusive_first)
    assert ch.is_open


def test_consume_or_get_missing_queue_404(conn: pika.BlockingConnection, qname: str) -> None:
    with channel_error(404):
        conn.channel().basic_consume(qname, lambda *a: None)
    with channel_error(404):
        conn.channel().basic_get(qname)


def test_cancel_stops_deliveries(conn: pika.BlockingConnection) -> None:
    """After basic.cancel, new messages stay in the queue."""
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    got = Collector()
    tag = ch.basic_consume(q, got, auto_ack=True)
    ch.basic_publish("", q, b"1")
    wait_until(conn, lambda: len(got.items) == 1)
    ch.basic_cancel(tag)
    ch.basic_publish("", q, b"2")
    assert ready_count(ch, q) == 1
    assert got.bodies == [b"1"]
    assert ch.queue_declare(q, passive=True).method.consumer_count == 0


def test_cancel_unknown_tag_is_ok(broker: Broker) -> None:
    """basic.cancel for an unknown tag is answered with cancel-ok (no error)."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Basic.Cancel(consumer_tag="never-existed"), 1)
        assert raw.expect(commands.Basic.CancelOk).consumer_tag == "never-existed"


def test_queue_delete_ok_comes_before_the_cancel_of_the_deleting_channels_consumer(
        broker: Broker, qname: str) -> None:
    """A channel deleting the queue it consumes from gets queue.delete-ok first and then
    basic.cancel, as from RabbitMQ (py-amqp/kombu raise ConsumerCancelled otherwise)."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake(capabilities={"consumer_cancel_notify": True})
        raw.open_channel(1)
        raw.send_frame(commands.Queue.Declare(queue=qname), 1)
        raw.expect(commands.Queue.DeclareOk)
        raw.send_frame(commands.Basic.Consume(queue=qname, consumer_tag="own"), 1)
        raw.expect(commands.Basic.ConsumeOk)
        raw.send_frame(commands.Queue.Delete(queue=qname), 1)
        frames = [raw.read_frame(), raw.read_frame()]
        assert [type(value) for _, value in frames] == [commands.Queue.DeleteOk, commands.Basic.Cancel]
        channel, cancel = frames[1]
        assert (channel, cancel.consumer_tag, cancel.nowait) == (1, "own", True)


def test_broker_cancels_consumer_when_queue_deleted(conn: pika.BlockingConnection, broker_url: str, qname: str) -> None:
    """consumer_cancel_notify: deleting the queue sends basic.cancel to its consumers."""
    ch = conn.channel()
    ch.queue_declare(qname, auto_delete=False)
    cancelled: list[Any] = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    tag = ch.basic_consume(qname, lambda *a: None)
    with connect(broker_url) as other:
        other.channel().queue_delete(qname)
    wait_until(conn, lambda: bool(cancelled))
    assert cancelled[0].consumer_tag == tag
    assert ch.is_open


def test_broker_cancel_aio_pika(broker_url: str, qname: str) -> None:
    """aiormq sees the broker's basic.cancel: the consumer is removed from the channel."""

    async def body_() -> None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(qname)
            async def ignore(_msg: aio_pika.abc.AbstractIncomingMessage) -> None:
                return None

            tag = await queue.consume(ignore)
            raw_channel = await channel.get_underlay_channel()
            assert tag in raw_channel.consumers
            other = await connection.channel()
            await other.queue_delete(qname)
            for _ in range(250):
                if tag not in raw_channel.consumers:
                    break
                await asyncio.sleep(0.02)
            assert tag not in raw_channel.consumers

    run(body_)


# --- qos ----------------------------------------------------------------------------------


def test_prefetch_count_limits_unacked_per_consumer(conn: pika.BlockingConnection) -> None:
    """prefetch_count=2: only two unacked deliveries; each ack lets one more through."""
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, [str(i).encode() for i in range(5)])
    ch.basic_qos(prefetch_count=2)
    got = Collector()
    ch.basic_consume(q, got)
    wait_until(conn, lambda: len(got.items) == 2)
    assert ready_count(ch, q) == 3
    assert len(got.items) == 2
    ch.basic_ack(got.items[0][0].delivery_tag)
    wait_until(conn, lambda: len(got.items) == 3)
    assert ready_count(ch, q) == 2
    assert got.bodies == [b"0", b"1", b"2"]


def test_prefetch_per_consumer_not_shared(conn: pika.BlockingConnection) -> None:
    """global=False (RabbitMQ): the limit applies to each consumer separately."""
    ch = conn.channel()
    ch.confirm_delivery()
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q1, [b"a"] * 4)
    publish_confirmed(ch, q2, [b"b"] * 4)
    ch.basic_qos(prefetch_count=2, global_qos=False)
    c1, c2 = Collector(), Collector()
    ch.basic_consume(q1, c1)
    ch.basic_consume(q2, c2)
    wait_until(conn, lambda: len(c1.items) == 2 and len(c2.items) == 2)
    assert (ready_count(ch, q1), ready_count(ch, q2)) == (2, 2)


def test_prefetch_global_shared_by_channel_consumers(conn: pika.BlockingConnection) -> None:
    """global=True (RabbitMQ): one limit shared by all consumers on the channel."""
    ch = conn.channel()
    ch.confirm_delivery()
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q1, [b"a"] * 5)
    publish_confirmed(ch, q2, [b"b"] * 5)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    c1, c2 = Collector(), Collector()
    ch.basic_consume(q1, c1)
    ch.basic_consume(q2, c2)
    wait_until(conn, lambda: len(c1.items) + len(c2.items) == 3)
    assert ready_count(ch, q1) + ready_count(ch, q2) == 7
    assert len(c1.items) + len(c2.items) == 3


def test_prefetch_zero_is_unlimited(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, [b"x"] * 20)
    ch.basic_qos(prefetch_count=0)
    got = Collector()
    ch.basic_consume(q, got)
    wait_until(conn, lambda: len(got.items) == 20)
    assert ready_count(ch, q) == 0


def test_prefetch_does_not_limit_auto_ack(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, [b"x"] * 10)
    ch.basic_qos(prefetch_count=1)
    got = Collector()
    ch.basic_consume(q, got, auto_ack=True)
    wait_until(conn, lambda: len(got.items) == 10)


def test_prefetch_size_not_implemented_540(conn: pika.BlockingConnection) -> None:
    """RabbitMQ: basic.qos prefetch_size != 0 is connection.close 540 NOT_IMPLEMENTED."""
    with connection_error(540):
        conn.channel().basic_qos(prefetch_size=4096)


# --- get ------------------------------------------------------------------------------------


def test_basic_get_and_get_empty(cch: BlockingChannel) -> None:
    """get-ok carries the number of messages *remaining*; an empty queue answers get-empty."""
    q = cch.queue_declare("", exclusive=True).method.queue
    assert cch.basic_get(q) == (None, None, None)
    publish_confirmed(cch, q, [b"1", b"2", b"3"])
    counts = []
    for expected in (b"1", b"2", b"3"):
        method, _, payload = cch.basic_get(q, auto_ack=True)
        assert payload == expected
        assert method.redelivered is False
        assert method.exchange == "" and method.routing_key == q
        counts.append(method.message_count)
    assert counts == [2, 1, 0]
    assert cch.basic_get(q) == (None, None, None)


def test_delivery_tags_increase_per_channel(conn: pika.BlockingConnection) -> None:
    """Delivery tags start at 1 on each channel and increase by one, across get and consume."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(2)]
    got = Collector()
    ch.basic_consume(q, got)
    wait_until(conn, lambda: len(got.items) == 1)
    assert tags + [got.items[0][0].delivery_tag] == [1, 2, 3]
    ch.basic_cancel(got.items[0][0].consumer_tag)
    ch2 = conn.channel()
    ch2.basic_publish("", q, b"x")
    assert ch2.basic_get(q)[0].delivery_tag == 1


# --- ack / nack / reject / requeue --------------------------------------------------------


def _get_n(ch: BlockingChannel, q: str, n: int) -> list[Any]:
    return [ch.basic_get(q, auto_ack=False)[0] for _ in range(n)]


def test_ack_removes_message(conn: pika.BlockingConnection) -> None:
    """An acked message is gone for good: closing the channel does not requeue it."""
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, [b"1", b"2"])
    m1, _ = _get_n(ch, q, 2)
    ch.basic_ack(m1.delivery_tag)
    ch.close()
    assert drain(conn.channel(), q) == [b"2"]


def test_ack_multiple(conn: pika.BlockingConnection) -> None:
    """ack(multiple) acks every outstanding tag up to and including the given one."""
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, [b"1", b"2", b"3", b"4"])
    msgs = _get_n(ch, q, 4)
    ch.basic_ack(msgs[2].delivery_tag, multiple=True)
    ch.close()  # the unacked 4th is requeued
    ch = conn.channel()
    assert drain(ch, q) == [b"4"]


def test_ack_multiple_zero_acks_all(conn: pika.BlockingConnection) -> None:
    """ack(delivery_tag=0, multiple=True) acks everything outstanding on the channel."""
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, [b"1", b"2", b"3"])
    _get_n(ch, q, 3)
    ch.basic_ack(0, multiple=True)
    ch.close()
    assert drain(conn.channel(), q) == []


def test_nack_multiple_requeue_and_drop(conn: pika.BlockingConnection) -> None:
    """nack(multiple, requeue=False) drops; nack(multiple, requeue=True) puts back in order."""
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, [b"1", b"2", b"3", b"4"])
    msgs = _get_n(ch, q, 4)
    ch.basic_nack(msgs[1].delivery_tag, multiple=True, requeue=False)  # drops 1, 2
    ch.basic_nack(msgs[3].delivery_tag, multiple=True, requeue=True)  # requeues 3, 4
    got = [ch.basic_get(q, auto_ack=True) for _ in range(2)]
    assert [g[2] for g in got] == [b"3", b"4"]
    assert all(g[0].redelivered for g in got)
    assert ch.basic_get(q) == (None, None, None)


def test_reject(cch: BlockingChannel) -> None:
    """reject(requeue=False) drops the message; reject(requeue=True) redelivers it."""
    q = cch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(cch, q, [b"drop", b"keep"])
    m1, m2 = _get_n(cch, q, 2)
    cch.basic_reject(m1.delivery_tag, requeue=False)
    cch.basic_reject(m2.delivery_tag, requeue=True)
    method, _, payload = cch.basic_get(q, auto_ack=True)
    assert (payload, method.redelivered) == (b"keep", True)
    assert cch.basic_get(q) == (None, None, None)


def test_requeue_restores_original_position(cch: BlockingChannel) -> None:
    """Requeued messages go back to their original place (ahead of later ones), redelivered=True,
    whatever order they are rejected in."""
    q = cch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(cch, q, [b"0", b"1", b"2", b"3"])
    m0, m1 = _get_n(cch, q, 2)
    cch.basic_reject(m1.delivery_tag, requeue=True)
    cch.basic_reject(m0.delivery_tag, requeue=True)
    got = [cch.basic_get(q, auto_ack=True) for _ in range(4)]
    assert [g[2] for g in got] == [b"0", b"1", b"2", b"3"]
    assert [g[0].redelivered for g in got] == [True, True, False, False]


def test_requeue_to_consumer_redelivered_flag(conn: pika.BlockingConnection) -> None:
    """A consumer nacking with requeue gets the same message again with redelivered=True."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"again")
    got = Collector()

    def on_message(c: BlockingChannel, m: Any, p: pika.BasicProperties, b: bytes) -> None:
        got(c, m, p, b)
        if not m.redelivered:
            c.basic_nack(m.delivery_tag, requeue=True)
        else:
            c.basic_ack(m.delivery_tag)

    ch.basic_consume(q, on_message)
    wait_until(conn, lambda: len(got.items) == 2)
    assert [m.redelivered for m, _, _ in got.items] == [False, True]
    assert got.bodies == [b"again", b"again"]


@pytest.mark.parametrize("case", ["unknown", "double", "auto_acked", "zero", "nack_unknown", "reject_unknown"])
def test_bad_delivery_tag_406(conn: pika.BlockingConnection, case: str) -> None:
    """Acking a tag that is not outstanding: channel.close 406 PRECONDITION_FAILED."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"x")
    with channel_error(406):
        if case == "unknown":
            ch.basic_ack(99)
        elif case == "double":
            tag = ch.basic_get(q)[0].delivery_tag
            ch.basic_ack(tag)
            ch.basic_ack(tag)
        elif case == "auto_acked":
            ch.basic_ack(ch.basic_get(q, auto_ack=True)[0].delivery_tag)
        elif case == "zero":
            ch.basic_ack(0, multiple=False)
        elif case == "nack_unknown":
            ch.basic_nack(5)
        else:
            ch.basic_reject(5)
        ch.queue_declare("", exclusive=True)  # acks have no reply: sync to see the close
    assert conn.is_open


def test_recover_requeue_redelivers_unacked(conn: pika.BlockingConnection) -> None:
    """basic.recover(requeue=True): unacked messages come back with redelivered=True."""
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for b in (b"1", b"2"):
        ch.basic_publish("", q, b)
    got = Collector()
    ch.basic_consume(q, got)
    wait_until(conn, lambda: len(got.items) == 2)
    ch.basic_recover(requeue=True)
    wait_until(conn, lambda: len(got.items) == 4)
    assert got.bodies == [b"1", b"2", b"1", b"2"]
    assert [m.redelivered for m, _, _ in got.items] == [False, False, True, True]


def test_recover_without_requeue_not_implemented_540(conn: pika.BlockingConnection) -> None:
    """RabbitMQ: basic.recover(requeue=False) is connection.close 540 NOT_IMPLEMENTED."""
    with connection_error(540):
        conn.channel().basic_recover(requeue=False)


def test_unacked_requeued_on_channel_close(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    publish_confirmed(ch, q, [b"1", b"2", b"3"])
    _get_n(ch, q, 2)
    ch.close()
    ch = conn.channel()
    got = [ch.basic_get(q, auto_ack=True) for _ in range(3)]
    assert [g[2] for g in got] == [b"1", b"2", b"3"]
    assert [g[0].redelivered for g in got] == [True, True, False]


def test_unacked_requeued_on_connection_close(broker_url: str, qname: str) -> None:
    """Unacked deliveries of a closed connection are requeued with redelivered=True."""
    with connect(broker_url) as owner:
        och = owner.channel()
        och.confirm_delivery()
        och.queue_declare(qname, auto_delete=False)
        try:
            publish_confirmed(och, qname, [b"1", b"2"])
            consumer_conn = connect(broker_url)
            cch = consumer_conn.channel()
            got = Collector()
            cch.basic_consume(qname, got)
            wait_until(consumer_conn, lambda: len(got.items) == 2)
            consumer_conn.close()
            eventually(lambda: ready_count(och, qname) == 2)
            got_back = [och.basic_get(qname, auto_ack=True) for _ in range(2)]
            assert [g[2] for g in got_back] == [b"1", b"2"]
            assert [g[0].redelivered for g in got_back] == [True, True]
        finally:
            och.queue_delete(qname)


def test_consume_auto_ack_aio_pika_iterator(broker_url: str) -> None:
    """aio-pika queue iterator with explicit acks receives messages in publish order."""

    async def body_() -> None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=3)
            queue = await channel.declare_queue("", exclusive=True)
            for i in range(10):
                await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=queue.name)
            received = []
            async with queue.iterator() as it:
                async for msg in it:
                    await msg.ack()
                    received.append(msg.body)
                    if len(received) == 10:
                        break
            assert received == [str(i).encode() for i in range(10)]

    run(body_)
