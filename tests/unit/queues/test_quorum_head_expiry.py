"""Quorum queues expire messages only from the head (rabbit_fifo expire_msgs): a message
whose TTL runs out behind a live one waits, counted, and goes as soon as it is the head,
whether the head left by basic.get or by a delivery to a consumer."""

from __future__ import annotations

import time

from smartbroker.queues.base import NoHost, QueueSpec
from smartbroker.queues.quorum import QuorumQueue
from tests.unit.queues.classic_queue_helpers import FakeConsumer, msg


def queue_with_overdue_second() -> QuorumQueue:
    q = QuorumQueue.declare(QueueSpec("q", "/", durable=True,
                                      arguments={"x-queue-type": "quorum"}), NoHost())
    for n in range(3):
        q.publish(msg(n))
    second = list(q.ready)[1]
    second.expires_at = time.monotonic() - 1
    q._expire(second)  # its timer: not the head, so it stays
    assert q.message_count == 3 and "dispatch" in q.__dict__
    return q


def test_an_overdue_message_goes_when_a_get_makes_it_the_head() -> None:
    q = queue_with_overdue_second()
    got = q.get()
    assert got is not None and got.message.body == b"0"
    assert q.message_count == 1 and "dispatch" not in q.__dict__
    third = q.get()
    assert third is not None and third.message.body == b"2"


def test_an_overdue_message_goes_when_a_delivery_makes_it_the_head() -> None:
    q = queue_with_overdue_second()
    consumer = FakeConsumer(credit=1)
    q.add_consumer(consumer)
    assert [e.message.body for e in consumer.received] == [b"0"]
    assert q.message_count == 1 and "dispatch" not in q.__dict__
