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

from smartbroker.cluster.partition_spread import spread_of
from smartbroker.cluster.replication import stream_copy_files, stream_limits, stream_offsets
from smartbroker.cluster.replication.records import LogName
from smartbroker.cluster.replication.replicated_log import FOLLOWER_ROLE, LEADER_ROLE
from smartbroker.cluster.spread_replicas import OFFSETS
from smartbroker.queues import stream_replicated
from smartbroker.queues.stream import StreamQueue

if TYPE_CHECKING:
    from smartbroker.cluster.replication.stream_replica_sets import StreamReplicas

log = logging.getLogger("smartbroker.cluster")
MIN_INSYNC = "x-min-insync-replicas"  # Kafka's min.insync.replicas (kafka/stored_configs.py)


def min_insync(members: Sequence[str], overrides: Any) -> int:
    """A majority of the members, or the topic's min.insync.replicas (at most all)."""
    wanted = (overrides or {}).get(MIN_INSYNC)
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > 0:
        return min(wanted, len(members))
    return len(members) // 2 + 1


def _leading(role: Any) -> bool:
    return role == LEADER_ROLE


def _name(stream: StreamQueue, part: int | str) -> LogName:
    """The core's name of a partition's log, or (``OFFSETS``) of the group offsets."""
    return LogName(stream.vhost, stream.name, None if part == OFFSETS else int(part))


@dataclasses.dataclass
class Copy:
    """One of the stream's logs replicated through this node."""

    part: int | str  # a partition index, or OFFSETS
    replicated: Any  # the core's ReplicatedLog
    members: tuple[str, ...]
    need: int  # min-insync
    leading: bool = False
    settled: bool = False  # it has had a role (leader or follower) since it was opened


