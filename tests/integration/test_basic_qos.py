"""basic.qos: prefetch-count per consumer and global, zero, auto-ack, and the
unsupported prefetch-size."""

from __future__ import annotations

import pika
import pika.exceptions

from .basic_helpers import Collector, publish_confirmed
from .helpers import (
    connection_error,
    ready_count,
    wait_until,
)

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
