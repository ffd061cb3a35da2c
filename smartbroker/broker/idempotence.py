"""Idempotent producers: drop a publish whose (x-producer-id, x-producer-seq) was seen.

A publish with headers ``x-producer-id`` (string) and ``x-producer-seq`` (long) whose
sequence is not above the last one accepted for that producer in the vhost is a retry of
something already routed: it is dropped and still confirmed as a success. A sequence counts
as accepted only once its publish was (a publish nacked, e.g. by ``reject-publish``
overflow, leaves nothing behind, so its retry goes through). The state is
durable (a keyed log: newest record per producer wins, rewritten compactly at startup) and
bounded (producers idle longer than ``idle_expiry`` are forgotten; at most ``max_producers``
are kept, least recently seen first out).
"""

from __future__ import annotations

import shutil
import struct
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from smartbroker.message import Message
from smartbroker.protocol import codec
from smartbroker.store.handles import HandleCache
from smartbroker.store.log import SegmentLog
from smartbroker.store.memory import MemoryLog

_state = struct.Struct("<qd")  # last seq, last seen (unix seconds)
_MARKERS = (b"\x0dx-producer-id", b"\x0ex-producer-seq")


def producer_headers(msg: Message) -> tuple[str, int] | None:
    """(producer id, seq) when the message carries both headers, else None (cheaply)."""
    if not msg.flags & codec.FLAG_HEADERS or _MARKERS[1] not in msg.header_payload:
        return None
    headers = msg.headers or {}
    pid, seq = headers.get("x-producer-id"), headers.get("x-producer-seq")
    if isinstance(pid, bytes):
        pid = pid.decode(errors="replace")
    if not isinstance(pid, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return pid, seq


class ProducerRegistry:
    def __init__(self, directory: Path | None = None, fsync: str = "batch",
                 idle_expiry: float = 7 * 86400, max_producers: int = 100_000,
                 handles: HandleCache | None = None) -> None:
        """``directory`` None: in memory only. ``handles``: the broker's bound on open
        segment files (``Executors.handles``), so these fds count with the others."""
        self.idle_expiry = idle_expiry
        self.max_producers = max_producers
        self.last: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self.log: Any = MemoryLog()
        if directory is not None:
            self.log = self._open_compacted(directory, fsync, handles)

    def _open_compacted(self, directory: Path, fsync: str,
                        handles: HandleCache | None) -> SegmentLog:
        """Load the newest state per producer, then rewrite it into a fresh log."""
        if directory.exists():
            old = SegmentLog(directory, fsync=fsync, handles=handles)
            now = time.time()
            for record in old.scan_records():
                if record.key is None:
                    continue
                seq, seen = _state.unpack(record.payload)
                vhost, _, pid = record.key.decode().partition("\x00")
                if now - seen <= self.idle_expiry:
                    self.last[(vhost, pid)] = (seq, seen)
                    self.last.move_to_end((vhost, pid))
            old.close()
            shutil.rmtree(directory)
        log = SegmentLog(directory, fsync=fsync, segment_bytes=16 << 20, handles=handles)
        for (vhost, pid), (seq, seen) in self.last.items():
            log.append(_state.pack(seq, seen), None, f"{vhost}\x00{pid}".encode())
        log.flush()
        return log

    def is_duplicate(self, vhost: str, pid: str, seq: int) -> bool:
        """True for a retry of a publish already accepted (to drop, and confirm). Records
        nothing: a publish that is then refused (nacked) must stay retryable."""
        key = (vhost, pid)
        previous = self.last.get(key)
        if previous is None or seq > previous[0]:
            return False
        self.last[key] = (previous[0], time.time())
        self.last.move_to_end(key)
        return True

    def accepted(self, vhost: str, pid: str, seq: int) -> None:
        """The publish was accepted (routed or not, but not nacked): remember its sequence,
        durably, so a retry is dropped from now on."""
        key = (vhost, pid)
        previous = self.last.get(key)
        now = time.time()
        if previous is not None and seq <= previous[0]:  # cannot happen in one publish order
            return
        self.last[key] = (seq, now)
        self.last.move_to_end(key)
        self.log.append(_state.pack(seq, now), None, f"{vhost}\x00{pid}".encode())
        while len(self.last) > self.max_producers:
            self.last.popitem(last=False)

    def close(self) -> None:
        self.log.close()
