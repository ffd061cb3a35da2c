"""One live consumer group on a stream: its members, who owns which partition, and the
deliveries not yet acked; it commits to the stream's ``OffsetBook`` as acks come in.

Each partition is owned by exactly one member (members beyond the partition count sit
idle). The committed offset of a partition is the next offset to read: one past the
highest *contiguously* acked delivery, so a crash redelivers only unacked work
(at-least-once); with ``no_ack`` it commits at delivery (at-most-once). Rebalancing on
join/leave is ``cooperative`` (sticky: only partitions that must move are revoked) or
``eager`` (everything revoked and reassigned: the classic stop-the-world). A member with
``x-group-instance-id`` that leaves keeps its partitions for the session timeout, so a quick
reconnect resumes without any rebalance (static membership). ``groups.StreamGroups`` holds
these per stream and is what front ends call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from smartbroker.errors import precondition_failed
from smartbroker.queues.offsets import OffsetBook, position
from smartbroker.queues.stream_args import parse_offset_spec

if TYPE_CHECKING:
    from smartbroker.queues.stream import Reader, StreamQueue

REBALANCE_MODES = ("cooperative", "eager")
DEFAULT_SESSION_TIMEOUT_MS = 10_000


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class GroupMember:
    """A consumer (its ``Reader``) in a group: the partitions it owns are its reader's cursors."""

    __slots__ = ("reader", "group", "instance_id", "session_timeout")

    def __init__(self, reader: Reader, group: ConsumerGroup, instance_id: str | None,
                 session_timeout: float) -> None:
        self.reader = reader
        self.group = group
        self.instance_id = instance_id
        self.session_timeout = session_timeout

    @property
    def partitions(self) -> list[int]:
        return sorted(self.reader.cursors)


class _Progress:
    """Deliveries of one partition not yet acked, in delivery order."""

    __slots__ = ("pending", "acked", "high")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.acked: set[int] = set()
        self.high = -1  # highest offset ever delivered in this group (for ``redelivered``)


