"""The Kafka group model: ``KafkaGroup`` and its ``KafkaMember``s, as Kafka's classic
group coordinator keeps them (``ClassicGroup``/``MemberMetadata``).

Plain data plus the questions other modules ask of it (which protocol the group would
pick, which topics its consumers subscribe to, who is assigned what). The transitions
live in ``coordinator.py``; ListGroups, DescribeGroups and the management views read
this model. Subscriptions and assignments are opaque bytes to the coordinator: only
groups of protocol type "consumer" have them in the consumer protocol's layout, which
``topics()`` and ``assigned()`` decode leniently (bytes in another layout give nothing,
never an exception).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EMPTY, PREPARING, COMPLETING, STABLE, DEAD = (
    "Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead")
STATES = (EMPTY, PREPARING, COMPLETING, STABLE, DEAD)
CONSUMER = "consumer"  # the protocol type of Kafka consumers (the only one decoded here)


@dataclass(eq=False)
class KafkaMember:
    """One member of a group, and what the coordinator is waiting for from or for it."""

    member_id: str
    group_instance_id: str | None  # static membership (KIP-345)
    client_id: str
    client_host: str  # as Kafka shows it: "/127.0.0.1"
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]  # (name, metadata) in the member's preference order
    assignment: bytes = b""
    # the coordinator's bookkeeping (not part of what other modules read)
    awaiting_join: Callable[[Any], None] | None = field(default=None, repr=False)
    awaiting_sync: Callable[[Any], None] | None = field(default=None, repr=False)
    is_new: bool = False  # joined and has not had its first JoinGroup answer yet
    heartbeat: Any = field(default=None, repr=False)  # the session timer handle

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        """Its metadata for ``protocol`` (one the group selected, so one it supports)."""
        return next((meta for name, meta in self.protocols if name == protocol), b"")

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        """Kafka's MemberMetadata.matches: the same protocols, in the same order, with the
        same metadata (a rejoin that changes nothing needs no rebalance)."""
        return self.protocols == protocols


@dataclass(eq=False)
class KafkaGroup:
    """A group as Kafka's classic coordinator has it: state, generation, leader, members."""

    group_id: str
    state: str = EMPTY
    protocol_type: str | None = None
    protocol_name: str | None = None
    generation: int = 0
    leader_id: str | None = None
    members: dict[str, KafkaMember] = field(default_factory=dict)
    # the coordinator's bookkeeping
    pending: dict[str, Any] = field(default_factory=dict, repr=False)  # member id -> timer
    static: dict[str, str] = field(default_factory=dict, repr=False)  # instance id -> member
    pending_sync: set[str] = field(default_factory=set, repr=False)
    new_member_added: bool = False  # during the initial rebalance delay
    initial_delay: bool = False  # the join timer running is the initial delay's
    join_timer: Any = field(default=None, repr=False)
    sync_timer: Any = field(default=None, repr=False)

    # -- questions -------------------------------------------------------------------------

    def rebalance_timeout_ms(self) -> int:
        """Kafka waits the longest rebalance timeout of its members for them to rejoin."""
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def all_joined(self) -> bool:
        return not self.pending and all(m.awaiting_join is not None
                                        for m in self.members.values())

    def supports(self, protocol_type: str, names: list[str]) -> bool:
        """Kafka's supportsProtocols: any type and protocols start an empty group; a
        member of a non-empty one needs its type and a protocol every member supports."""
        if not self.members:
            return bool(protocol_type) and bool(names)
        return protocol_type == self.protocol_type and any(
            all(n in m.protocol_names() for m in self.members.values()) for n in names)

    def select_protocol(self) -> str | None:
        """Kafka's selectProtocol: among the protocols all members support, the one most
        members list first (ties: the earliest in the first member's preference)."""
        members = list(self.members.values())
        if not members:
            return None
        candidates = [n for n in members[0].protocol_names()
                      if all(n in m.protocol_names() for m in members)]
        if not candidates:
            return None
        votes = {n: 0 for n in candidates}
        for m in members:
            votes[next(n for n in m.protocol_names() if n in votes)] += 1
        return max(candidates, key=lambda n: votes[n])  # max keeps the first of a tie

    def topics(self) -> set[str]:
        """The topics its consumers subscribe to (decoded from their metadata for the
        selected protocol, or their first one before a protocol is selected)."""
        if self.protocol_type != CONSUMER:
            return set()
        out: set[str] = set()
        for m in self.members.values():
            meta = m.metadata(self.protocol_name) if self.protocol_name else (
                m.protocols[0][1] if m.protocols else b"")
            out.update(subscription_topics(meta))
        return out

    def assigned(self) -> dict[str, dict[str, list[int]]]:
        """member id -> topic -> partitions, from the assignments of the last SyncGroup."""
        if self.protocol_type != CONSUMER:
            return {}
        return {m.member_id: assignment_partitions(m.assignment)
                for m in self.members.values()}


# -- the consumer protocol's bytes (ConsumerProtocolSubscription / Assignment) --------------


class _Reader:
    """Just enough of Kafka's (non-flexible) encoding to read the consumer protocol."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: struct.Struct) -> Any:
        value = fmt.unpack_from(self.data, self.pos)[0]
        self.pos += fmt.size
        return value

    def string(self) -> str:
        n = self.take(_INT16)
        if n < 0:
            return ""
        raw = self.data[self.pos:self.pos + n]
        if len(raw) != n:
            raise ValueError("truncated string")
        self.pos += n
        return raw.decode("utf-8", "replace")

    def count(self) -> int:
        n = self.take(_INT32)
        if n > len(self.data):  # each element takes a byte at least
            raise ValueError("array longer than its bytes")
        return max(n, 0)


_INT16, _INT32 = struct.Struct(">h"), struct.Struct(">i")


def subscription_topics(metadata: bytes) -> list[str]:
    """The topics of a ConsumerProtocolSubscription (version, topics, ...); [] when the
    bytes are not one."""
    try:
        r = _Reader(metadata)
        r.take(_INT16)
        return [r.string() for _ in range(r.count())]
    except (struct.error, ValueError):
        return []


def assignment_partitions(assignment: bytes) -> dict[str, list[int]]:
    """The partitions of a ConsumerProtocolAssignment (version, [topic, [partition]], ...);
    {} when the bytes are not one."""
    try:
        r = _Reader(assignment)
        r.take(_INT16)
        out: dict[str, list[int]] = {}
        for _ in range(r.count()):
            topic = r.string()
            out.setdefault(topic, []).extend(r.take(_INT32) for _ in range(r.count()))
        return out
    except (struct.error, ValueError):
        return {}


def encode_subscription(topics: list[str], version: int = 0) -> bytes:
    """A ConsumerProtocolSubscription v0 (for tests and tools; clients send their own)."""
    out = [_INT16.pack(version), _INT32.pack(len(topics))]
    for t in topics:
        raw = t.encode()
        out += (_INT16.pack(len(raw)), raw)
    out.append(_INT32.pack(-1))  # no user data
    return b"".join(out)


def encode_assignment(partitions: dict[str, list[int]], version: int = 0) -> bytes:
    """A ConsumerProtocolAssignment v0 (for tests and tools)."""
    out = [_INT16.pack(version), _INT32.pack(len(partitions))]
    for t, parts in partitions.items():
        raw = t.encode()
        out += (_INT16.pack(len(raw)), raw, _INT32.pack(len(parts)))
        out += [_INT32.pack(p) for p in parts]
    out.append(_INT32.pack(-1))
    return b"".join(out)
