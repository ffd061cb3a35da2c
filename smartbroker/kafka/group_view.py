"""One consumer group as Kafka's admin APIs see it, whichever protocol its members speak.

A group id names one group across the Kafka vhost, but its parts live in three places:
Kafka members in the coordinator (``coordinator.Coordinator``, G1's model), AMQP members
in each stream's live groups, and committed offsets in each stream's ``OffsetBook``.
``GroupView`` merges them into Kafka's ``GroupSummary`` shape (state, protocol type,
assignor, members with their consumer-protocol metadata and assignment):

* Kafka members: the coordinator's group as it is (Kafka's GroupMetadata.summary: member
  metadata and assignment only while Stable).
* AMQP members (``x-consumer-group`` consumers of streams of the Kafka vhost): state
  Stable, protocol type ``consumer`` (they consume topics, as Kafka consumers do) and
  assignor ``amqp-cooperative`` or ``amqp-eager`` (the group's ``x-rebalance``); each
  member's metadata and assignment are encoded in Kafka's consumer protocol (v0), so
  Kafka tools show which partitions it owns. Member id: the consumer tag.
* Offsets only: state Empty, protocol type "" (Kafka's answer for a group known only by
  the offsets a "simple" consumer committed).

``kafka_members`` is the other direction: what a stream's ``StreamGroups`` shows of a
Kafka group (``attach_external``), so ``smartbroker groups``, ``/api/groups`` and the
dashboard list Kafka members with lag, and refuse a reset while they are there.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from smartbroker.kafka.produce import Topics
from smartbroker.queues.groups import MemberInfo

CONSUMER = "consumer"  # Kafka's protocol type of consumer groups
EMPTY, STABLE, DEAD = "Empty", "Stable", "Dead"


class Coordinator(Protocol):
    """What this module needs of the Kafka group coordinator (kafka/coordinator.py)."""

    groups: dict[str, Any]
    watchers: list[Callable[[Any], None]]  # called with a group whenever its members change

    def group(self, group_id: str) -> Any: ...

    def remove(self, group_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class MemberSummary:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group_id: str
    state: str
    protocol_type: str
    protocol: str  # the assignor while Stable, else ""
    members: tuple[MemberSummary, ...]


# -- Kafka's consumer protocol (ConsumerProtocolSubscription/Assignment, version 0) -------
def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def subscription_bytes(topics: Sequence[str]) -> bytes:
    """Version 0: the topics, no user data."""
    return (struct.pack(">hi", 0, len(topics)) + b"".join(_string(t) for t in topics)
            + struct.pack(">i", -1))


def assignment_bytes(assigned: Mapping[str, Sequence[int]]) -> bytes:
    """Version 0: topic -> partitions, no user data."""
    out = [struct.pack(">hi", 0, len(assigned))]
    for topic, partitions in assigned.items():
        out.append(_string(topic) + struct.pack(f">i{len(partitions)}i", len(partitions),
                                                *partitions))
    out.append(struct.pack(">i", -1))
    return b"".join(out)


# -- the view ----------------------------------------------------------------------------
def live_kafka_group(coordinator: Coordinator | None, group_id: str) -> Any:
    """The coordinator's group unless there is none (or it is Dead)."""
    group = None if coordinator is None else coordinator.group(group_id)
    return None if group is None or group.state == DEAD else group


def kafka_members(coordinator: Callable[[], Coordinator | None], group_id: str,
                  topic: str) -> tuple[MemberInfo, ...]:
    """The Kafka group's members with their partitions of ``topic``: the provider a
    stream's ``StreamGroups.attach_external`` takes (empty once the group has none)."""
    group = live_kafka_group(coordinator(), group_id)
    if group is None or not group.members:
        return ()
    assigned = group.assigned()
    return tuple(MemberInfo(m.member_id, m.group_instance_id,
                            tuple(sorted(assigned.get(m.member_id, {}).get(topic, ()))),
                            m.client_id, m.client_host, "kafka")
                 for m in group.members.values())


def link_streams(topics: Topics, coordinator: Callable[[], Coordinator | None],
                 group_id: str, names: Iterator[str] | Sequence[str] | set[str]) -> None:
    """Attach the Kafka group's members to the streams of ``names`` (those that exist):
    call it when the group's subscription is known or changes. Idempotent."""
    for name in names:
        queue = _queue(topics, name)
        if queue is not None:
            queue.groups.attach_external(
                group_id, lambda t=name: kafka_members(coordinator, group_id, t))


def amqp_holder(topics: Topics, group_id: str) -> str | None:
    """The first stream of the Kafka vhost where AMQP consumers hold ``group_id`` (None:
    nowhere). A group's members come from one protocol at a time, so a Kafka JoinGroup
    for such a group is answered INCONSISTENT_GROUP_PROTOCOL, as Kafka answers a member
    whose protocol type differs from the group's."""
    return next((n for n, q in _streams(topics) if q.groups.amqp_active(group_id)), None)


