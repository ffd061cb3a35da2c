"""Message TTL for a classic queue: a heap of expiry times and one timer on the earliest.

Expired messages leave even when nobody reads (RabbitMQ only drops per-message-TTL
messages when they reach the head). Entries that were delivered or removed meanwhile are
skipped when they surface; the timer is re-armed for the next due entry.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

from smartbroker.queues.base import QueueEntry


class MessageExpiry:
    def __init__(self, call_later: Callable[[float, Callable[[], None]], Any],
                 expire: Callable[[QueueEntry], None]) -> None:
        self._call_later = call_later
        self._expire = expire  # take a ready entry out and dead-letter it
        self._heap: list[tuple[float, int, QueueEntry]] = []
        self._order = itertools.count()
        self._timer: Any = None
        self._due: float | None = None

    def __bool__(self) -> bool:
        return bool(self._heap)

    def track(self, entry: QueueEntry) -> None:
        due = entry.expires_at
        assert due is not None
        heapq.heappush(self._heap, (due, next(self._order), entry))
        if self._due is None or due < self._due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = self._call_later(max(due - time.monotonic(), 0.0) + 0.001, self.run)

    def run(self) -> None:
        """Expire every ready entry whose time has come (the timer's callback)."""
        self._timer = None
        self._due = None
        heap = self._heap
        now = time.monotonic()
        try:
            while heap and heap[0][0] <= now:
                _, _, entry = heapq.heappop(heap)
                if entry.ready:
                    self._expire(entry)
        finally:  # whatever one entry did, the timer keeps running for the others
            while heap and not heap[0][2].ready:  # delivered or removed: no longer expiring here
                heapq.heappop(heap)
            if heap:
                self._arm(heap[0][0])

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
