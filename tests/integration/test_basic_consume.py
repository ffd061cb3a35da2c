"""basic.consume / basic.cancel: round-robin, consumer tags, exclusive consumers, missing
queues, cancelling (client and broker side) and aio-pika queue iteration."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pika
import pika.exceptions
import pytest
from pamqp import commands

from .basic_helpers import Collector
from .helpers import (
    Broker,
    channel_error,
    connect,
    ready_count,
    run,
    wait_until,
)
from .rawamqp import RawAMQP

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
