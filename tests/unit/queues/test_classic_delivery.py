"""Classic queue delivery: FIFO order, round-robin across consumers, credit and prefetch."""

from __future__ import annotations

from classic_queue_helpers import (
    FakeConsumer,
    drain,
    give,
    publish,
)

# --------------------------------------------------------------------------- order


def test_get_is_fifo(q):
    publish(q, *range(1, 11))
    assert q.message_count == 10
    assert drain(q) == list(range(1, 11))
    assert q.message_count == 0
    assert q.get() is None


def test_consumer_added_later_receives_backlog_in_order(q):
    publish(q, 1, 2, 3)
    c = FakeConsumer()
    q.add_consumer(c)
    publish(q, 4, 5)
    assert c.bodies == [1, 2, 3, 4, 5]
    assert q.message_count == 0


def test_fresh_deliveries_are_not_redelivered(q):
    c = FakeConsumer()
    q.add_consumer(c)
    publish(q, 1, 2)
    assert [e.redelivered for e in c.received] == [False, False]
    assert [e.delivery_count for e in c.received] == [1, 1]


# --------------------------------------------------------------------------- round-robin and credit


def test_round_robin_across_two_consumers(q):
    a, b = FakeConsumer("a"), FakeConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    publish(q, *range(1, 7))
    assert a.bodies == [1, 3, 5]
    assert b.bodies == [2, 4, 6]


def test_round_robin_backlog_is_shared_when_credit_returns(q):
    a, b = FakeConsumer("a", credit=0), FakeConsumer("b", credit=0)
    q.add_consumer(a)
    q.add_consumer(b)
    publish(q, *range(1, 7))
    give(q, a, 10, dispatch=False)
    give(q, b, 10)
    assert sorted(a.bodies + b.bodies) == list(range(1, 7))
    assert abs(len(a.bodies) - len(b.bodies)) <= 1
    assert a.bodies == sorted(a.bodies) and b.bodies == sorted(b.bodies)


def test_round_robin_skips_consumer_without_credit(q):
    a, b = FakeConsumer("a", credit=1), FakeConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    publish(q, 1, 2, 3, 4)
    assert a.bodies == [1]
    assert b.bodies == [2, 3, 4]


def test_no_credit_means_no_delivery_until_dispatch_after_credit(q):
    c = FakeConsumer(credit=0)
    q.add_consumer(c)
    publish(q, 1, 2, 3)
    assert c.received == []
    assert q.message_count == 3
    give(q, c, 2)
    assert c.bodies == [1, 2]
    assert q.message_count == 1
    give(q, c, 1)
    assert c.bodies == [1, 2, 3]
    assert q.message_count == 0


def test_prefetch_limits_in_flight(q):
    c = FakeConsumer(credit=2)
    q.add_consumer(c)
    publish(q, *range(1, 6))
    assert c.bodies == [1, 2]
    assert q.message_count == 3
    assert q.unacked_count == 2


def test_dispatch_without_consumers_is_a_no_op(q):
    publish(q, 1)
    q.dispatch()
    assert q.message_count == 1


def test_removed_consumer_gets_nothing_more(q):
    a, b = FakeConsumer("a"), FakeConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    q.remove_consumer(a)
    publish(q, 1, 2, 3)
    assert a.bodies == []
    assert b.bodies == [1, 2, 3]
    assert q.consumer_count == 1
