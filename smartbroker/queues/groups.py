"""The consumer groups of one stream, behind the one API every front end uses.

A group's state is in two parts, both here in ``queues/``: the live group
(``groups_members.ConsumerGroup``: members, assignment, unacked progress) and its committed
offsets (``offsets.OffsetBook``, durable in the stream's offsets log). A group exists
while it has either, so after a restart a group known only by its offsets is still
listed, described, reset and deleted. AMQP consumers ``join`` and ``leave``; the
management API (and the CLI through it) lists, describes, resets and deletes; another
front end can ``commit`` and read ``committed`` on the same book. A refusal is a
``GroupError`` whose text a front end shows as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartbroker.queues.groups_members import ConsumerGroup, GroupMember
from smartbroker.queues.offsets import OffsetBook, OffsetReset, position

if TYPE_CHECKING:
    from smartbroker.queues.stream import Reader, StreamQueue

__all__ = ["GroupActive", "GroupError", "GroupInfo", "GroupMember", "MemberInfo",
           "OffsetMove", "PartitionLag", "StreamGroups", "UnknownGroup", "UnknownPartition"]


class GroupError(Exception):
    """A group operation refused; ``str()`` is the text for the client."""


class UnknownGroup(GroupError):
    """No live group and no committed offsets by that name on the stream."""


class UnknownPartition(GroupError):
    """The stream has no such partition."""


class GroupActive(GroupError):
    """The group has members (or static members within their session timeout): its
    offsets are theirs to move, by acking."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    consumer_tag: str
    instance_id: str | None
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: int  # the next offset the group reads
    first: int  # the first offset the partition still holds
    end: int  # the partition's next offset
    lag: int
    owner: str | None  # the consumer tag of the member that owns it


@dataclass(frozen=True, slots=True)
class GroupInfo:
    name: str
    queue: str
    vhost: str
    active: bool
    rebalance: str | None  # None: no member joined since the broker started
    members: tuple[MemberInfo, ...]
    static_members_away: int
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True, slots=True)
class OffsetMove:
    """One partition of a reset: the committed offset before and after."""

    partition: int
    before: int
    after: int
    lag_after: int


class StreamGroups:
    """Every consumer group of one stream: live groups by name plus the offset book."""

    validate_arguments = staticmethod(ConsumerGroup.validate_arguments)

    def __init__(self, stream: StreamQueue, book: OffsetBook) -> None:
        self.stream = stream
        self.book = book
        self.live: dict[str, ConsumerGroup] = {}

    # -- membership (AMQP consumers with x-consumer-group) ---------------------------------
    def join(self, name: str, reader: Reader, arguments: Mapping[str, Any]) -> ConsumerGroup:
        group = self.live.get(name)
        if group is None:
            group = self.live[name] = ConsumerGroup(name, self.stream, self.book)
        group.join(reader, arguments)
        return group

    @staticmethod
    def leave(reader: Reader) -> None:
        if reader.member is not None:
            reader.member.group.leave(reader)

    # -- reading -----------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self.live or any(g == name for g, _ in self.book.offsets)

    def names(self) -> list[str]:
        return sorted(set(self.live) | self.book.groups())

    def committed(self, name: str, partition: int) -> int:
        """The next offset the group reads in ``partition`` (the start if it never committed)."""
        return position(self.book.get(name, partition), self._log(partition))

    def lag(self, name: str, partition: int) -> int:
        return max(self._log(partition).next_offset - self.committed(name, partition), 0)

    def describe(self, name: str) -> GroupInfo:
        live = self.require(name)
        owners = {p: m.reader.consumer.tag for p, m in live.owner.items()} if live else {}
        partitions = []
        for p, lg in enumerate(self.stream.logs):
            committed = position(self.book.get(name, p), lg)
            partitions.append(PartitionLag(p, committed, lg.first_offset, lg.next_offset,
                                           max(lg.next_offset - committed, 0), owners.get(p)))
        members = tuple(MemberInfo(m.reader.consumer.tag, m.instance_id, tuple(m.partitions))
                        for m in live.members) if live else ()
        return GroupInfo(name, self.stream.name, self.stream.vhost,
                         live is not None and live.active, live.mode if live else None,
                         members, len(live.held) if live else 0, tuple(partitions))

    def describe_all(self) -> list[GroupInfo]:
        return [self.describe(name) for name in self.names()]

    # -- changing ----------------------------------------------------------------------------
    def commit(self, name: str, partition: int, offset: int) -> None:
        """Commit for a front end whose members commit explicitly (the AMQP members
        commit as they ack, in ``ConsumerGroup``); creates the group if need be."""
        self._log(partition)
        self.book.commit(name, partition, offset)

    def reset(self, name: str, to: OffsetReset, *, dry_run: bool = False) -> list[OffsetMove]:
        """Move every partition's committed offset (``kafka-consumer-groups
        --reset-offsets``); refused while the group has members."""
        self.require(name)
        self.refuse_if_active(name, "resetting offsets")
        plan = []
        for p, lg in enumerate(self.stream.logs):
            before = position(self.book.get(name, p), lg)
            after = to.target(lg, before)
            plan.append(OffsetMove(p, before, after, max(lg.next_offset - after, 0)))
        if not dry_run:
            for move in plan:
                self.book.commit(name, move.partition, move.after)
        return plan

    def delete(self, name: str) -> None:
        """Forget the group and its committed offsets; refused while it has members."""
        self.require(name)
        self.refuse_if_active(name, "deleting it")
        self.live.pop(name, None)
        self.book.forget(name)

    # -- helpers -----------------------------------------------------------------------------
    def _log(self, partition: int) -> Any:
        logs = self.stream.logs
        if not 0 <= partition < len(logs):
            raise UnknownPartition(f"stream '{self.stream.name}' in vhost '{self.stream.vhost}' "
                                   f"has no partition {partition}")
        return logs[partition]

    def require(self, name: str) -> ConsumerGroup | None:
        """The live group (None if only its offsets exist); ``UnknownGroup`` if neither."""
        live = self.live.get(name)
        if live is None and name not in self:
            raise UnknownGroup(f"consumer group '{name}' not found on stream "
                               f"'{self.stream.name}' in vhost '{self.stream.vhost}'")
        return live

    def refuse_if_active(self, name: str, doing: str) -> None:
        """``GroupActive`` if the group has members: only a stopped group is moved."""
        live = self.live.get(name)
        if live is None or not live.active:
            return
        members, held = len(live.members), len(live.held)
        what = f"{members} active member(s)" + (f" and {held} static member(s) within their "
                                                 f"session timeout" if held else "")
        raise GroupActive(f"consumer group '{name}' on stream '{self.stream.name}' has "
                          f"{what}: stop its consumers before {doing}")
