"""A stream's retention: every second, delete whole closed head segments past ``max-age``
or beyond ``max-length-bytes`` (per partition, as RabbitMQ's osiris does), and start a
compaction pass when the cleanup policy says ``compact``. The active segment is never
deleted, so a stream keeps at least its newest records."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smartbroker.queues.stream import StreamQueue

log = logging.getLogger("smartbroker.stream")
RETENTION_INTERVAL = 1.0  # seconds between retention passes


class Retention:
    __slots__ = ("stream", "_timer")

    def __init__(self, stream: StreamQueue) -> None:
        self.stream = stream
        self._timer: Any = None

    @property
    def scheduled(self) -> bool:
        return self._timer is not None

    def schedule(self) -> None:
        """Arm the next pass, if the stream has anything to enforce."""
        stream = self.stream
        settings = stream.stream
        if stream.deleted or (settings.max_age is None and settings.max_length_bytes is None
                              and not settings.compact):
            return
        self._timer = stream.host.call_later(RETENTION_INTERVAL, self._tick)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        try:
            self.enforce()
        except Exception:  # never let a retention bug stop the broker
            log.exception("retention failed for stream %s", self.stream.name)
        self.schedule()

    def enforce(self, now_ms: int | None = None) -> int:
        """Delete closed head segments past ``x-max-age`` or beyond ``x-max-length-bytes``;
        returns how many segments went. Readers that pointed into them skip ahead.
        With ``compact`` it also starts a compaction pass (``queues/compaction.py``)."""
        stream = self.stream
        settings = stream.stream
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if settings.compact:
            from smartbroker.queues.compaction import compact_stream

            compact_stream(stream, now_ms)
        if not settings.delete:
            return 0
        removed = 0
        for lg in stream.logs:
            segments = lg.segments()
            total = sum(s.size_bytes for s in segments)
            for seg in segments:
                if seg.active:
                    break
                too_old = (settings.max_age is not None
                           and 0 <= seg.max_timestamp_ms < now_ms - settings.max_age * 1000)
                too_big = settings.max_length_bytes is not None and total > settings.max_length_bytes
                if not (too_old or too_big):
                    break
                lg.delete_segment(seg.base_offset)
                total -= seg.size_bytes
                removed += 1
        return removed
