"""Publisher confirms on a Channel with a fake connection: one ``basic.ack multiple`` per
loop pass, nacks in sequence order, and acks held back until the fsync that covers them."""

from __future__ import annotations

import pytest
from broker_fakes import FakeConnection, new_broker, publish

from smartbroker.broker.channel import Channel
from smartbroker.protocol import codec


@pytest.fixture
def conn() -> FakeConnection:
    conn = FakeConnection(new_broker())
    conn.vhost.declare_queue("q")
    return conn


@pytest.fixture
def ch(conn: FakeConnection) -> Channel:
    ch = conn.open_channel(2)
    ch.confirm = True
    return ch


def test_publishes_in_one_pass_are_confirmed_by_one_multiple_ack(conn, ch) -> None:
    for _ in range(3):
        publish(ch, "", "q")
    assert conn.flush() == [codec.ack_frame(2, 3, True)]
    publish(ch, "", "nowhere")  # unroutable is confirmed too (RabbitMQ)
    assert conn.flush() == [codec.ack_frame(2, 4, False)]
    assert conn.flush() == []


def test_without_confirm_mode_nothing_is_confirmed(conn) -> None:
    ch = conn.open_channel()
    publish(ch, "", "q")
    assert conn.flush() == []
    assert ch.publish_seq == 0


def test_nacks_are_sent_in_order_between_acks(conn, ch) -> None:
    ch.confirm_settled(1, True, False)
    ch.confirm_settled(2, False, False)
    ch.confirm_settled(3, True, False)
    ch.confirm_settled(4, True, False)
    assert conn.flush() == [codec.ack_frame(2, 1, False), codec.nack_frame(2, 2, False),
                            codec.ack_frame(2, 4, True)]


def test_acks_wait_for_the_fsync_that_covers_them(conn, ch) -> None:
    ch.confirm_settled(1, True, True)  # stored: confirm after fsync
    ch.confirm_settled(2, True, False)
    assert conn.flush() == []
    mark = ch.sync_mark()
    assert mark == 1
    ch.synced(mark)
    assert conn.flush() == [codec.ack_frame(2, 2, True)]


def test_a_failed_fsync_nacks_what_waited_for_it(conn, ch) -> None:
    ch.confirm_settled(1, True, False)
    ch.confirm_settled(2, True, True)
    ch.confirm_settled(3, True, True)
    ch.sync_failed(ch.sync_mark())
    assert conn.flush() == [codec.ack_frame(2, 1, False), codec.nack_frame(2, 2, False),
                            codec.nack_frame(2, 3, False)]



def test_a_failed_sync_nacks_in_order_behind_a_later_refusal(conn, ch) -> None:
    """A replicated queue's leader steps down: the publishes waiting for its commit are
    nacked when the round fails, AFTER later ones were already refused at routing. Each
    is nacked, none covered by an ack multiple sent past it (chaos run: a paused leader's
    burst was confirmed and lost)."""
    ch.confirm_settled(1, True, True)
    ch.confirm_settled(2, True, True)  # waiting for the commit
    ch.confirm_settled(3, False, False)  # refused: the queue no longer leads
    mark = ch.sync_mark()
    ch.sync_failed(mark)
    assert conn.flush() == [codec.nack_frame(2, 1, False), codec.nack_frame(2, 2, False),
                            codec.nack_frame(2, 3, False)]
