"""Grouped appends: the records one loop pass appends to a log, framed together.

A stream's AMQP publishes arrive one by one, but a frame per record costs a CRC call, a
header and an index check each. ``SegmentLog.append_grouped`` hands out offsets at once
and keeps the records here; the log frames them as one batch (``record.encode_batch``:
after a crash all of them are there or none is) at the end of the loop pass, when the
group grows past its bounds, or before anything else reads, writes, syncs or deletes, so
no reader and no fsync ever misses a record that has an offset. Kafka's producers batch
the same way, and RabbitMQ's streams write chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

GROUP_BYTES = 256 << 10  # a group is framed at once past this many payload bytes
GROUP_RECORDS = 4096  # ... or this many records

F = TypeVar("F", bound=Callable[..., Any])


class AppendGroup:
    """The records appended since the last frame, with the time of the first: the
    group's records carry that one timestamp (as a RabbitMQ stream chunk does)."""

    __slots__ = ("items", "nbytes", "ts")

    def __init__(self) -> None:
        self.items: list[tuple[bytes | None, bytes]] = []
        self.nbytes = 0
        self.ts = 0

    def add(self, key: bytes | None, payload: bytes) -> bool:
        """Keep one record; whether the group should be framed now (it is full)."""
        items = self.items
        if not items:
            self.ts = int(time.time() * 1000)
        items.append((key, payload))
        self.nbytes += len(payload)
        return self.nbytes >= GROUP_BYTES or len(items) >= GROUP_RECORDS

    def take(self) -> list[tuple[bytes | None, bytes]]:
        items, self.items = self.items, []
        self.nbytes = 0
        return items


def sealed_first(method: F) -> F:
    """Frame the log's pending group before ``method`` runs (reads, deletion, write-out):
    offsets handed out must be in the segments before anything looks at them. If the
    group cannot be framed (a roll failed), ``method`` runs without it; appends and
    fsyncs frame it themselves and report the failure."""

    @wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._group.items:
            self._seal_soon()
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