class ConsumerGroup:
    """The live side of one group: membership, assignment and unacked progress. Created
    when its first member joins; its committed offsets outlive it in the ``OffsetBook``."""

    def __init__(self, name: str, stream: StreamQueue, book: OffsetBook) -> None:
        self.name = name
        self.stream = stream
        self.book = book
        self.members: list[GroupMember] = []
        self.owner: dict[int, GroupMember] = {}
        self.held: dict[str, tuple[list[int], Any]] = {}  # static members away: partitions, timer
        self.progress = {p: _Progress() for p in range(len(stream.logs))}
        self.mode = "cooperative"
        self.rebalances = 0

    @staticmethod
    def validate_arguments(arguments: Mapping[str, Any]) -> None:
        mode = _text(arguments.get("x-rebalance", "cooperative"))
        if mode not in REBALANCE_MODES:
            raise precondition_failed(f"invalid x-rebalance {mode!r}: expected cooperative or eager")
        instance = arguments.get("x-group-instance-id")
        if instance is not None and not isinstance(instance, str | bytes):
            raise precondition_failed("x-group-instance-id must be a string")
        timeout = arguments.get("x-session-timeout", DEFAULT_SESSION_TIMEOUT_MS)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
            raise precondition_failed("x-session-timeout must be a non-negative integer (ms)")

    # -- offsets ---------------------------------------------------------------------------
    def committed(self, partition: int) -> int:
        return position(self.book.get(self.name, partition), self.stream.logs[partition])

    def _initialise(self, arguments: Mapping[str, Any]) -> None:
        """A new group starts where its first member's ``x-stream-offset`` says, once."""
        spec = parse_offset_spec(arguments.get("x-stream-offset"))
        for p in range(len(self.stream.logs)):
            if self.book.get(self.name, p) is None:
                self.book.commit(self.name, p, self.stream.start_offset(p, spec))

    # -- membership ------------------------------------------------------------------------
    def join(self, reader: Reader, arguments: Mapping[str, Any]) -> None:
        if not self.members and not self.held:
            self.mode = _text(arguments.get("x-rebalance", "cooperative"))
        self._initialise(arguments)
        instance = arguments.get("x-group-instance-id")
        instance = _text(instance) if instance is not None else None
        timeout = arguments.get("x-session-timeout", DEFAULT_SESSION_TIMEOUT_MS) / 1000.0
        member = GroupMember(reader, self, instance, timeout)
        reader.member = member
        self.members.append(member)
        if instance is not None and instance in self.held:
            partitions, timer = self.held.pop(instance)
            if timer is not None:
                timer.cancel()
            for p in partitions:  # same partitions back, no rebalance
                self._assign(p, member)
            return
        self.rebalance()

    def leave(self, reader: Reader) -> None:
        member = reader.member
        if member is None or member not in self.members:
            return
        self.members.remove(member)
        reader.member = None
        partitions = [p for p, owner in self.owner.items() if owner is member]
        for p in partitions:
            self._revoke(p)
        if member.instance_id is not None and member.session_timeout > 0 and partitions:
            instance = member.instance_id
            timer = self.stream.host.call_later(member.session_timeout,
                                                lambda: self._session_expired(instance))
            self.held[instance] = (partitions, timer)  # no timer on NoHost: held until rejoin
            return
        self.rebalance()

    def _session_expired(self, instance_id: str) -> None:
        if self.held.pop(instance_id, None) is not None:
            self.rebalance()
            self.stream.dispatch()

    # -- assignment ------------------------------------------------------------------------
    def _assign(self, partition: int, member: GroupMember) -> None:
        self.owner[partition] = member
        member.reader.cursors[partition] = self.committed(partition)

    def _revoke(self, partition: int) -> None:
        owner = self.owner.pop(partition, None)
        if owner is not None:
            owner.reader.cursors.pop(partition, None)
        progress = self.progress[partition]
        progress.pending.clear()
        progress.acked.clear()

    def rebalance(self) -> None:
        """Give every free partition an owner, ``cooperative``ly or ``eager``ly."""
        self.rebalances += 1
        held = {p for parts, _ in self.held.values() for p in parts}
        partitions = [p for p in range(len(self.stream.logs)) if p not in held]
        members = self.members
        if not members:
            for p in partitions:
                self._revoke(p)
            return
        if self.mode == "eager":
            for p in partitions:
                self._revoke(p)
        quota = {m: len(partitions) // len(members) + (1 if i < len(partitions) % len(members) else 0)
                 for i, m in enumerate(members)}
        kept: dict[GroupMember, list[int]] = {m: [] for m in members}
        free = []
        for p in partitions:
            owner = self.owner.get(p)
            if owner in kept and len(kept[owner]) < quota[owner]:
                kept[owner].append(p)
            else:
                if owner is not None:
                    self._revoke(p)
                free.append(p)
        for member in members:
            while len(kept[member]) < quota[member] and free:
                p = free.pop(0)
                kept[member].append(p)
                self._assign(p, member)

    # -- deliveries and commits ------------------------------------------------------------
    def was_delivered(self, partition: int, offset: int) -> bool:
        return offset <= self.progress[partition].high

    def delivered(self, partition: int, offset: int, no_ack: bool) -> None:
        progress = self.progress[partition]
        if offset > progress.high:
            progress.high = offset
        if no_ack:
            if not progress.pending:
                self.book.commit(self.name, partition, offset + 1)
            return
        progress.pending.append(offset)

    def acked(self, reader: Reader, partition: int, offset: int) -> None:
        member = reader.member
        if member is None or self.owner.get(partition) is not member:
            return  # revoked meanwhile: its new owner gets it again
        progress = self.progress[partition]
        progress.acked.add(offset)
        pending = progress.pending
        advanced = None
        while pending and pending[0] in progress.acked:
            done = pending.popleft()
            progress.acked.discard(done)
            advanced = done + 1
        if advanced is not None:
            self.book.commit(self.name, partition, advanced)

    @property
    def active(self) -> bool:
        """Has members, or static members away within their session timeout."""
        return bool(self.members) or bool(self.held)
