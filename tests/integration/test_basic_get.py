"""basic.get: get and get-empty, and delivery tags increasing per channel."""

from __future__ import annotations

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from .basic_helpers import Collector, publish_confirmed
from .helpers import (
    wait_until,
)

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
