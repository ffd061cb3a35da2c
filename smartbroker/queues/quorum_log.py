"""A replicated quorum queue's own message log (issue 16).

On one node (or with a replica set of one) a quorum queue keeps its messages in the
broker's shared message store (``broker/durable.py``), as a durable classic queue does.
A replicated one keeps them in a ``SegmentLog`` of its own, because replication ships a
log's frames byte for byte to the followers (``cluster/replication/``): the shared store
mixes every queue's records and is reclaimed by rewriting segments, which no follower
could mirror. The records are the shared store's (``E`` enqueue naming this queue, ``d``
delivered, ``a`` settled), so ``durable_recovery.replay`` rebuilds the queue from a copy
on any member, exactly as a restart does: that is failover.

``QuorumLog`` offers the queue what it asks of the shared store (``enqueue``,
``delivered``, ``forget``, ``load``): marks of one event-loop pass become one record per
kind, written just before the pass's records go to the OS. Head segments whose enqueues
are all settled are deleted (the log start moves; the core ships it to followers); a
segment behind a live one is never rewritten, so a parked message keeps what follows it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smartbroker.broker import durable, durable_recovery
from smartbroker.message import Message
from smartbroker.store.api import StoreUnavailable
from smartbroker.store.log import SegmentLog

log = logging.getLogger("smartbroker.store")
SEGMENT_BYTES = 8 << 20  # smaller than the shared store's: head deletion frees sooner
DIRECTORY = "quorum"


def _seg(name: str) -> str:
    """A name as one path segment: every byte but [A-Za-z0-9_.~-] percent-encoded."""
    return urllib.parse.quote_from_bytes(name.encode("utf-8", "surrogateescape"), safe=b"")


def directory(data_dir: Path, vhost: str, queue: str) -> Path:
    """Where a queue's log lives: one directory per queue, a name safe for any bytes."""
    return data_dir / DIRECTORY / f"{_seg(vhost)}%2F{_seg(queue)}"


