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


class RecordingDeadLetterer:
    """The channel's DeadLetterer: records each batch of actions, then routes it."""

    def __init__(self, vhost) -> None:
        self.vhost = vhost
        self.batches: list[list[tuple[str, bytes, str]]] = []

    def perform(self, actions) -> None:
        self.batches.append([(a.queue.name, a.message.body, a.reason) for a in actions])
        self.vhost.perform(actions)


def dead_lettering(conn: FakeConnection) -> RecordingDeadLetterer:
    vhost = conn.vhost
    vhost.declare_exchange("dlx", "fanout")
    dlq, _ = vhost.declare_queue("dlq")
    vhost.bind("dlx", dlq, "", {})
    for name in ("w1", "w2"):
        vhost.declare_queue(name, arguments={"x-dead-letter-exchange": "dlx"})
    return RecordingDeadLetterer(vhost)


def test_nack_without_requeue_performs_the_dead_letter_actions_per_queue(conn) -> None:
    performer = dead_lettering(conn)
    ch = Channel(conn, 1, conn.session, performer)
    for name, body in (("w1", b"a"), ("w2", b"b"), ("w1", b"c")):
        publish(ch, "", name, body)
    for name in ("w1", "w2", "w1"):
        entry = conn.vhost.queues[name].get()
        ch.send_get_ok(conn.vhost.queues[name], entry, no_ack=False)
    ch.nack(3, True, False)
    assert performer.batches == [[("w1", b"a", "rejected"), ("w1", b"c", "rejected")],
                                 [("w2", b"b", "rejected")]]
    dlq = conn.vhost.queues["dlq"]
    assert [dlq.get(no_ack=True).message.body for _ in range(3)] == [b"a", b"c", b"b"]
    assert ch.unacked_total == 0


def test_requeue_and_ack_have_no_actions(conn) -> None:
    performer = dead_lettering(conn)
    ch = Channel(conn, 1, conn.session, performer)
    publish(ch, "", "w1", b"a")
    publish(ch, "", "w1", b"b")
    for _ in range(2):
        ch.send_get_ok(conn.vhost.queues["w1"], conn.vhost.queues["w1"].get(), no_ack=False)
    ch.nack(1, False, True)
    ch.ack(2, True)
    ch.recover()
    assert performer.batches == []
    assert conn.vhost.queues["w1"].message_count == 1
