"""Classic queue settlement actions: dead-letters and delivery limits handed to the host."""

from __future__ import annotations

from classic_queue_helpers import (
    publish,
    reject,
    requeue,
)

from smartbroker.queues.base import NoHost, Settle
from smartbroker.queues.classic import ClassicQueue

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