class QuorumLog:
    """One quorum queue's message log. On a follower only ``log`` is used (the core
    appends the leader's frames to it); the leader's queue writes through this object,
    after ``recover`` rebuilt what it holds."""

    def __init__(self, path: Path, vhost: str, queue: str, *, fsync: str = "batch",
                 executors: Any = None, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.path = path
        self.vhost = vhost
        self.queue = queue
        self.log = SegmentLog(path, fsync=fsync, segment_bytes=segment_bytes,
                              executor=executors.fsync if executors is not None else None,
                              handles=executors.handles if executors is not None else None)
        self._prefix = durable.enqueue_prefix(vhost, (queue,))
        self._live: defaultdict[int, int] = defaultdict(int)  # segment base -> live enqueues
        self._marks: dict[bytes, list[int]] = {}  # this pass's d/a marks
        self._unplaced: list[int] = []  # this pass's enqueues, not counted in _live yet
        self.write_out_pending = False
        self.undecodable_properties = 0  # recovered messages with unreadable properties
        self.closed = False
        self.leading = False  # the queue here writes to it; else the core alone appends
        # told at the end of each loop pass that appended (the core ships what nobody
        # awaits a commit of: settlements, publishes without confirms)
        self.on_written: Callable[[bool], None] | None = None

    # -- writing (the leader) -----------------------------------------------------------
    def enqueue(self, vhost: str, queues: tuple[str, ...], msg: Message) -> int:
        """One record, framed with the rest of this loop pass's (``append_grouped``): a
        follower then checks and indexes one frame per pass, not one per message."""
        offset = self.log.append_grouped(durable.encode_enqueue(vhost, queues, msg,
                                                                self._prefix))
        self._unplaced.append(offset)
        self._schedule_write_out()
        return offset

    def _place(self) -> None:
        """Count this pass's enqueues in their segments (known once their group is
        framed: asking per enqueue would frame each alone)."""
        offsets, self._unplaced = self._unplaced, []
        segment_of, live = self.log.segment_of, self._live
        first = segment_of(offsets[0])
        if first is not None and segment_of(offsets[-1]) == first:
            live[first] += len(offsets)  # the usual case: one segment
            return
        for offset in offsets:
            base = segment_of(offset)
            if base is not None:
                live[base] += 1

    def delivered(self, vhost: str, queue: str, offset: int) -> None:
        self._mark(durable.MARK_DELIVERED, offset)

    def forget(self, vhost: str, queue: str, offset: int) -> None:
        self._mark(durable.MARK_FORGET, offset)

    def dead_lettered(self, vhost: str, queue: str, offset: int, reason: str) -> None:
        """At-least-once dead-lettering holds it (in the log, so a failover keeps it)."""
        self._mark(durable.dead_mark(reason), offset)

    def _mark(self, kind: bytes, offset: int) -> None:
        pending = self._marks.get(kind)
        if pending is not None:
            pending.append(offset)
            return
        self._marks[kind] = [offset]
        if not self._schedule_write_out():
            self.write_marks()

    def write_marks(self) -> None:
        """This pass's marks as one record per kind; settled head segments go."""
        marks, self._marks = self._marks, {}
        if self.closed or not self.leading:
            return
        if self._unplaced:
            self._place()
        emptied = False
        for kind, offsets in marks.items():
            try:
                self.log.append(durable.encode_marks(kind, self.vhost, self.queue, offsets))
            except StoreUnavailable:
                log.error("quorum queue '%s' log unavailable: %d mark(s) not written",
                          self.queue, len(offsets))
            if kind == durable.MARK_FORGET:
                emptied = self._release(offsets) or emptied
        if emptied:
            self._delete_settled_head()

    def _release(self, offsets: list[int]) -> bool:
        live, segment_of = self._live, self.log.segment_of
        emptied = False
        for offset in offsets:
            base = segment_of(offset)
            if base is None or base not in live:
                continue
            left = live[base] - 1
            if left > 0:
                live[base] = left
            else:
                del live[base]
                emptied = True
        return emptied

    def _delete_settled_head(self) -> None:
        for seg in self.log.segments():
            if seg.active or self._live.get(seg.base_offset):
                return
            self.log.delete_segment(seg.base_offset)

    def _schedule_write_out(self) -> bool:
        if self.write_out_pending:
            return True
        loop = asyncio._get_running_loop()
        if loop is None:
            return False
        self.write_out_pending = True
        loop.call_soon(self.write_out_now)
        return True

    def write_out_now(self) -> None:
        """At the end of the loop pass: marks written, records handed to the OS (before
        any delivery or confirm of this pass leaves)."""
        if self.write_out_pending:
            self.write_out_pending = False
            enqueued = bool(self._unplaced)
            if self._marks:
                self.write_marks()
            if not self.closed:
                self.log.write_out()
                if self._unplaced:
                    self._place()
                if self.on_written is not None:
                    self.on_written(enqueued)  # False: settlements alone, nobody waits

    @property
    def next_offset(self) -> int:
        return self.log.next_offset

    async def sync(self) -> None:
        """Everything appended so far durable (this pass's marks written first)."""
        if self._marks:
            self.write_marks()
        await self.log.sync()

    async def wait_durable(self, offset: int) -> None:
        await self.log.wait_durable(offset)

    def load(self, offset: int) -> Message:
        data = self.log.read(offset)
        if data is None:
            raise KeyError(f"message at offset {offset} is missing from quorum queue "
                           f"'{self.queue}'")
        return durable.decode_enqueue(data)[2]

    # -- recovery (becoming leader, restart) ----------------------------------------------
    def recover(self) -> list[durable_recovery.RecoveredEntry]:
        """The queue's live entries, in enqueue order (bodies left on disk); delivered
        ones come back ``redelivered``. Rebuilds the per-segment live counts."""
        self._live.clear()
        self._unplaced.clear()
        entries = durable_recovery.replay(self.log, self).get((self.vhost, self.queue), [])
        for entry in entries:
            base = self.log.segment_of(entry.offset)
            if base is not None:
                self._live[base] += 1
        return entries

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        if not self.closed:
            if self._marks:
                self.write_marks()
            self.closed = True
            self.log.close()

    def destroy(self) -> None:
        """The queue was deleted: its log and directory go."""
        self._marks.clear()
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
