"""Grouped appends: the records one loop pass appends to a log, framed together.

A stream's AMQP publishes arrive one by one, but a frame per record costs a CRC call, a
header and an index check each. ``SegmentLog.append_grouped`` hands out offsets at once
and keeps the records here; they are framed as one batch (``record.encode_batch``: after
a crash all of them are there or none is) at the end of the loop pass, when the group
grows past its bounds or would overfill the segment, or before anything else reads,
writes, syncs or deletes, so no reader and no fsync ever misses a record that has an
offset. Kafka's producers batch the same way, and RabbitMQ's streams write chunks; the
group's records carry the time of its first append, as a RabbitMQ chunk carries one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from . import record
from .api import StoreUnavailable

if TYPE_CHECKING:
    from .log import SegmentLog

GROUP_BYTES = 256 << 10  # a group is framed at once past this many payload bytes
GROUP_RECORDS = 4096  # ... or this many records

F = TypeVar("F", bound=Callable[..., Any])


class AppendGroup:
    """The log's records not framed yet (the log's own helper, as ``retire.Retirer``)."""

    __slots__ = ("log", "items", "nbytes", "ts")

    def __init__(self, log: SegmentLog) -> None:
        self.log = log
        self.items: list[tuple[bytes | None, bytes]] = []
        self.nbytes = 0
        self.ts = 0

    def append(self, payload: bytes, key: bytes | None) -> int:
        """Keep one record; its offset."""
        lg = self.log
        items = self.items
        if not items:
            if lg._unavailable is not None:  # noqa: SLF001 - the log's own helper
                lg._retry()  # noqa: SLF001
            self.ts = int(time.time() * 1000)
            loop = asyncio._get_running_loop()  # None outside a loop: framed by the next call
            if loop is not None:
                loop.call_soon(self.seal_soon)
        seg = lg._segs[-1]  # noqa: SLF001
        n = len(items)
        if n and seg.end + self.nbytes + len(payload) + (n + 1) * record.OVERHEAD > lg.segment_bytes:
            self.seal()  # the group fills the segment: this record starts the next group
            seg, n, self.ts = lg._segs[-1], 0, int(time.time() * 1000)  # noqa: SLF001
        off = seg.next_offset + n
        self.items.append((key, payload))
        self.nbytes += len(payload)
        if self.nbytes >= GROUP_BYTES or n + 1 >= GROUP_RECORDS:
            self.seal()
        return off

    def seal(self) -> None:
        """Frame the group into the active segment. If a segment must be rolled and cannot
        be, StoreUnavailable, and the group stays pending (its offsets are taken: nothing
        else may append before it; an fsync of it fails and nacks)."""
        items = self.items
        if not items:
            return
        lg = self.log
        seg = lg._segs[-1]  # noqa: SLF001
        frame = record.encode_batch(seg.next_offset, self.ts, items)
        if seg.end + len(frame) > lg.segment_bytes and seg.end:
            seg = lg._roll()  # noqa: SLF001 - the new segment starts at the group's first offset
        self.items = []
        self.nbytes = 0
        seg.append_frame(seg.next_offset, len(items), self.ts, frame)
        if len(seg.buf) >= lg.write_buffer_bytes:
            lg._write_out(seg)  # noqa: SLF001
        lg._commit.kick()  # noqa: SLF001

    def seal_soon(self) -> None:
        """The end of the loop pass: frame the group (a failure waits for its fsync)."""
        with contextlib.suppress(StoreUnavailable):
            self.seal()


def sealed_first(method: F) -> F:
    """Frame the log's pending group before ``method`` runs (reads, deletion, write-out):
    offsets handed out must be in the segments before anything looks at them. If the
    group cannot be framed (a roll failed), ``method`` runs without it; appends and
    fsyncs frame it themselves and report the failure."""

    @wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._group.items:
            self._group.seal_soon()
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
