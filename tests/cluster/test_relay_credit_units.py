"""The credit a consumer's node grants a leader for a subscription whose basic.consume is
still on its way (``remote_consumer.Subscriptions.subscribe``, as when a replicated
queue's consumer carries on at a new leader), without a link.

The leader drops credit for a subscription it does not know yet; a consumer that acked
the old leader's deliveries while the new one was still taking over gave its credit
back before the new leader had its subscription, and got nothing more."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from smartbroker.cluster.forwarding_wire import CONSUME, Op
from smartbroker.cluster.remote_consumer import Subscriptions


class Consumer:
    def __init__(self, left: int) -> None:
        self.left = left
        self.tag, self.no_ack, self.exclusive, self.priority = "t", False, False, 0
        self.arguments: dict[str, Any] = {}
        self.parked = False

    def credit_left(self) -> int:
        return self.left

    def cancelled_by_broker(self) -> None:
        raise AssertionError("not cancelled: the leader accepted")


class Node:
    """What ``Subscriptions`` asks of its node: calls held until answered by the test."""

    def __init__(self) -> None:
        self.ops: list[tuple] = []
        self.calls: list[tuple[str, str, Any]] = []

    def send_op(self, peer: str, op: Op, sub: int, handle: int, count: int) -> None:
        self.ops.append((peer, op, sub, handle, count))

    def spawn_call(self, peer: str, method: str, payload: bytes, done: Any) -> None:
        self.calls.append((peer, method, done))


def test_no_credit_goes_to_the_leader_before_it_accepts_the_subscription() -> None:
    node = Node()
    subs = Subscriptions(node)  # type: ignore[arg-type]
    queue = SimpleNamespace(vhost="/", name="q", leader="n2", consumers=[])
    consumer = Consumer(0)  # its whole prefetch unacked (the old leader's deliveries)
    queue.consumers.append(consumer)
    subs.subscribe(queue, consumer)  # type: ignore[arg-type]
    [(peer, method, answered)] = node.calls
    assert (peer, method) == ("n2", CONSUME)
    sub = subs.by_consumer[id(consumer)]
    assert sub.granted == 0 and consumer.parked
    consumer.left = 4  # four of them acked meanwhile: their credit waits for the answer
    subs.top_up(consumer)  # type: ignore[arg-type]
    assert node.ops == []
    answered({"code": 0})  # the leader knows the subscription now: the credit goes
    assert node.ops == [("n2", Op.CREDIT, sub.sub, 0, 4)] and sub.granted == 4
    consumer.left = 5
    subs.top_up(consumer)  # type: ignore[arg-type]
    assert node.ops[-1] == ("n2", Op.CREDIT, sub.sub, 0, 1)


def test_a_consumer_cancelled_before_the_leader_took_it_is_cancelled_there_again() -> None:
    """basic.cancel while the basic.consume waits at a leader still taking over: the
    CANCEL reaches it first (an unknown subscription, ignored), then the CONSUME
    registers; once it answers, the CANCEL goes again, or the leader would keep a
    consumer nobody has."""
    node = Node()
    subs = Subscriptions(node)  # type: ignore[arg-type]
    queue = SimpleNamespace(vhost="/", name="q", leader="n2", consumers=[])
    consumer = Consumer(3)
    queue.consumers.append(consumer)
    subs.subscribe(queue, consumer)  # type: ignore[arg-type]
    [(_, _, answered)] = node.calls
    sub = subs.by_consumer[id(consumer)]
    subs.unsubscribe(queue, consumer)  # type: ignore[arg-type]
    assert node.ops == [("n2", Op.CANCEL, sub.sub, 0, 0)]
    answered({"code": 0})
    assert node.ops == [("n2", Op.CANCEL, sub.sub, 0, 0)] * 2
    assert not subs.subscribed(consumer)  # type: ignore[arg-type]
