"""ConsumerRings: who takes the next message (round-robin by priority, parking without
credit, single-active-consumer and its hand-over)."""

from __future__ import annotations

from typing import Any

from smartbroker.queues.rings import ConsumerRings


class Stub:
    def __init__(self, tag: str, priority: int = 0, credit: bool = True) -> None:
        self.tag = tag
        self.priority = priority
        self.credit = credit
        self.unacked = 0
        self.parked = False
        self.arguments: dict[str, Any] = {}

    def can_take(self) -> bool:
        return self.credit


def test_round_robin_within_the_highest_priority_with_credit() -> None:
    rings = ConsumerRings()
    low, a, b = Stub("low"), Stub("a", 5), Stub("b", 5)
    for c in (low, a, b):
        rings.add(c)
    assert [rings.next().tag for _ in range(3)] == ["a", "b", "a"]
    assert rings.next(peek=True) is b and rings.next() is b
    a.credit = b.credit = False
    assert rings.next() is low
    assert a.parked and b.parked
    b.credit = True
    rings.wake(b)
    assert rings.next() is b


def test_single_active_consumer_hands_over_once_the_old_one_settled() -> None:
    rings = ConsumerRings(single_active=True)
    first, second = Stub("first"), Stub("second")
    rings.add(first)
    rings.add(second)
    assert [rings.next().tag for _ in range(2)] == ["first", "first"]
    first.unacked = 2
    assert rings.remove(first)
    assert rings.waiting_for is first
    assert rings.next() is None
    first.unacked = 1
    assert not rings.handed_over()
    first.unacked = 0
    assert rings.handed_over()
    assert rings.waiting_for is None and rings.next() is second
    assert not rings.handed_over()


def test_a_consumer_leaving_without_unacked_hands_over_at_once() -> None:
    rings = ConsumerRings(single_active=True)
    first, second = Stub("first"), Stub("second")
    rings.add(first)
    rings.add(second)
    assert rings.remove(first)
    assert rings.waiting_for is None and rings.next() is second
    assert not rings.remove(first)
