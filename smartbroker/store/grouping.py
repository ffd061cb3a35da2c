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

GROUP_BYTES = 256 << 10  # a group is framed before its entries pass this many bytes
GROUP_RECORDS = 4096  # ... or this many records
_FRAME_HEAD = record.PREFIX_SIZE + record.HEAD_SIZE  # a frame's bytes before its entries
_ENTRY_SIZE = record.ENTRY_SIZE
_entry_pack = record.ENTRY.pack
_entries: dict[int, bytes] = {}  # payload size -> its entry header (publishers repeat sizes)

F = TypeVar("F", bound=Callable[..., Any])


class AppendGroup:
    """The log's records not framed yet (the log's own helper, as ``retire.Retirer``).

    ``items`` is the group's frame body after its head, kept as parts (each record's entry
    header, its ``head`` and payload), so sealing is one join and one CRC: a record's bytes
    are copied once into the frame, never concatenated first. ``room`` is what the group
    may still take (the segment's free space or the group bound, whichever is smaller),
    computed when the group starts, so an append is a subtraction and a comparison."""

    __slots__ = ("log", "items", "count", "room", "ts", "base")

    def __init__(self, log: SegmentLog) -> None:
        self.log = log
        self.items: list[bytes] = []  # truthy while records wait to be framed (a group started)
        self.count = 0
        self.room = 0  # bytes of entries the group may still take
        self.base = 0  # the group's first offset
        self.ts = 0

    def _start(self) -> None:
        """A first record: the disk retried if it failed, the time taken, the frame's
        bounds computed and the end of the loop pass asked to frame it."""
        lg = self.log
        if lg._unavailable is not None:  # noqa: SLF001 - the log's own helper
            lg._retry()  # noqa: SLF001
        self.ts = int(time.time() * 1000)
        seg = lg._segs[-1]  # noqa: SLF001
        self.base = seg.next_offset
        self.room = min(GROUP_BYTES, lg.segment_bytes - seg.end - _FRAME_HEAD)
        self.items = [b""]  # the slot of the frame's prefix and head (record.encode_parts)
        loop = asyncio._get_running_loop()  # None outside a loop: framed by the next call
        if loop is not None:
            loop.call_soon(self.seal_soon)

    def append(self, payload: bytes, key: bytes | None = None, head: bytes = b"") -> int:
        """Keep one record, ``head + payload`` (``head`` spares the caller joining them);
        its offset."""
        n = self.count
        if not n:
            self._start()
        size = len(head) + len(payload)
        entry = _ENTRY_SIZE + size if key is None else _ENTRY_SIZE + len(key) + size
        if entry > self.room and n:
            self.seal()  # past the segment's end or the group's bound: this record starts the next
            self._start()
            n = 0
        self.room -= entry
        items = self.items
        if key is None:
            ent = _entries.get(size)
            if ent is None:
                if len(_entries) >= 1024:
                    _entries.clear()
                ent = _entries[size] = _entry_pack(-1, size)
            items.append(ent)
        else:
            items.append(_entry_pack(len(key), size))
            items.append(key)
        if head:
            items.append(head)
        items.append(payload)
        self.count = n + 1
        if self.room <= 0 or n + 1 >= GROUP_RECORDS:
            self.seal_soon()  # full: framed now (if a roll fails, it waits like a pass's end)
        return self.base + n

    def seal(self) -> None:
        """Frame the group into the active segment. If a segment must be rolled and cannot
        be, StoreUnavailable, and the group stays pending (its offsets are taken: nothing
        else may append before it; an fsync of it fails and nacks)."""
        count = self.count
        if not count:
            return
        lg = self.log
        seg = lg._segs[-1]  # noqa: SLF001
        frame = record.encode_parts(seg.next_offset, self.ts, count, self.items)
        if seg.end + len(frame) > lg.segment_bytes and seg.end:
            seg = lg._roll()  # noqa: SLF001 - the new segment starts at the group's first offset
        self.items = []
        self.count = 0
        seg.append_frame(seg.next_offset, count, self.ts, frame)
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
