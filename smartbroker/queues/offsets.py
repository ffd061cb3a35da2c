"""Committed offsets of consumer groups, and the offset arithmetic every front end shares.

``OffsetBook`` is the one store of committed offsets of a stream: the AMQP consumer groups
commit to it as they ack, an operator resets it, and a second front end (a Kafka
listener's OffsetCommit/OffsetFetch) can use the same book. It is a keyed log: the newest
record per group/partition wins, an empty record deletes the key, so re-opening the log
replays it into the same table. ``OffsetReset`` is ``kafka-consumer-groups
--reset-offsets``: where to move a group, always clipped to what the partition holds.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RESET_KINDS = ("earliest", "latest", "offset", "datetime", "shift")
_offset = struct.Struct("<q")
_epoch = struct.Struct("<i")  # a Kafka commit's leader epoch, then its metadata (UTF-8)
_EXTRA = _offset.size + _epoch.size
_NO_EXTRA = (-1, "")


def _key(group: str, partition: int) -> bytes:
    return f"{group}\x00{partition}".encode()


class OffsetBook:
    """Durable committed offsets of every group of one stream (``log``: its offsets log)."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.offsets: dict[tuple[str, int], int] = {}
        # a Kafka commit's leader epoch and metadata string, stored after the offset
        # (only those other than (-1, ""), which AMQP acks and resets commit)
        self.extra: dict[tuple[str, int], tuple[int, str]] = {}
        for record in log.scan_records():
            if record.key is None:
                continue
            group, _, part = record.key.decode().rpartition("\x00")
            key = (group, int(part))
            payload = record.payload
            if payload:
                self.offsets[key] = _offset.unpack_from(payload)[0]
                if len(payload) > _offset.size:
                    epoch = _epoch.unpack_from(payload, _offset.size)[0]
                    self.extra[key] = (epoch, bytes(payload[_EXTRA:]).decode())
                else:
                    self.extra.pop(key, None)
            else:  # a tombstone: the group was deleted
                self.offsets.pop(key, None)
                self.extra.pop(key, None)

    def get(self, group: str, partition: int) -> int | None:
        return self.offsets.get((group, partition))

    def commit(self, group: str, partition: int, offset: int, metadata: str = "",
               epoch: int = -1) -> None:
        if metadata or epoch != -1 or self.extra:  # Kafka's extras; AMQP acks have none
            self._commit_extra((group, partition), offset, (epoch, metadata))
            return
        if self.offsets.get((group, partition)) == offset:
            return  # acks that do not advance the offset write nothing
        self.offsets[(group, partition)] = offset
        self.log.append(_offset.pack(offset), None, _key(group, partition))

    def _commit_extra(self, key: tuple[str, int], offset: int, extra: tuple[int, str]) -> None:
        if self.offsets.get(key) == offset and self.extra.get(key, _NO_EXTRA) == extra:
            return
        self.offsets[key] = offset
        payload = _offset.pack(offset)
        if extra == _NO_EXTRA:
            self.extra.pop(key, None)
        else:
            self.extra[key] = extra
            payload += _epoch.pack(extra[0]) + extra[1].encode()
        self.log.append(payload, None, _key(*key))

    def extra_of(self, group: str, partition: int) -> tuple[int, str]:
        """The leader epoch and metadata committed with the offset ((-1, "") if none)."""
        return self.extra.get((group, partition), _NO_EXTRA)

    def forget(self, group: str, partitions: Iterable[int] | None = None) -> bool:
        """Delete the committed offsets of ``group`` (of ``partitions`` only, if given:
        Kafka's OffsetDelete) with tombstones; False if it had none."""
        only = None if partitions is None else set(partitions)
        keys = [key for key in self.offsets if key[0] == group and (only is None or key[1] in only)]
        for key in keys:
            del self.offsets[key]
            self.extra.pop(key, None)
            self.log.append(b"", None, _key(*key))
        return bool(keys)

    def groups(self) -> set[str]:
        return {group for group, _ in self.offsets}

    def partitions(self, group: str) -> dict[int, int]:
        """The committed offsets of one group, by partition."""
        return {p: offset for (g, p), offset in self.offsets.items() if g == group}


def position(committed: int | None, log: Any) -> int:
    """Where a group reads next in a partition: its committed offset, never before the
    first offset retention kept (records before it are gone); the start if none."""
    first = log.first_offset
    return first if committed is None else max(committed, first)


@dataclass(frozen=True, slots=True)
class OffsetReset:
    """Where a reset moves a group's committed offsets. ``value`` is the offset
    (``offset``), epoch milliseconds (``datetime``) or the delta (``shift``); unused for
    ``earliest`` (first offset kept) and ``latest`` (past the last offset)."""

    kind: str
    value: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in RESET_KINDS:
            raise ValueError(f"unknown reset {self.kind!r}: expected one of {RESET_KINDS}")
        if self.kind in ("offset", "datetime", "shift") and self.value is None:
            raise ValueError(f"'{self.kind}' reset needs an integer value")

    def target(self, log: Any, committed: int) -> int:
        """The new committed offset of one partition, clipped to ``[first, next]``."""
        first, end = log.first_offset, log.next_offset
        if self.kind == "earliest":
            return first
        if self.kind == "latest":
            return end
        assert self.value is not None  # __post_init__
        if self.kind == "datetime":
            wanted = log.offset_for_timestamp(self.value)
        elif self.kind == "offset":
            wanted = self.value
        else:
            wanted = committed + self.value
        return min(max(wanted, first), end)


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """What one partition of a stream holds, by offset (``last`` is None when empty)."""

    partition: int
    first: int
    last: int | None
    next: int
    messages: int
    size_bytes: int
    segments: int

    @classmethod
    def of(cls, partition: int, log: Any) -> PartitionOffsets:
        first, end = log.first_offset, log.next_offset
        return cls(partition, first, end - 1 if end > first else None, end, end - first,
                   log.size_bytes, len(log.segments()))
