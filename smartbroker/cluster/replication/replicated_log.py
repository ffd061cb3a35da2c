"""``ReplicatedLog``: one log's replication state on this node, and what its owner uses.

The owner (a quorum queue, a stream partition) appends to its ``SegmentLog`` as on one
node while ``role`` is ``leader``, and awaits ``committed(offset)`` before it confirms;
while ``follower`` (or ``none``: no leader known) it must not touch the log, which the
core fills with the leader's frames. ``on_role_change(role)`` is told every change:
``leader`` comes after the election's transaction and the epoch checkpoint (the owner
then rebuilds its state from the log, as at a restart); ``follower``/``none`` means
stop serving (every ``committed`` waiter has failed with ``NotLeader``).

The etcd keys' values arrive from the service's watch and from reads (``apply``), newest
revision wins, and drive the role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.replication.follower import Follower
from smartbroker.cluster.replication.leader import Leader
from smartbroker.cluster.replication.records import (
    ISR,
    LEADER,
    TRANSFER,
    IsrRecord,
    LogName,
    NotLeader,
    Versioned,
    decode_node,
)
from smartbroker.store.replica import EpochCheckpoints

if TYPE_CHECKING:
    from smartbroker.cluster.replication.service import Replication
    from smartbroker.store.log import SegmentLog

log = logging.getLogger("smartbroker.cluster.replication")
LEADER_ROLE, FOLLOWER_ROLE, NO_ROLE = "leader", "follower", "none"
RoleCallback = Callable[[str], Any]


class ReplicatedLog:
    """See the module docstring; built by ``Replication.open``."""

    def __init__(self, ctx: Replication, name: LogName, lg: SegmentLog,
                 members: tuple[str, ...], min_insync: int,
                 on_role_change: RoleCallback | None) -> None:
        self.ctx = ctx
        self.name = name
        self.id = name.id
        self.log = lg
        self.members = members
        self.min_insync = min_insync
        self.on_role_change = on_role_change
        self.on_high_watermark: list[Callable[[int], Any]] = []  # (streams' readers)
        self.checkpoints = EpochCheckpoints(lg.directory)
        self.role = NO_ROLE
        self.leader: str | None = None
        self.epoch = 0  # the current leader's (its leader key's mod_revision)
        self.highest_epoch = 0  # the highest seen: appends of lower epochs are refused
        self.isr: tuple[str, ...] = ()
        self.isr_revision = 0
        self.high_watermark = 0
        self.keys: dict[str, Versioned] = {LEADER: Versioned(None, 0), ISR: Versioned(None, 0),
                                           TRANSFER: Versioned(None, 0)}
        self.leading: Leader | None = None
        self.following = Follower(self)
        self.electing: Any = None  # the election task running, if any
        self.closed = False

    # -- the owner's API ---------------------------------------------------------------------
    async def committed(self, offset: int) -> None:
        """Return once the record at ``offset`` is fsynced here and held by every in-sync
        member and at least ``min_insync`` replicas; ``NotLeader`` if this node does not
        lead or stops leading first (then the record may or may not survive: nack)."""
        leading = self.leading
        if leading is None:
            raise NotLeader(f"node {self.ctx.node} does not lead {self.id}", self.leader)
        leading.kick()
        await self.log.wait_durable(offset)
        if leading.stopped is not None:
            raise leading.stopped
        if leading.ready(offset):
            return
        await leading.wait(offset)

    def appended(self) -> None:
        """Records were appended that nobody awaits (settlements): ship them soon."""
        if self.leading is not None:
            self.leading.kick()

    @property
    def in_sync(self) -> tuple[str, ...]:
        return self.isr

    # -- roles -----------------------------------------------------------------------------
    def _tell(self, role: str) -> None:
        if role == self.role:
            return
        self.role = role
        if self.on_role_change is not None:
            try:
                self.on_role_change(role)
            except Exception:
                log.exception("replica of %s: the owner's role change to %s failed",
                              self.id, role)

    def elected(self, epoch: int, lease: int) -> None:
        """This node won ``epoch`` (its transaction's revision)."""
        if self.closed or (self.leading is not None and self.leading.epoch == epoch):
            return
        if self.leading is not None:
            self.step_down("a newer epoch of its own")
        self.epoch = epoch
        self.highest_epoch = max(self.highest_epoch, epoch)
        self.leader = self.ctx.node
        self.following.reset()
        self.checkpoints.assign(epoch, self.log.next_offset)
        self.leading = Leader(self, epoch, lease)
        log.info("node %s leads %s (epoch %d, log end %d)", self.ctx.node, self.id, epoch,
                 self.log.next_offset)
        self._tell(LEADER_ROLE)
        for node in list(self.leading.progress):
            if self.ctx.link.connected(node):
                self.leading.peer_up(node)  # probe: where does its log end?

    def step_down(self, reason: str, leader: str | None = None) -> None:
        leading, self.leading = self.leading, None
        if leading is not None:
            log.warning("node %s stops leading %s (epoch %d): %s", self.ctx.node, self.id,
                        leading.epoch, reason)
            leading.stop(NotLeader(f"node {self.ctx.node} no longer leads {self.id}: "
                                   f"{reason}", leader))
        self.leader = leader
        self._tell(FOLLOWER_ROLE if leader else NO_ROLE)

    # -- etcd's keys -----------------------------------------------------------------------
    def apply(self, kind: str, value: Versioned) -> None:
        """A key's newer value (from the watch or a read); older ones are ignored."""
        if value.revision <= self.keys[kind].revision or self.closed:
            return
        self.keys[kind] = value
        if kind == LEADER:
            self._leader_changed(value)
        elif kind == ISR:
            record = IsrRecord.decode(value.value) if value.value is not None else None
            if record is not None:
                self.set_isr(record, value.revision)
        if self.leader is None and self.leading is None:
            self.ctx.elect_soon(self)

    def _leader_changed(self, value: Versioned) -> None:
        node = decode_node(value.value) if value.value is not None else None
        me = self.ctx.node
        if node is None:
            if self.leading is not None:
                self.step_down("its leader key is gone (lease lapsed, or handed over)")
            self.leader = None
            self.following.reset()
            self._tell(NO_ROLE)
            return
        if node == me:
            lease = self.ctx.membership.lease
            if self.leading is None and value.lease and value.lease == lease:
                self.elected(value.revision, lease)  # read back after our own election
            return  # else a key of an earlier process of this node: it goes with its lease
        self.highest_epoch = max(self.highest_epoch, value.revision)
        if self.leading is not None:
            self.step_down(f"node {node} leads epoch {value.revision}", node)
        if node != self.leader or value.revision != self.epoch:
            self.following.reset()
        self.leader, self.epoch = node, value.revision
        self._tell(FOLLOWER_ROLE)

    def set_isr(self, record: IsrRecord, revision: int) -> None:
        if revision < self.isr_revision:
            return
        self.isr_revision = revision
        self.keys[ISR] = Versioned(record.encode(), revision)
        changed = record.members != self.members
        self.members, self.isr = record.members, record.isr
        if changed and self.leading is not None:
            self.leading.members_changed()

    def hw_changed(self) -> None:
        for callback in self.on_high_watermark:
            try:
                callback(self.high_watermark)
            except Exception:
                log.exception("replica of %s: a high watermark listener failed", self.id)

    def tick(self, now: float) -> None:
        if self.leading is not None:
            self.leading.tick(now)
        elif self.leader is None:
            self.ctx.elect_soon(self)

    def close(self) -> None:
        """Stop replicating this log here (the owner closes the log itself)."""
        self.on_role_change = None
        self.step_down("the log is closed here")
        self.closed = True
