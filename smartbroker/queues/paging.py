"""Durable classic queues keep long backlogs on disk: entries hold a shared ``PagedOut``
stub instead of the message, and recovery rebuilds entries that way from the store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from smartbroker.message import Message
from smartbroker.queues.base import PagedOut, QueueEntry

PAGE_OUT_AFTER = 20_000  # ready persistent messages kept in memory per durable queue


class Pager:
    def __init__(self, load: Callable[[int], Message]) -> None:
        self._load_offset = load  # the message store's read by offset
        self._stubs: dict[tuple[int, int], PagedOut] = {}

    def _load(self, entry: QueueEntry) -> Message:
        assert entry.store_id is not None
        return self._load_offset(entry.store_id)

    def stub(self, size: int, priority: int) -> PagedOut:
        """Shared stand-ins for paged-out entries (memory: one per size and priority)."""
        stub = self._stubs.get((size, priority))
        if stub is None:
            if len(self._stubs) >= 4096:
                self._stubs.clear()
            stub = self._stubs[(size, priority)] = PagedOut(size, priority, self._load)
        return stub

    def restored_entries(self, records: list[Any], message_ttl: int | None) -> list[QueueEntry]:
        """Entries for the store's live records (bodies left on disk), with expiry times
        rebuilt from each record's publish time."""
        now_wall, now = time.time() * 1000, time.monotonic()
        entries = []
        for rec in records:
            entry = QueueEntry.__new__(QueueEntry)
            entry.seq, entry.redelivered, entry.delivery_count = None, rec.redelivered, 0
            entry.ready, entry.store_id = False, rec.offset
            entry.page_out(self.stub(rec.size, rec.priority))
            limit = message_ttl if rec.expiration_ms is None else (
                rec.expiration_ms if message_ttl is None else min(message_ttl, rec.expiration_ms))
            entry.expires_at = None
            if limit is not None:
                entry.expires_at = now + (rec.timestamp_ms + limit - now_wall) / 1000.0
            entries.append(entry)
        return entries