def group_watcher(topics: Topics, coordinator: Callable[[], Coordinator | None]
                  ) -> Callable[[Any], None]:
    """What the coordinator calls whenever a group's members or assignment change: its
    members are attached to the streams holding its committed offsets (Kafka refuses to
    reset any offset of a group with members; ``groups.GroupCoordinator`` attaches them to
    the streams it subscribes to), and detached from every stream once the group is gone."""
    def changed(group: Any) -> None:
        group_id = group.group_id
        if group.state == DEAD:
            for _, queue in _streams(topics):
                queue.groups.detach_external(group_id)
            return
        if not group.members:
            return  # an Empty group: the providers already answer no members
        names = {n for n, q in _streams(topics)
                 if group_id not in q.groups.external and q.groups.book.partitions(group_id)}
        link_streams(topics, coordinator, group_id, names)
    return changed


def _streams(topics: Topics) -> list[tuple[str, Any]]:
    vhost = topics.broker.vhosts.get(topics.vhost)
    if vhost is None:
        return []
    return [(name, q) for name, q in list(vhost.queues.items())
            if q.capabilities.offset_log and topics.valid_name(name)]


def _queue(topics: Topics, name: str) -> Any:
    vhost = topics.broker.vhosts.get(topics.vhost)
    queue = None if vhost is None else vhost.queues.get(name)
    return queue if queue is not None and queue.capabilities.offset_log else None


class GroupView:
    """Groups of the Kafka vhost across both protocols and the offset books."""

    def __init__(self, topics: Topics, coordinator: Callable[[], Coordinator | None]) -> None:
        self.topics = topics
        self.coordinator = coordinator  # None until (or unless) a coordinator exists

    def streams(self) -> list[tuple[str, Any]]:
        """(topic, stream queue) of every stream of the Kafka vhost a client can name."""
        return _streams(self.topics)

    def kafka_group(self, group_id: str) -> Any:
        return live_kafka_group(self.coordinator(), group_id)

    def group_ids(self) -> set[str]:
        """Every group known: the coordinator's (not Dead), and every stream's AMQP and
        offsets-only groups (``StreamGroups.names``)."""
        coordinator = self.coordinator()
        known = set(getattr(coordinator, "groups", {}) or {}) if coordinator else set()
        ids = {g for g in known if self.kafka_group(g) is not None}
        for _, queue in self.streams():
            ids.update(queue.groups.names())
        return ids

    def amqp_streams(self, group_id: str) -> list[tuple[str, Any]]:
        """The streams where AMQP consumers hold the group."""
        return [(n, q) for n, q in self.streams() if q.groups.amqp_active(group_id)]

    def offset_streams(self, group_id: str) -> list[tuple[str, Any]]:
        """The streams where the group exists (committed offsets or a live AMQP group)."""
        return [(n, q) for n, q in self.streams()
                if group_id in q.groups.live or q.groups.book.partitions(group_id)]

    def summary(self, group_id: str) -> GroupSummary | None:
        """Kafka's GroupSummary of the group; None when it does not exist (Dead)."""
        group = self.kafka_group(group_id)
        if group is not None and (group.members or group.state != EMPTY):
            return _kafka_summary(group)
        amqp = self.amqp_streams(group_id)
        if amqp:
            return _amqp_summary(group_id, amqp)
        if group is not None or self.offset_streams(group_id):
            protocol_type = (group.protocol_type or "") if group is not None else ""
            return GroupSummary(group_id, EMPTY, protocol_type, "", ())
        return None


def _kafka_summary(group: Any) -> GroupSummary:
    stable = group.state == STABLE
    members = []
    for m in group.members.values():
        metadata = dict(m.protocols).get(group.protocol_name, b"") if stable else b""
        members.append(MemberSummary(m.member_id, m.group_instance_id, m.client_id or "",
                                     m.client_host or "", metadata or b"",
                                     (m.assignment or b"") if stable else b""))
    return GroupSummary(group.group_id, group.state, group.protocol_type or "",
                        (group.protocol_name or "") if stable else "", tuple(members))


def _amqp_summary(group_id: str, streams: list[tuple[str, Any]]) -> GroupSummary:
    members = []
    modes = set()
    for topic, queue in streams:
        modes.add(queue.groups.live[group_id].mode)
        for m in queue.groups.describe(group_id).members:
            if m.protocol != "amqp":
                continue
            host = f"/{m.client_host}" if m.client_host else ""
            members.append(MemberSummary(m.consumer_tag, m.instance_id, m.client_id or "", host,
                                         subscription_bytes([topic]),
                                         assignment_bytes({topic: m.partitions})))
    return GroupSummary(group_id, STABLE, CONSUMER, "amqp-" + "/".join(sorted(modes)),
                        tuple(members))
