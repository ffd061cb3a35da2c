"""Classic queue requeue: requeued messages return to their original position and are redelivered."""

from __future__ import annotations

import pytest
from classic_queue_helpers import (
    FakeConsumer,
    body,
    drain,
    give,
    publish,
    requeue,
)

# --------------------------------------------------------------------------- requeue


def test_requeue_goes_back_to_original_position_with_consumer(q):
    c = FakeConsumer(credit=5)
    q.add_consumer(c)
    publish(q, *range(1, 9))
    assert c.bodies == [1, 2, 3, 4, 5]
    by_body = {body(e): e for e in c.received}
    requeue(q, [by_body[4]])
    requeue(q, [by_body[2]])
    assert q.message_count == 5
    c.received.clear()
    give(q, c, 10)
    assert c.bodies == [2, 4, 6, 7, 8]
    assert [e.redelivered for e in c.received] == [True, True, False, False, False]
    assert [e.delivery_count for e in c.received] == [2, 2, 1, 1, 1]


def test_requeue_goes_back_to_original_position_with_get(q):
    publish(q, *range(1, 9))
    got = {body(e): e for e in (q.get() for _ in range(5))}
    requeue(q, [got[4]])
    requeue(q, [got[2]])
    assert [body(q.get()) for _ in range(3)] == [2, 4, 6]


@pytest.mark.parametrize("order", [
    pytest.param([1, 2, 3], id="in-order"),
    pytest.param([3, 2, 1], id="reversed"),
    pytest.param([2, 3, 1], id="shuffled"),
])
def test_requeue_many_restores_original_order(q, order):
    publish(q, 1, 2, 3, 4)
    got = {body(e): e for e in (q.get() for _ in range(3))}
    requeue(q, [got[n] for n in order])
    entries = [q.get() for _ in range(4)]
    assert [body(e) for e in entries] == [1, 2, 3, 4]
    assert [e.redelivered for e in entries] == [True, True, True, False]


def test_requeue_before_later_publishes(q):
    publish(q, 1, 2)
    first = q.get()
    publish(q, 3)
    requeue(q, [first])
    assert drain(q) == [1, 2, 3]


def test_requeued_message_redelivered_again(q):
    publish(q, 1)
    for attempt in range(1, 4):
        entry = q.get()
        assert body(entry) == 1
        assert entry.delivery_count == attempt
        assert entry.redelivered is (attempt > 1)
        requeue(q, [entry])
    assert q.message_count == 1


def test_requeue_dispatches_to_waiting_consumer(q):
    publish(q, 1)
    entry = q.get()
    c = FakeConsumer()
    q.add_consumer(c)
    assert c.received == []
    requeue(q, [entry])
    assert c.bodies == [1]
    assert c.received[0].redelivered is True


def test_ready_bytes_accounting(q):
    publish(q, 1, 22, 333)
    assert q.ready.bytes == 6
    e = q.get()
    assert q.ready.bytes == 5
    requeue(q, [e])
    assert q.ready.bytes == 6
    q.purge()
    assert q.ready.bytes == 0
