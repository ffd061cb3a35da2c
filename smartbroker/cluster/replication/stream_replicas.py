"""Replicated streams on one cluster node: each partition's log handed to the replication
core on every member node, and the stream told which partitions this node leads.

A stream whose placement names replica sets (``spread_replicas``: partition p copied on
``partition_members[p]``) is held on every node (``partition_spread``). On each member
of partition p the core gets that partition's ``SegmentLog`` (``Replication.open``,
log id ``<vhost>/<queue>/<p>``); on partition 0's members it also gets the group
offsets log (id ``<vhost>/<queue>``, whose leader is the stream's: Kafka's group
coordinator). Then, as the core's roles change:

* **leading p** (at the first open, or after winning an election): the placement names
  this node for p (the election wrote it; applied here at once rather than when the
  watch brings it back), the stream rebuilds p's producer state from its copy and serves
  it up to the high watermark, and its publishes wait for the replica set
  (``queues/stream_replicated.py``);
* **following p**: nothing of p is read here (its readers are relayed from the leader's
  node, as a spread stream's are), and nothing is appended but the core's frames;
* **leading the offsets log**: the group offsets are read again from this node's copy and
  commits go to it (Kafka OffsetCommit waits for the replica set); elsewhere the stream's
  offset book writes to a detached in-memory log, so the copy the core appends to is only
  ever written by the core.

The ``StreamCopies`` of a stream is its ``replication``: Produce asks it whether the
ISR is large enough for acks=all (``shortfall``) before appending. Streams that are not
replicated, and a single node, never reach this module.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.spread_replicas import OFFSETS, log_id, replicated
from smartbroker.queues import stream_replicated
from smartbroker.queues.stream import StreamQueue
from smartbroker.store.memory import MemoryLog

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding

log = logging.getLogger("smartbroker.cluster")
MIN_INSYNC = "x-min-insync-replicas"  # Kafka's min.insync.replicas (kafka/stored_configs.py)


def min_insync(members: Sequence[str], overrides: Any) -> int:
    """A majority of the members, or the topic's min.insync.replicas (at most all)."""
    wanted = (overrides or {}).get(MIN_INSYNC)
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > 0:
        return min(wanted, len(members))
    return len(members) // 2 + 1


def _leading(role: Any) -> bool:
    return str(getattr(role, "value", role)) == "leader"


@dataclasses.dataclass
class Copy:
    """One of the stream's logs replicated through this node."""

    part: int | str  # a partition index, or OFFSETS
    replicated: Any  # the core's ReplicatedLog
    members: tuple[str, ...]
    need: int  # min-insync
    leading: bool = False


