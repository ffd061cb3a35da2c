"""basic.ack / nack / reject / recover: acknowledgement (single and multiple), requeue order
and redelivered flag, bad delivery tags, and requeue of unacked messages on close."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .basic_helpers import Collector, publish_confirmed
from .helpers import (
    channel_error,
    connect,
    connection_error,
    drain,
    eventually,
    ready_count,
    wait_until,
)

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
