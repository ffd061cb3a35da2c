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


def _key(group: str, partition: int) -> bytes:
    return f"{group}\x00{partition}".encode()


class OffsetBook:
    """Durable committed offsets of every group of one stream (``log``: its offsets log)."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.offsets: dict[tuple[str, int], int] = {}
        # a Kafka commit's metadata string, stored after the offset (only non-empty ones)
        self.metadata: dict[tuple[str, int], str] = {}
        for record in log.scan_records():
            if record.key is None:
                continue
            group, _, part = record.key.decode().rpartition("\x00")
            key = (group, int(part))
            if record.payload:
                self.offsets[key] = _offset.unpack_from(record.payload)[0]
                if len(record.payload) > _offset.size:
                    self.metadata[key] = bytes(record.payload[_offset.size:]).decode()
                else:
                    self.metadata.pop(key, None)
            else:  # a tombstone: the group was deleted
                self.offsets.pop(key, None)
                self.metadata.pop(key, None)

    def get(self, group: str, partition: int) -> int | None:
        return self.offsets.get((group, partition))

    def commit(self, group: str, partition: int, offset: int, metadata: str = "") -> None:
        if metadata or self.metadata:  # Kafka commits with metadata; AMQP acks never
            self._commit_with_metadata((group, partition), offset, metadata)
            return
        if self.offsets.get((group, partition)) == offset:
            return  # acks that do not advance the offset write nothing
        self.offsets[(group, partition)] = offset
        self.log.append(_offset.pack(offset), None, _key(group, partition))

    def _commit_with_metadata(self, key: tuple[str, int], offset: int, metadata: str) -> None:
        if self.offsets.get(key) == offset and self.metadata.get(key, "") == metadata:
            return
        self.offsets[key] = offset
        if metadata:
            self.metadata[key] = metadata
        else:
            self.metadata.pop(key, None)
        self.log.append(_offset.pack(offset) + metadata.encode(), None, _key(*key))

    def metadata_of(self, group: str, partition: int) -> str:
        """The metadata string committed with the offset ("" if none)."""
        return self.metadata.get((group, partition), "")

    def forget(self, group: str, partitions: Iterable[int] | None = None) -> bool:
        """Delete the committed offsets of ``group`` (of ``partitions`` only, if given:
        Kafka's OffsetDelete) with tombstones; False if it had none."""
        only = None if partitions is None else set(partitions)
        keys = [key for key in self.offsets if key[0] == group and (only is None or key[1] in only)]
        for key in keys:
            del self.offsets[key]
            self.metadata.pop(key, None)
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