class StreamCopies:
    """This node's replicas of one stream (``StreamQueue.replication``)."""

    def __init__(self, owner: StreamReplicas, stream: StreamQueue) -> None:
        self.owner = owner
        self.stream = stream
        self.copies: dict[int | str, Copy] = {}
        self.closed = False
        # the offset book's log while another node leads the offsets: kept here and sent
        # to that node (stream_offsets.py)
        self.detached = stream_offsets.ForwardedOffsets(self)
        self.real_offsets: Any = None  # the offsets log the core replicates
        self.wiping: set[int | str] = set()  # removed copies being deleted

    # -- Produce's question ------------------------------------------------------------
    def shortfall(self, partition: int) -> str | None:
        """Why acks=all is refused before the append (Kafka's NOT_ENOUGH_REPLICAS), or
        None when the in-sync set is at least min.insync.replicas."""
        copy = self.copies.get(partition)
        if copy is None:
            return None
        rl = copy.replicated
        need = min_insync(rl.members, self.stream.meta.overrides)  # AlterConfigs may move it
        if need != copy.need:
            copy.need = rl.min_insync = need
        isr = rl.isr
        if len(isr) >= need:
            return None
        return (f"The size of the current ISR {sorted(isr)} is insufficient to satisfy the "
                f"min.isr requirement of {copy.need} for partition "
                f"{self.stream.name}-{partition}")

    # -- roles ---------------------------------------------------------------------------
    def open(self, placement: Any) -> None:
        """Open every log of the stream this node is a member of (idempotent). The core
        reads its keys in the background; until it tells this node's role a partition
        is read by nobody here, and its confirms wait (``committed`` waits for the
        election under way)."""
        stream = self.stream
        node = self.owner.node
        replication = self.owner.replication
        if replication is None:
            return
        if stream.limits is None:  # what this node served without replicas stays readable
            stream_replicated.replicate(stream, self, stream_limits.initial(
                stream, placement, node, stream in self.owner.served))
        stream_replicated.replicate(stream, self)
        stream_limits.follow(stream, placement, node, self.copies)
        if self._appended not in stream.on_append:  # a publish nobody awaits ships too
            stream.on_append.append(self._appended)
        wanted: list[tuple[int | str, Any, tuple[str, ...]]] = []
        for p, lg in enumerate(stream.logs):
            members = tuple(placement.replicas(p))
            if node in members and len(members) > 1:
                wanted.append((p, lg, members))
        first = tuple(placement.replicas(0))
        if node in first and len(first) > 1:
            wanted.append((OFFSETS, None, first))
        elif node not in first and stream.offsets.log is not self.detached:  # no copy here
            self._offsets_log()
            self.owner.spawn(stream_offsets.read_from_leader(self, None))
        for part, lg, members in wanted:
            if part not in self.copies:
                self._open(part, lg, members)
        self.prune(placement)

    def prune(self, placement: Any) -> None:
        """Logs whose replica set no longer names this node (``streams delete-replica``,
        a Kafka reassignment) stop being replicated here and their files go, as Kafka
        deletes a removed replica's log; a copy this node still leads waits for its
        handover (pruned when it follows). A later re-add copies from scratch."""
        if placement is None or self.closed:
            return
        node = self.owner.node
        for part, copy in list(self.copies.items()):
            members = placement.replicas(0 if part == OFFSETS else int(part))
            if (node in members and len(members) > 1) or copy.leading:
                continue
            del self.copies[part]
            try:
                self.owner.replication.close(_name(self.stream, part))
            except Exception as exc:  # noqa: BLE001 - one line, the files go anyway
                log.warning("closing removed replica %s failed: %s", part, exc)
            self.owner.spawn(stream_copy_files.wipe(self, part))
        for p in range(len(placement.partition_members)):  # a copy left from a restart
            if node not in placement.replicas(p) and p not in self.copies \
                    and self.stream.logs[p].next_offset > 0 and self.stream.limits is not None:
                self.owner.spawn(stream_copy_files.wipe(self, p))

    def configs_changed(self) -> None:
        """The topic's configs changed (AlterConfigs here or on another node): each
        partition's min-insync follows ``min.insync.replicas`` at once."""
        for copy in self.copies.values():
            if isinstance(copy.part, int):
                rl = copy.replicated
                copy.need = rl.min_insync = min_insync(rl.members, self.stream.meta.overrides)

    def _open(self, part: int | str, lg: Any, members: tuple[str, ...]) -> None:
        stream = self.stream
        need = min_insync(members, stream.meta.overrides)
        try:
            rl = self.owner.replication.open(
                _name(stream, part), self._offsets_log() if lg is None else lg, members,
                min_insync=need, on_role_change=lambda role: self.role_changed(part, role))
        except Exception as exc:  # e.g. open already (a stream object replaced): one line
            log.warning("replica %s of stream '%s' in vhost '%s' not opened: %s", part,
                        stream.name, stream.vhost, exc)
            return
        self.copies[part] = Copy(part, rl, members, need)
        if isinstance(part, int):  # its confirms wait for the replica set from now on
            rl.on_high_watermark.append(lambda hw: self._advanced(part, hw))
            stream_replicated.confirm_through(stream, part, rl.committed)
        self.role_changed(part, rl.role)

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
        moved = copy.settled  # a role held before: readers here were served elsewhere
        copy.settled = copy.settled or role in (LEADER_ROLE, FOLLOWER_ROLE)
        if leading == copy.leading:
            return
        copy.leading = leading
        if not leading:  # handed over: removed from the replica set meanwhile?
            self.prune(self.owner.forwarding.placement.get(stream.vhost, stream.name))
        if part == OFFSETS:
            book = stream.offsets
            if leading:
                book.log = self.real_offsets
                stream_replicated.reload_offsets(stream)
                unsent, self.detached.pending = self.detached.pending, {}
                if unsent:  # committed here while another node led them (or no one did)
                    stream_offsets.apply_records(book, list(unsent.items()), write=True)
                for p, led in list(self.copies.items()):
                    if isinstance(p, int) and led.leading:
                        stream_offsets.resume_groups(stream, p)
            else:
                book.log = self.detached
        else:
            assert isinstance(part, int)
            if moved:
                self._cancel_readers(part, leading)
            if leading:
                stream_replicated.lead(stream, part, copy.replicated.committed,
                                       copy.replicated.high_watermark)
                copy.replicated.appended()  # the high watermark now (an ISR of one: its end)
                stream_offsets.serve_partition(self, part)
            else:
                stream_replicated.follow(stream, part)
        if leading:
            log.info("this node leads %s of stream '%s' in vhost '%s'",
                     "the group offsets" if part == OFFSETS else f"partition {part}",
                     stream.name, stream.vhost)
            self.owner.lead_in_placement(stream.vhost, stream.name, part)

    def _cancel_readers(self, p: int, gained: bool) -> None:
        """Partition ``p`` became readable here (``gained``), or stopped being. A client's
        consumer here carries on (``spread_carry_on``): it reads ``p`` on from where it
        got to, here or through a relay to the new leader. A reader another node relays
        holds a cursor this node did not serve: it is cancelled, and its own node
        carries its consumer on."""
        stream = self.stream
        found = spread_of(stream)
        carry = None if found is None else found.carry
        for consumer, reader in list(stream.readers.items()):
            if p not in reader.cursors:
                continue
            if carry is not None and (carry.reposition(consumer, p) if gained
                                      else carry.keep(consumer)):
                continue
            stream.remove_consumer(consumer)
            consumer.cancelled_by_broker()

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

    def close(self, forget: bool = False) -> None:
        """Stop replicating here; ``forget``: the stream was deleted, so the replica
        records of the logs this node led go too."""
        self.closed = True
        replication = self.owner.replication
        stream = self.stream
        if self._appended in stream.on_append:
            stream.on_append.remove(self._appended)
        copies, self.copies = self.copies, {}
        for copy in copies.values():
            if replication is None:
                continue
            name = _name(stream, copy.part)
            try:
                if forget and copy.leading:
                    self.owner.spawn(replication.forget(name))
                else:
                    replication.close(name)
            except Exception as exc:  # never a traceback at shutdown or delete
                log.warning("closing replica %s of stream '%s' failed: %s", copy.part,
                            stream.name, exc)


__all__ = ["Copy", "StreamCopies", "min_insync"]
