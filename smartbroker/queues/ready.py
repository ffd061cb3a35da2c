"""The ready list of a classic queue: FIFO, with requeued entries back at their old place.

Fresh entries append to a deque. A requeued entry was once at the head, so its sequence
number is below every entry still in the deque; requeued entries therefore live in a
min-heap that is always drained before the deque. Entries removed from the middle (per-
message TTL expiry) are only marked and skipped when they reach the head, so push, pop,
remove and requeue are all O(1) or O(log n). ``PriorityReady`` keeps one list per priority.

Memory: a message that needs no per-queue state yet (transient, no TTL, never delivered)
waits in the deque as the bare ``Message``; its ``QueueEntry`` is made when it leaves the
ready list (or is looked at). One million waiting messages then cost no entry objects.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator

from smartbroker.message import Message
from smartbroker.queues.base import QueueEntry


def _entry(item: QueueEntry | Message) -> QueueEntry:
    """The entry for a deque item: bare messages get theirs now (still ready)."""
    if item.__class__ is QueueEntry:
        return item  # type: ignore[return-value]
    entry = QueueEntry(item)  # type: ignore[arg-type]
    entry.ready = True
    return entry


class ReadyList:
    """``next_position``: the queue's position counter (an entry gets its position when it
    leaves; only the order within one queue matters)."""

    __slots__ = ("_fresh", "_requeued", "count", "bytes", "_next_position")

    def __init__(self, next_position: Callable[[], int]) -> None:
        self._next_position = next_position
        self._fresh: deque[QueueEntry | Message] = deque()
        self._requeued: list[QueueEntry] = []
        self.count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def push(self, entry: QueueEntry) -> None:
        entry.ready = True
        self._fresh.append(entry)
        self.count += 1
        self.bytes += entry.size

    def push_message(self, message: Message) -> None:
        """A fresh message with no per-queue state: kept bare until it leaves."""
        self._fresh.append(message)
        self.count += 1
        self.bytes += len(message.body)

    def requeue(self, entry: QueueEntry) -> None:
        entry.ready = True
        heapq.heappush(self._requeued, entry)
        self.count += 1
        self.bytes += entry.size

    def _skip_removed(self) -> None:
        while self._requeued and not self._requeued[0].ready:
            heapq.heappop(self._requeued)
        while self._fresh and not self._fresh[0].ready:
            self._fresh.popleft()

    def peek(self) -> QueueEntry | None:
        if not self.count:
            return None
        self._skip_removed()
        if self._requeued:
            return self._requeued[0]
        head = self._fresh[0]
        if head.__class__ is not QueueEntry:
            head = self._fresh[0] = _entry(head)
        return head  # type: ignore[return-value]

    def pop(self) -> QueueEntry:
        if self._requeued or not self._fresh[0].ready:
            self._skip_removed()
        if self._requeued:
            entry = heapq.heappop(self._requeued)
        else:
            entry = self._fresh.popleft()
            if entry.__class__ is not QueueEntry:
                entry = QueueEntry(entry)  # type: ignore[arg-type]
                entry.seq = self._next_position()
            elif entry.seq is None:
                entry.seq = self._next_position()
        entry.ready = False
        self.count -= 1
        self.bytes -= entry.size
        return entry

    pop_oldest = pop  # one priority level: the oldest is the head

    def __iter__(self) -> Iterator[QueueEntry]:
        """Ready entries in delivery order, without taking them (browsing). Bare messages
        get their entries first, so a browsed entry can later be ``remove``d."""
        self._fresh = deque(map(_entry, self._fresh))
        for entry in sorted(self._requeued):
            if entry.ready:
                yield entry
        for entry in self._fresh:
            if entry.ready:
                yield entry  # type: ignore[misc]

    def remove(self, entry: QueueEntry) -> None:
        """Take an entry out wherever it is (lazily: it is skipped when it reaches the head)."""
        if entry.ready:
            entry.ready = False
            self.count -= 1
            self.bytes -= entry.size

    def clear(self) -> list[QueueEntry]:
        entries = ([e for e in sorted(self._requeued) if e.ready]
                   + [_entry(e) for e in self._fresh if e.ready])
        for entry in entries:
            entry.ready = False
        self._fresh.clear()
        self._requeued.clear()
        self.count = 0
        self.bytes = 0
        return entries


class PriorityReady:
    """One ReadyList per priority 0..max; higher priorities first, FIFO within one."""

    __slots__ = ("_levels", "_max")

    def __init__(self, max_priority: int, next_position: Callable[[], int]) -> None:
        self._max = max_priority
        self._levels = [ReadyList(next_position) for _ in range(max_priority + 1)]

    def _level(self, entry: QueueEntry) -> ReadyList:
        return self._levels[min(max(entry.priority, 0), self._max)]

    @property
    def count(self) -> int:
        return sum(level.count for level in self._levels)

    @property
    def bytes(self) -> int:
        return sum(level.bytes for level in self._levels)

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return any(level.count for level in self._levels)

    def push(self, entry: QueueEntry) -> None:
        self._level(entry).push(entry)

    def push_message(self, message: Message) -> None:
        self._levels[min(max(message.priority, 0), self._max)].push_message(message)

    def requeue(self, entry: QueueEntry) -> None:
        self._level(entry).requeue(entry)

    def peek(self) -> QueueEntry | None:
        for level in reversed(self._levels):
            if level.count:
                return level.peek()
        return None

    def pop(self) -> QueueEntry:
        for level in reversed(self._levels):
            if level.count:
                return level.pop()
        raise IndexError("pop from an empty queue")

    def pop_oldest(self) -> QueueEntry:
        """drop-head overflow drops the lowest-priority head first, as RabbitMQ does."""
        for level in self._levels:
            if level.count:
                return level.pop()
        raise IndexError("pop from an empty queue")

    def remove(self, entry: QueueEntry) -> None:
        self._level(entry).remove(entry)

    def __iter__(self) -> Iterator[QueueEntry]:
        for level in reversed(self._levels):
            yield from level

    def clear(self) -> list[QueueEntry]:
        return [e for level in reversed(self._levels) for e in level.clear()]
