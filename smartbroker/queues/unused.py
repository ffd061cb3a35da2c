"""``x-expires`` for a classic queue: it is deleted once unused (no consumers, and not
declared or polled) for the period. One timer, due at last use + period; when it fires
after a later use, it is re-armed from that use."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class Expirable(Protocol):
    settings: Any  # QueueSettings: ``expires`` in ms or None
    deleted: bool
    last_used: float  # monotonic seconds
    consumers: list[Any]


class UnusedExpiry:
    def __init__(self, queue: Expirable, call_later: Callable[[float, Callable[[], None]], Any],
                 unused: Callable[[], None]) -> None:
        self._queue = queue
        self._call_later = call_later
        self._unused = unused  # delete the queue
        self._timer: Any = None

    def schedule(self) -> None:
        """(Re)arm after a settings change or at creation."""
        self.cancel()
        q = self._queue
        expires = q.settings.expires
        if expires is None or q.deleted:
            return
        due = q.last_used + expires / 1000.0
        self._timer = self._call_later(max(due - time.monotonic(), 0.0) + 0.001, self._check)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        q = self._queue
        expires = q.settings.expires
        if q.deleted or expires is None:
            return
        if not q.consumers and time.monotonic() >= q.last_used + expires / 1000.0:
            self._unused()
            return
        self.schedule()
