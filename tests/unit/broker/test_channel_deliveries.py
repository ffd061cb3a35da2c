"""Deliveries and settlements on a Channel with a fake connection: basic.deliver bytes,
prefetch credit given back by ack, requeue on nack and on teardown, RabbitMQ's refusal of
an unknown delivery tag."""

from __future__ import annotations

import pytest
from broker_fakes import FakeConnection, new_broker, publish
from pamqp import commands

from smartbroker.broker.channel import Channel
from smartbroker.broker.consumer import ChannelConsumer
from smartbroker.errors import ChannelError
from smartbroker.protocol import codec


@pytest.fixture
def conn() -> FakeConnection:
    conn = FakeConnection(new_broker())
    conn.vhost.declare_queue("q")
    return conn


def consume(conn: FakeConnection, ch: Channel, prefetch: int = 0,
            no_ack: bool = False) -> ChannelConsumer:
    consumer = ChannelConsumer(ch, conn.vhost.queues["q"], "ctag", no_ack=no_ack,
                               exclusive=False, prefetch=prefetch)
    ch.add_consumer(consumer)
    return consumer


def delivered(conn: FakeConnection, ch: Channel, tag: int, body: bytes,
              redelivered: bool = False) -> list[bytes]:
    """The bytes a client reads for one delivery from queue q (no properties)."""
    header = codec.encode_header(len(body), commands.Basic.Properties())
    return [codec.deliver_frame(ch.number, codec.shortstr("ctag"), tag, redelivered,
                                codec.shortstr("") + codec.shortstr("q")),
            *codec.content_frames(ch.number, header, body, conn.frame_max)]


def test_prefetch_one_delivers_the_next_message_after_each_ack(conn) -> None:
    ch = conn.open_channel()
    consume(conn, ch, prefetch=1)
    publish(ch, "", "q", b"a")
    publish(ch, "", "q", b"b")
    assert conn.flush() == delivered(conn, ch, 1, b"a")
    ch.ack(1, False)
    assert conn.flush() == delivered(conn, ch, 2, b"b")
    ch.ack(2, False)
    assert conn.flush() == []
    assert conn.vhost.queues["q"].message_count == 0


def test_nack_with_requeue_redelivers(conn) -> None:
    ch = conn.open_channel()
    consume(conn, ch, prefetch=1)
    publish(ch, "", "q", b"a")
    conn.flush()
    ch.nack(1, False, True)
    assert conn.flush() == delivered(conn, ch, 2, b"a", redelivered=True)


def test_unknown_delivery_tag_is_refused(conn) -> None:
    ch = conn.open_channel()
    with pytest.raises(ChannelError) as err:
        ch.ack(5, False)
    assert (err.value.code, err.value.text) == (406, "unknown delivery tag 5")


def test_teardown_requeues_unacked_deliveries(conn) -> None:
    ch = conn.open_channel()
    consume(conn, ch)
    publish(ch, "", "q", b"a")
    publish(ch, "", "q", b"b")
    conn.flush()
    assert conn.vhost.queues["q"].message_count == 0
    ch.teardown()
    assert conn.vhost.queues["q"].message_count == 2
    assert ch.consumers == {}
