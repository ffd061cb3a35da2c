"""Classic queue lifecycle: purge, delete and auto-delete."""

from __future__ import annotations

from classic_queue_helpers import (
    FakeConsumer,
    UnusedHost,
    give,
    publish,
    requeue,
)

from smartbroker.queues.classic import ClassicQueue

# --------------------------------------------------------------------------- purge and delete


def test_purge_returns_ready_count_and_keeps_unacked(q):
    c = FakeConsumer(credit=2)
    q.add_consumer(c)
    publish(q, *range(1, 6))
    assert q.purge() == 3
    assert q.message_count == 0
    assert q.unacked_count == 2
    assert q.purge() == 0


def test_purge_counts_requeued_entries(q):
    publish(q, 1, 2, 3)
    e = q.get()
    requeue(q, [e])
    assert q.purge() == 3
    assert q.get() is None


def test_purged_queue_keeps_consumers_and_still_delivers(q):
    c = FakeConsumer(credit=0)
    q.add_consumer(c)
    publish(q, 1, 2)
    q.purge()
    give(q, c, 5, dispatch=False)
    publish(q, 3)
    assert c.bodies == [3]


def test_delete_cancels_consumers_and_returns_ready_count(q):
    a, b = FakeConsumer("a", credit=1), FakeConsumer("b", credit=1)
    q.add_consumer(a)
    q.add_consumer(b)
    publish(q, 1, 2, 3, 4, 5)
    assert q.delete() == 3
    assert (a.cancelled, b.cancelled) == (1, 1)
    assert q.consumer_count == 0
    assert q.message_count == 0
    assert q.deleted is True


def test_requeue_after_delete_drops_entries(q):
    c = FakeConsumer()
    q.add_consumer(c)
    publish(q, 1, 2)
    q.delete()
    requeue(q, list(c.received))
    assert q.message_count == 0
    assert q.unacked_count == 0


def test_delete_does_not_fire_auto_delete_callback():
    fired = []
    q = ClassicQueue("q", "/", auto_delete=True, host=UnusedHost(fired))
    c = FakeConsumer()
    q.add_consumer(c)
    q.delete()
    assert c.cancelled == 1
    assert fired == []


# --------------------------------------------------------------------------- auto-delete


def test_auto_delete_fires_after_last_consumer_leaves():
    fired = []
    q = ClassicQueue("q", "/", auto_delete=True, host=UnusedHost(fired))
    a, b = FakeConsumer("a"), FakeConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    q.remove_consumer(a)
    assert fired == []
    q.remove_consumer(b)
    assert fired == [q]


def test_auto_delete_never_fires_without_a_consumer():
    fired = []
    q = ClassicQueue("q", "/", auto_delete=True, host=UnusedHost(fired))
    publish(q, 1)
    q.get()
    q.purge()
    q.remove_consumer(FakeConsumer())  # never added
    assert fired == []


def test_auto_delete_removing_unknown_consumer_does_not_fire():
    fired = []
    q = ClassicQueue("q", "/", auto_delete=True, host=UnusedHost(fired))
    a = FakeConsumer("a")
    q.add_consumer(a)
    q.remove_consumer(FakeConsumer("stranger"))
    assert fired == []
    q.remove_consumer(a)
    q.remove_consumer(a)  # second removal of the same consumer fires nothing more
    assert fired == [q]


def test_not_auto_delete_never_fires():
    fired = []
    q = ClassicQueue("q", "/", auto_delete=False, host=UnusedHost(fired))
    a = FakeConsumer()
    q.add_consumer(a)
    q.remove_consumer(a)
    assert fired == []
