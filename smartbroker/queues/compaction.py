"""Compaction of stream queues declared with ``x-cleanup-policy: compact``.

The stream's retention timer calls ``compact_stream`` every second. It keeps one
``store.compact.Compactor`` per partition (they hold the key index between passes) and
starts at most one pass per stream at a time. On an event loop the scan and the rewrite
run in the store's compaction thread; the loop only snapshots segments and renames the
rewritten files in (``CompactionResult.loop_seconds``). A tombstone is a message whose
body is empty; it is dropped after ``x-delete-retention``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import weakref
from typing import Any

from smartbroker.queues.kafka_mapping import stored_to_record
from smartbroker.store.compact import CompactionResult, Compactor

log = logging.getLogger("smartbroker.stream.compaction")
_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")
_states: weakref.WeakKeyDictionary[Any, StreamCompaction] = weakref.WeakKeyDictionary()


def is_tombstone(payload: bytes) -> bool:
    """A stream record (see ``stream.encode_record``) whose message body is empty, unless
    it is a Kafka record's empty non-null value (``x-kafka-empty-value``): Kafka keeps
    those, only a null value is a tombstone."""
    (n,) = _u16.unpack_from(payload, 0)
    (h,) = _u32.unpack_from(payload, 2 + n)
    if len(payload) != 6 + n + h:
        return False
    return stored_to_record(payload, 0)[2] is None


class StreamCompaction:
    """The compactors of one stream queue and the pass currently running, if any."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        retention_ms = int(stream.stream.delete_retention * 1000)
        storage = stream.storage
        executor = storage.executors.compact if storage and storage.executors else None
        self.compactors = [Compactor(lg, delete_retention_ms=retention_ms, is_tombstone=is_tombstone,
                                     executor=executor) for lg in stream.logs]
        self.task: asyncio.Task[None] | None = None
        self.passes = 0
        self.last: list[CompactionResult] = []

    def tick(self, now_ms: int | None = None) -> None:
        """Start a pass unless one is still running; without a loop, run it inline."""
        if self.task is not None and not self.task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._done([c.run(now_ms) for c in self.compactors])
            return
        self.task = loop.create_task(self._run(now_ms))

    async def _run(self, now_ms: int | None) -> None:
        try:
            results = []
            for compactor in self.compactors:
                if self.stream.deleted or self.stream.closed:
                    return
                results.append(await compactor.run_async(now_ms))
            self._done(results)
        except Exception:  # a failed pass leaves the old segments; the next one retries
            if not (self.stream.deleted or self.stream.closed):  # else: shutdown's executor
                log.exception("compaction failed for stream %s", self.stream.name)

    def _done(self, results: list[CompactionResult]) -> None:
        self.passes += 1
        self.last = results
        removed = sum(r.records_removed for r in results)
        if removed:
            log.info("compacted stream %s: %d records removed, %d -> %d bytes, loop pause %.2f ms",
                     self.stream.name, removed, sum(r.bytes_before for r in results),
                     sum(r.bytes_after for r in results),
                     1000 * max(r.loop_seconds for r in results))


def compaction_of(stream: Any) -> StreamCompaction:
    state = _states.get(stream)
    if state is None or len(state.compactors) != len(stream.logs):
        state = _states[stream] = StreamCompaction(stream)
    return state


def compact_stream(stream: Any, now_ms: int | None = None) -> None:
    """Run (or start) a compaction pass over every partition of a compacted stream."""
    if stream.stream.compact and not stream.deleted:
        compaction_of(stream).tick(now_ms if now_ms is not None else int(time.time() * 1000))
