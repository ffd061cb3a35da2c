"""Classic queue driven by fake consumers: order, round-robin, credit, requeue, lifecycle."""

from __future__ import annotations

import pytest

from smartbroker.message import Message
from smartbroker.queues.base import ACCEPTED, NoHost, QueueEntry, Settle
from smartbroker.queues.classic import ClassicQueue


def requeue(q: ClassicQueue, entries: list[QueueEntry]) -> None:
    """nack with requeue, as a channel does it: the dead-letters settling returns are
    routed through the queue's host."""
    for action in q.settle(Settle.REQUEUE, entries):
        q.host.dead_letter(action.queue, action.message, action.reason)


def reject(q: ClassicQueue, entry: QueueEntry) -> None:
    """nack without requeue, as a channel does it (see ``requeue``)."""
    for action in q.settle(Settle.DISCARD, [entry]):
        q.host.dead_letter(action.queue, action.message, action.reason)


class FakeConsumer:
    """A consumer with optional credit (None = unlimited) that records what it gets."""

    def __init__(self, tag: str = "c", credit: int | None = None, no_ack: bool = False,
                 exclusive: bool = False) -> None:
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = 0
        self.arguments: dict = {}
        self.unacked = 0
        self.parked = False  # the queue parks it without credit; ``give`` wakes it
        self.credit = credit
        self.received: list[QueueEntry] = []
        self.cancelled = 0

    def can_take(self) -> bool:
        return self.credit is None or self.credit > 0

    def deliver(self, queue: ClassicQueue, entry: QueueEntry) -> None:
        assert self.can_take(), "delivered to a consumer without credit"
        if self.credit is not None:
            self.credit -= 1
        self.received.append(entry)

    def cancelled_by_broker(self) -> None:
        self.cancelled += 1

    @property
    def bodies(self) -> list[int]:
        return [int(e.message.body) for e in self.received]


def give(q: ClassicQueue, consumer: FakeConsumer, credit: int, dispatch: bool = True) -> None:
    """Credit back, as a channel gives it: wake the consumer if parked, then dispatch."""
    consumer.credit = credit
    q.wake(consumer)
    if dispatch:
        q.dispatch()


class UnusedHost(NoHost):
    """Records the queues that tell their host they are unused (auto-delete)."""

    def __init__(self, fired: list) -> None:
        self.fired = fired

    def queue_unused(self, queue) -> None:
        self.fired.append(queue)


def msg(n: int) -> Message:
    return Message.build("", "q", str(n).encode())


def publish(q: ClassicQueue, *numbers: int) -> None:
    for n in numbers:
        assert q.publish(msg(n)) is ACCEPTED


def body(entry: QueueEntry | None) -> int | None:
    return None if entry is None else int(entry.message.body)


def drain(q: ClassicQueue) -> list[int]:
    out = []
    while (entry := q.get()) is not None:
        out.append(body(entry))
    return out


@pytest.fixture
def q() -> ClassicQueue:
    return ClassicQueue("q", "/")


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


# --------------------------------------------------------------------------- counts


def test_counts_and_exclusive_consumer_flag(q):
    assert (q.message_count, q.consumer_count, q.exclusive_consumer) == (0, 0, False)
    x = FakeConsumer("x", credit=0, exclusive=True)
    q.add_consumer(x)
    publish(q, 1, 2)
    assert (q.message_count, q.consumer_count, q.exclusive_consumer) == (2, 1, True)
    q.remove_consumer(x)
    assert q.exclusive_consumer is False


# --------------------------------------------------------------------------- settlement actions


class RecordingHost(NoHost):
    """A host that records the dead-letters a queue hands it."""

    def __init__(self) -> None:
        self.dead: list[tuple[str, bytes, str]] = []

    def dead_letter(self, queue, message, reason) -> None:
        self.dead.append((queue.name, message.body, reason))


DLX = {"x-dead-letter-exchange": "dlx"}


def test_settle_discard_returns_the_dead_letter_instead_of_routing_it():
    host = RecordingHost()
    q = ClassicQueue("q", "/", arguments=DLX, host=host)
    publish(q, 1)
    entry = q.get()
    actions = q.settle(Settle.DISCARD, [entry])
    assert [(a.queue, a.message.body, a.reason) for a in actions] == [(q, b"1", "rejected")]
    assert host.dead == [] and q.unacked_count == 0 and q.stats["dead_lettered"] == 1


def test_settle_requeue_past_the_delivery_limit_returns_a_delivery_limit_action():
    q = ClassicQueue("q", "/", arguments={**DLX, "x-delivery-limit": 1})
    publish(q, 1)
    q.settle(Settle.REQUEUE, [q.get()])  # first redelivery: within the limit
    actions = q.settle(Settle.REQUEUE, [q.get()])
    assert [a.reason for a in actions] == ["delivery_limit"]
    assert q.message_count == 0


def test_settle_without_a_dlx_has_no_action_and_ack_never_has_one():
    q = ClassicQueue("q", "/")
    publish(q, 1, 2)
    assert q.settle(Settle.DISCARD, [q.get()]) == []
    assert q.settle(Settle.ACK, [q.get()]) == []
    assert (q.message_count, q.unacked_count, q.stats["ack"]) == (0, 0, 1)


def test_reject_and_requeue_hand_the_actions_to_the_host():
    host = RecordingHost()
    q = ClassicQueue("q", "/", arguments={**DLX, "x-delivery-limit": 0}, host=host)
    publish(q, 1, 2)
    reject(q, q.get())
    requeue(q, [q.get()])
    assert host.dead == [("q", b"1", "rejected"), ("q", b"2", "delivery_limit")]


def test_timer_and_overflow_dead_letters_go_to_the_host_directly():
    host = RecordingHost()
    q = ClassicQueue("q", "/", arguments={**DLX, "x-max-length": 1}, host=host)
    publish(q, 1, 2)  # drop-head: 1 leaves as maxlen
    assert host.dead == [("q", b"1", "maxlen")]