class StreamCopies:
    """This node's replicas of one stream (``StreamQueue.replication``)."""

    def __init__(self, owner: StreamReplicas, stream: StreamQueue) -> None:
        self.owner = owner
        self.stream = stream
        self.copies: dict[int | str, Copy] = {}
        self.detached = MemoryLog()  # the offset book's log while another node leads it
        self.real_offsets: Any = None  # the offsets log the core replicates

    # -- Produce's question ------------------------------------------------------------
    def shortfall(self, partition: int) -> str | None:
        """Why acks=all is refused before the append (Kafka's NOT_ENOUGH_REPLICAS), or
        None when the in-sync set is at least min.insync.replicas."""
        copy = self.copies.get(partition)
        isr = None if copy is None else getattr(copy.replicated, "isr", None)
        if copy is None or isr is None or len(isr) >= copy.need:
            return None
        return (f"The size of the current ISR {sorted(isr)} is insufficient to satisfy the "
                f"min.isr requirement of {copy.need} for partition "
                f"{self.stream.name}-{partition}")

    # -- roles ---------------------------------------------------------------------------
    def open(self, placement: Any) -> None:
        """Open every log of the stream this node is a member of (idempotent)."""
        stream = self.stream
        node = self.owner.node
        replication = self.owner.replication
        if replication is None:
            return
        wanted: list[tuple[int | str, Any, tuple[str, ...]]] = []
        for p, lg in enumerate(stream.logs):
            members = tuple(placement.replicas(p))
            if node in members and len(members) > 1:
                wanted.append((p, lg, members))
        first = tuple(placement.replicas(0))
        if node in first and len(first) > 1:
            wanted.append((OFFSETS, self._offsets_log(), first))
        for part, lg, members in wanted:
            if part in self.copies:
                continue
            need = min_insync(members, stream.meta.overrides)
            rl = replication.open(log_id(stream.vhost, stream.name, part), lg, members, need,
                                  lambda role, part=part: self.role_changed(part, role))
            self.copies[part] = Copy(part, rl, members, need)
            hooks = getattr(rl, "on_high_watermark", None)
            if hooks is not None and isinstance(part, int):
                hooks.append(lambda hw, p=part: self._advanced(p, hw))
        stream_replicated.replicate(stream, self)
        if self._appended not in stream.on_append:  # a publish nobody awaits ships too
            stream.on_append.append(self._appended)
        for copy in list(self.copies.values()):
            self.role_changed(copy.part, getattr(copy.replicated, "role", None))

    def _offsets_log(self) -> Any:
        """The real offsets log (a LazyLog is opened: the core appends to it)."""
        if self.real_offsets is None:
            book = self.stream.offsets
            lazy = book.log
            lazy.next_offset  # noqa: B018 - opens a LazyLog's real log
            self.real_offsets = getattr(lazy, "_log", None) or lazy
            book.log = self.detached  # until this node leads it
        return self.real_offsets

    def role_changed(self, part: int | str, role: Any) -> None:
        copy = self.copies.get(part)
        stream = self.stream
        if copy is None or stream.deleted or stream.closed:
            return
        leading = _leading(role)
        if leading == copy.leading:
            return
        copy.leading = leading
        if part == OFFSETS:
            book = stream.offsets
            if leading:
                book.log = self.real_offsets
                stream_replicated.reload_offsets(stream)
            else:
                book.log = self.detached
        elif leading:
            assert isinstance(part, int)
            stream_replicated.lead(stream, part, copy.replicated.committed,
                                   int(getattr(copy.replicated, "high_watermark", 0)))
        else:
            assert isinstance(part, int)
            stream_replicated.follow(stream, part)
        if leading:
            log.info("this node leads %s of stream '%s' in vhost '%s'",
                     "the group offsets" if part == OFFSETS else f"partition {part}",
                     stream.name, stream.vhost)
            self.owner.lead_in_placement(stream.vhost, stream.name, part)

    def _appended(self, p: int) -> None:
        """Records were appended to partition ``p`` (led here): the core ships them
        even if no confirm or acks=all waits for them (it batches per loop pass)."""
        copy = self.copies.get(p)
        if copy is not None and copy.leading:
            copy.replicated.appended()

    def _advanced(self, p: int, hw: int) -> None:
        copy = self.copies.get(p)
        if copy is not None and copy.leading:
            stream_replicated.advance(self.stream, p, hw)

    def offsets_committed(self) -> Any:
        """What an OffsetCommit waits for: the offsets log committed by the replica set
        (None when this node does not replicate it)."""
        copy = self.copies.get(OFFSETS)
        if copy is None or not copy.leading or self.real_offsets is None:
            return None
        return copy.replicated.committed(self.real_offsets.next_offset - 1)

    def close(self, delete: bool = False) -> None:
        replication = self.owner.replication
        stream = self.stream
        if self._appended in stream.on_append:
            stream.on_append.remove(self._appended)
        for part in list(self.copies):
            self.copies.pop(part)
            if replication is not None:
                try:
                    replication.close(log_id(stream.vhost, stream.name, part))
                except Exception as exc:  # never a traceback at shutdown or delete
                    log.warning("closing replica %s of stream '%s' failed: %s", part,
                                stream.name, exc)


class StreamReplicas:
    """This node's replicated streams, by (vhost, name)."""

    def __init__(self, forwarding: QueueForwarding, node: Any) -> None:
        self.forwarding = forwarding
        self.node = forwarding.node
        self.cluster = node  # ClusterNode: its ``replication`` (the core), once built
        self.streams: dict[tuple[str, str], StreamCopies] = {}

    @property
    def replication(self) -> Any:
        return getattr(self.cluster, "replication", None)

    def attach(self, q: Any) -> Any:
        """Called with every queue built (``queue_factory``) and after placement changes:
        a replicated stream's logs of which this node is a member go to the core."""
        if not isinstance(q, StreamQueue) or q.deleted or q.closed:
            return q
        placement = self.forwarding.placement.get(q.vhost, q.name)
        if not replicated(placement):
            return q
        key = (q.vhost, q.name)
        found = self.streams.get(key)
        if found is not None and found.stream is not q:
            found.close()
            found = None
        if found is None:
            found = self.streams[key] = StreamCopies(self, q)
        found.open(placement)
        return q

    def placement_changed(self, vhost: str, name: str) -> None:
        host = self.forwarding.vhosts.get(vhost)
        q = None if host is None else host.queues.get(name)
        if q is None or getattr(q, "deleted", False):
            found = self.streams.pop((vhost, name), None)
            if found is not None:
                found.close()
            return
        self.attach(q)

    def attach_all(self, vhosts: Any) -> None:
        for host in vhosts:
            for q in list(host.queues.values()):
                self.attach(q)

    def lead_in_placement(self, vhost: str, name: str, part: int | str) -> None:
        """This node won ``part``: the local placement names it now (the election's
        txn wrote it to etcd; its watch event comes back later)."""
        table = self.forwarding.placement
        placement = table.get(vhost, name)
        if placement is None:
            return
        if part == OFFSETS:
            changed = dataclasses.replace(placement, leader=self.node)
        else:
            leaders = list(placement.partitions)
            if not isinstance(part, int) or not 0 <= part < len(leaders):
                return
            leaders[part] = self.node
            changed = dataclasses.replace(placement, partitions=tuple(leaders))
        if changed != placement:
            table.queues[(vhost, name)] = changed
            self.forwarding.placement_changed(vhost, name)

    def close(self) -> None:
        streams, self.streams = self.streams, {}
        for found in streams.values():
            found.close()


__all__ = ["StreamCopies", "StreamReplicas", "min_insync"]
