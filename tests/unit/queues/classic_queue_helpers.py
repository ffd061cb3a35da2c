"""Shared helpers for the classic-queue tests: fake consumers, hosts, publish/drain shortcuts
and the ``q`` fixture."""

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
