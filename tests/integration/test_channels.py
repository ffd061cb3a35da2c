"""Channel lifecycle: open/close, channel.flow, errors scoped to one channel."""

from __future__ import annotations

import aio_pika
import aiormq.exceptions
import pika
import pika.exceptions
import pytest
from pamqp import commands

from .helpers import Broker, channel_error, connection_error, run
from .rawamqp import RawAMQP


def test_open_and_close_channels(conn: pika.BlockingConnection) -> None:
    """Several channels can be opened and closed independently; numbers are reusable."""
    chans = [conn.channel() for _ in range(5)]
    assert len({c.channel_number for c in chans}) == 5
    chans[2].close()
    assert chans[2].is_closed
    for c in chans[:2] + chans[3:]:
        assert c.is_open
        c.queue_declare("", exclusive=True)
    again = conn.channel(channel_number=chans[2].channel_number)
    again.queue_declare("", exclusive=True)


def test_channel_flow_active_true_is_acknowledged(ch) -> None:
    """channel.flow(active=True) is answered with flow-ok active=True."""
    assert ch.flow(True) is True


def test_channel_flow_active_false_not_implemented(conn: pika.BlockingConnection) -> None:
    """RabbitMQ refuses client-initiated flow(active=False): connection.close 540 NOT_IMPLEMENTED."""
    chan = conn.channel()
    with connection_error(540):
        chan.flow(False)
    assert conn.is_closed


def test_raw_channel_flow_false_reply(broker: Broker) -> None:
    """On the wire: connection.close 540 naming channel.flow (20, 20)."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Channel.Flow(active=False), 1)
        close = raw.expect_connection_close()
        assert (close.reply_code, close.class_id, close.method_id) == (540, 20, 20)


def test_channel_error_closes_only_that_channel(conn: pika.BlockingConnection, qname: str) -> None:
    """A 404 on one channel closes it; other channels and the connection keep working."""
    good = conn.channel()
    bad = conn.channel()
    good.queue_declare(qname, exclusive=True)
    with channel_error(404):
        bad.queue_declare(qname + ".missing", passive=True)
    assert bad.is_closed
    assert good.is_open and conn.is_open
    good.basic_publish("", qname, b"x")
    assert good.basic_get(qname, auto_ack=True)[2] == b"x"
    fresh = conn.channel()
    assert fresh.queue_declare(qname, passive=True).method.message_count == 0


def test_closed_channel_rejects_use_client_side(conn: pika.BlockingConnection) -> None:
    """Using a channel after closing it fails in the client (pika ChannelWrongStateError)."""
    chan = conn.channel()
    chan.close()
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        chan.queue_declare("", exclusive=True)
    assert conn.is_open


def test_raw_method_on_closed_channel_is_channel_error(broker: Broker) -> None:
    """After channel.close/close-ok, a method on that channel number: connection.close 504 (50, 10)."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0), 1)
        raw.expect(commands.Channel.CloseOk)
        raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        close = raw.expect_connection_close()
        assert (close.reply_code, close.class_id, close.method_id) == (504, 50, 10)


def test_raw_frames_after_server_channel_close_are_discarded(broker: Broker) -> None:
    """After the broker sends channel.close, methods on that channel are ignored until
    close-ok; then the channel number can be reopened."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Queue.Declare(queue="smartbroker.surely.missing.q", passive=True), 1)
        ch, close = raw.read_frame()
        assert ch == 1 and isinstance(close, commands.Channel.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
        raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)  # dropped
        raw.send_frame(commands.Channel.CloseOk(), 1)
        raw.send_frame(commands.Channel.Open(), 1)
        ch, value = raw.read_frame()
        assert ch == 1 and isinstance(value, commands.Channel.OpenOk)


def test_aio_pika_channel_error_keeps_connection(broker_url: str, qname: str) -> None:
    """aio-pika: a channel-level 404 raises ChannelNotFoundEntity; the connection survives."""

    async def body() -> None:
        connection = await aio_pika.connect(broker_url)
        try:
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(qname, passive=True)
            assert not connection.is_closed
            other = await connection.channel()
            queue = await other.declare_queue(qname, exclusive=True)
            await other.default_exchange.publish(aio_pika.Message(b"ok"), routing_key=qname)
            msg = await queue.get(timeout=5)
            assert msg.body == b"ok"
            await msg.ack()
        finally:
            await connection.close()

    run(body)
