"""The ready list of a classic queue: FIFO, with requeued entries back at their old place.

Fresh entries append to a deque. A requeued entry was once at the head, so its sequence
number is below every entry still in the deque; requeued entries therefore live in a
min-heap that is always drained before the deque. Push, pop and requeue are O(1)/O(log n).
"""

from __future__ import annotations

import heapq
from collections import deque

from smartbroker.queues.base import QueueEntry


class ReadyList:
    __slots__ = ("_fresh", "_requeued", "bytes")

    def __init__(self) -> None:
        self._fresh: deque[QueueEntry] = deque()
        self._requeued: list[QueueEntry] = []
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._fresh) + len(self._requeued)

    def __bool__(self) -> bool:
        return bool(self._fresh) or bool(self._requeued)

    def push(self, entry: QueueEntry) -> None:
        self._fresh.append(entry)
        self.bytes += len(entry.message.body)

    def requeue(self, entry: QueueEntry) -> None:
        heapq.heappush(self._requeued, entry)
        self.bytes += len(entry.message.body)

    def peek(self) -> QueueEntry | None:
        if self._requeued:
            return self._requeued[0]
        return self._fresh[0] if self._fresh else None

    def pop(self) -> QueueEntry:
        entry = heapq.heappop(self._requeued) if self._requeued else self._fresh.popleft()
        self.bytes -= len(entry.message.body)
        return entry

    def clear(self) -> list[QueueEntry]:
        entries = sorted(self._requeued) + list(self._fresh)
        self._fresh.clear()
        self._requeued.clear()
        self.bytes = 0
        return entries
