"""The consumer groups of one stream, behind the one API every front end uses.

A group's state is in two parts, both here in ``queues/``: the live group
(``groups_members.ConsumerGroup``: members, assignment, unacked progress) and its committed
offsets (``offsets.OffsetBook``, durable in the stream's offsets log). A group exists
while it has either, so after a restart a group known only by its offsets is still
listed, described, reset and deleted. AMQP consumers ``join`` and ``leave``; the
management API (and the CLI through it) lists, describes, resets and deletes; another
front end can ``commit`` and read ``committed`` on the same book. A refusal is a
``GroupError`` whose text a front end shows as it is.

Another front end's members (Kafka's, whose group protocol runs in its own coordinator)
are seen through ``attach_external``: a provider that answers, when asked, the group's
current members with this stream's partitions. So listing, describing, lag and the
"refused while active" rule treat them as members, and a group's members come from one
protocol at a time: an AMQP consumer joining a group held by external members is refused
(405), and the other front end asks ``amqp_active`` before letting its members in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartbroker.errors import resource_locked
from smartbroker.queues.groups_members import ConsumerGroup, GroupMember
from smartbroker.queues.offsets import OffsetBook, OffsetReset, position

if TYPE_CHECKING:
    from smartbroker.queues.stream import Reader, StreamQueue

__all__ = ["ExternalMembers", "GroupActive", "GroupError", "GroupInfo", "GroupMember", "MemberInfo",
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
    consumer_tag: str  # the AMQP consumer tag, or the other protocol's member id
    instance_id: str | None
    partitions: tuple[int, ...]  # of this stream
    client_id: str | None = None
    client_host: str | None = None
    protocol: str = "amqp"


ExternalMembers = Callable[[], Sequence[MemberInfo]]
"""The current members of a group held by another front end (empty: none now)."""


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
    protocol: str | None = None  # whose members: "amqp", "kafka"; None without members

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
        self.external: dict[str, ExternalMembers] = {}

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

    def validate_join(self, name: str, arguments: Mapping[str, Any]) -> None:
        """Refuse (405, before anything changes) an AMQP consumer joining a group whose
        members are another protocol's: a group's members come from one protocol at a time."""
        self.validate_arguments(arguments)
        members = self.external_members(name)
        if members:
            raise resource_locked(
                f"consumer group '{name}' on stream '{self.stream.name}' in vhost "
                f"'{self.stream.vhost}' has {len(members)} {members[0].protocol.capitalize()} "
                f"member(s): a group's members come from one protocol at a time")

    # -- members of another front end (Kafka) ----------------------------------------------
    def attach_external(self, name: str, provider: ExternalMembers) -> None:
        """Let ``provider`` tell who the group's members are (replaces an earlier one)."""
        self.external[name] = provider

    def detach_external(self, name: str) -> None:
        self.external.pop(name, None)

    def external_members(self, name: str) -> tuple[MemberInfo, ...]:
        provider = self.external.get(name)
        return tuple(provider()) if provider is not None else ()

    def amqp_active(self, name: str) -> bool:
        """Whether AMQP consumers hold the group (members, or static members away within
        their session timeout): the other front end refuses its members then."""
        live = self.live.get(name)
        return live is not None and live.active

    # -- reading -----------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return (name in self.live or any(g == name for g, _ in self.book.offsets)
                or (isinstance(name, str) and bool(self.external_members(name))))

    def names(self) -> list[str]:
        held = {name for name in self.external if self.external_members(name)}
        return sorted(set(self.live) | self.book.groups() | held)

    def committed(self, name: str, partition: int) -> int:
        """The next offset the group reads in ``partition`` (the start if it never committed)."""
        return position(self.book.get(name, partition), self._log(partition))

    def lag(self, name: str, partition: int) -> int:
        return max(self._log(partition).next_offset - self.committed(name, partition), 0)

    def describe(self, name: str) -> GroupInfo:
        live = self.require(name)
        owners = {p: m.reader.consumer.tag for p, m in live.owner.items()} if live else {}
        external = self.external_members(name)
        for member in external:
            owners.update(dict.fromkeys(member.partitions, member.consumer_tag))
        partitions = []
        for p, lg in enumerate(self._views()):
            committed = position(self.book.get(name, p), lg)
            partitions.append(PartitionLag(p, committed, lg.first_offset, lg.next_offset,
                                           max(lg.next_offset - committed, 0), owners.get(p)))
        members = tuple(_amqp_member(m) for m in live.members) if live else ()
        active = live is not None and live.active
        protocol = "amqp" if active else external[0].protocol if external else None
        return GroupInfo(name, self.stream.name, self.stream.vhost, active or bool(external),
                         live.mode if live else None, members + external,
                         len(live.held) if live else 0, tuple(partitions), protocol)

    def describe_all(self) -> list[GroupInfo]:
        return [self.describe(name) for name in self.names()]

    # -- changing ----------------------------------------------------------------------------
    def commit(self, name: str, partition: int, offset: int, metadata: str = "",
               epoch: int = -1) -> None:
        """Commit for a front end whose members commit explicitly (the AMQP members
        commit as they ack, in ``ConsumerGroup``); creates the group if need be."""
        self._log(partition)
        self.book.commit(name, partition, offset, metadata, epoch)

    def make_commits_survive_crash(self) -> None:
        """Hand the commits made so far to the OS, before a front end acknowledges them:
        an acknowledged commit then survives a broker crash (kill -9), as Kafka's page
        cache holds it, not a power cut (the offsets log's group commit fsyncs later)."""
        self.book.log.write_out()

    def reset(self, name: str, to: OffsetReset, *, dry_run: bool = False) -> list[OffsetMove]:
        """Move every partition's committed offset (``kafka-consumer-groups
        --reset-offsets``); refused while the group has members."""
        self.require(name)
        self.refuse_if_active(name, "resetting offsets")
        plan = []
        for p, lg in enumerate(self._views()):
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

    def forget_offsets(self, name: str, partitions: list[int]) -> None:
        """Delete the group's committed offsets of ``partitions`` (Kafka's OffsetDelete;
        the front end has checked that no member consumes the stream)."""
        for p in partitions:
            self._log(p)
        self.book.forget(name, partitions)

    # -- helpers -----------------------------------------------------------------------------
    def _views(self) -> list[Any]:
        """Each partition's log as describe and reset read its bounds; a stream whose
        partitions are spread over cluster nodes gives those of other nodes as they last
        told them (``cluster/partition_spread.py``)."""
        views = getattr(self.stream, "group_views", None)
        return views() if views is not None else list(self.stream.logs)

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
        external = self.external_members(name)
        if external:
            raise GroupActive(f"consumer group '{name}' on stream '{self.stream.name}' has "
                              f"{len(external)} active {external[0].protocol.capitalize()} "
                              f"member(s): stop its consumers before {doing}")
        live = self.live.get(name)
        if live is None or not live.active:
            return
        members, held = len(live.members), len(live.held)
        what = f"{members} active member(s)" + (f" and {held} static member(s) within their "
                                                 f"session timeout" if held else "")
        raise GroupActive(f"consumer group '{name}' on stream '{self.stream.name}' has "
                          f"{what}: stop its consumers before {doing}")


def _amqp_member(member: GroupMember) -> MemberInfo:
    """An AMQP member as every view shows it: client id is the connection's name (or the
    client library's product), client host its peer address, when the consumer has them."""
    consumer = member.reader.consumer
    conn = getattr(getattr(consumer, "channel", None), "conn", None)
    peer = getattr(conn, "peer", None)
    props = getattr(conn, "client_properties", None)
    props = props if isinstance(props, dict) else {}
    client_id = props.get("connection_name") or props.get("product")
    if isinstance(client_id, bytes):
        client_id = client_id.decode(errors="replace")
    host = peer.rpartition(":")[0] or None if isinstance(peer, str) else None
    return MemberInfo(consumer.tag, member.instance_id, tuple(member.partitions),
                      client_id if isinstance(client_id, str) else None, host)
