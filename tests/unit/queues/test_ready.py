"""The ready list keeps fresh transient messages bare (no entry object) until they leave it;
every way of looking at or taking them must still hand out entries, in order."""

from __future__ import annotations

import itertools

from pamqp import commands

from smartbroker.message import Message
from smartbroker.queues.base import QueueEntry
from smartbroker.queues.ready import PriorityReady, ReadyList


def positions():
    """A fresh position counter, as each queue owns one."""
    return itertools.count(1).__next__


def msg(n: int, priority: int | None = None) -> Message:
    return Message.build("", "q", str(n).encode(), commands.Basic.Properties(priority=priority))


def bodies(entries: list[QueueEntry]) -> list[int]:
    return [int(e.message.body) for e in entries]


def test_bare_messages_come_out_as_entries_in_fifo_order_with_counts():
    ready = ReadyList(positions())
    for n in range(3):
        ready.push_message(msg(n))
    assert (ready.count, ready.bytes) == (3, 3)
    out = [ready.pop() for _ in range(3)]
    assert all(isinstance(e, QueueEntry) and not e.ready for e in out)
    assert bodies(out) == [0, 1, 2]
    assert out[0].seq < out[1].seq < out[2].seq
    assert (ready.count, ready.bytes) == (0, 0)


def test_peek_then_pop_hands_out_the_same_entry():
    ready = ReadyList(positions())
    ready.push_message(msg(7))
    peeked = ready.peek()
    assert peeked is ready.pop()
    assert peeked.seq is not None


def test_browsed_entries_can_be_removed_and_are_then_skipped():
    ready = ReadyList(positions())
    for n in range(4):
        ready.push_message(msg(n))
    browsed = list(ready)
    assert bodies(browsed) == [0, 1, 2, 3]
    ready.remove(browsed[0])
    ready.remove(browsed[2])
    assert ready.count == 2
    assert bodies([ready.pop(), ready.pop()]) == [1, 3]


def test_requeued_entry_goes_before_bare_messages_that_came_after_it():
    ready = ReadyList(positions())
    for n in range(3):
        ready.push_message(msg(n))
    first = ready.pop()
    ready.requeue(first)
    assert bodies([ready.pop() for _ in range(3)]) == [0, 1, 2]


def test_mixed_entries_and_bare_messages_keep_order_and_clear_returns_all():
    ready = ReadyList(positions())
    ready.push_message(msg(0))
    ready.push(QueueEntry(msg(1)))
    ready.push_message(msg(2))
    cleared = ready.clear()
    assert bodies(cleared) == [0, 1, 2]
    assert all(isinstance(e, QueueEntry) and not e.ready for e in cleared)
    assert ready.count == 0 and not ready


def test_priority_levels_take_bare_messages_by_their_priority():
    ready = PriorityReady(5, positions())
    ready.push_message(msg(1, priority=1))
    ready.push_message(msg(5, priority=5))
    ready.push_message(msg(0))
    assert bodies([ready.pop() for _ in range(3)]) == [5, 1, 0]
