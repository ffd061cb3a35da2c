"""Classic queue accounting: ready bytes, unacked counts, reject dropping a message, consumer counts."""

from __future__ import annotations

from classic_queue_helpers import (
    FakeConsumer,
    drain,
    publish,
    reject,
    requeue,
)

# --------------------------------------------------------------------------- unacked accounting


def test_unacked_counts_consumer_deliveries_and_settlements(q):
    c = FakeConsumer()
    q.add_consumer(c)
    publish(q, 1, 2, 3, 4)
    assert q.unacked_count == 4
    e1, e2, e3, e4 = c.received
    q.ack(e1)
    assert q.unacked_count == 3
    reject(q, e2)
    assert q.unacked_count == 2
    q.remove_consumer(c)
    requeue(q, [e3, e4])
    assert q.unacked_count == 0
    assert q.message_count == 2


def test_no_ack_consumer_leaves_nothing_unacked(q):
    c = FakeConsumer(no_ack=True)
    q.add_consumer(c)
    publish(q, 1, 2, 3)
    assert c.bodies == [1, 2, 3]
    assert q.unacked_count == 0


def test_get_counts_unacked_only_without_no_ack(q):
    publish(q, 1, 2)
    e1 = q.get(no_ack=True)
    assert q.unacked_count == 0
    e2 = q.get()
    assert q.unacked_count == 1
    q.ack(e2)
    assert q.unacked_count == 0
    assert e1 is not None


def test_reject_drops_message(q):
    publish(q, 1, 2)
    e = q.get()
    reject(q, e)
    assert drain(q) == [2]

# --------------------------------------------------------------------------- counts


def test_counts_and_exclusive_consumer_flag(q):
    assert (q.message_count, q.consumer_count, q.exclusive_consumer) == (0, 0, False)
    x = FakeConsumer("x", credit=0, exclusive=True)
    q.add_consumer(x)
    publish(q, 1, 2)
    assert (q.message_count, q.consumer_count, q.exclusive_consumer) == (2, 1, True)
    q.remove_consumer(x)
    assert q.exclusive_consumer is False
