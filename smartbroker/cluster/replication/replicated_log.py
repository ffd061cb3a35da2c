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

import asyncio
import functools
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
HAND_OVER = 10.0  # seconds a transfer's target has to catch up
ELECTION_WAIT = 5.0  # seconds ``committed`` waits for this node's election under way


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
        self.had_isr = False  # an ISR record was seen: if it goes, the set was deleted
        self.high_watermark = 0
        self.keys: dict[str, Versioned] = {LEADER: Versioned(None, 0), ISR: Versioned(None, 0),
                                           TRANSFER: Versioned(None, 0)}
        self.leading: Leader | None = None
        self.following = Follower(self)
        self.electing: Any = None  # the election task running, if any
        self.opening: asyncio.Task[None] | None = None  # the first reads of its keys
        self.giving_up = False
        self.closed = False

    def __await__(self) -> Any:
        """``await replication.open(...)``: once the keys are read (and a replica set
        created here is led here)."""
        if self.opening is not None:
            yield from asyncio.shield(self.opening).__await__()
        return self

    # -- the owner's API ---------------------------------------------------------------------
    async def committed(self, offset: int) -> None:
        """Return once the record at ``offset`` is fsynced here and held by every in-sync
        member and at least ``min_insync`` replicas; ``NotLeader`` if this node does not
        lead or stops leading first (then the record may or may not survive: nack)."""
        leading = self.leading
        if leading is None and isinstance(self.electing, asyncio.Task):
            # just opened, or an election of this node under way: its outcome decides
            await asyncio.wait([self.electing], timeout=ELECTION_WAIT)
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

    def appended(self, urgent: bool = True) -> None:
        """Records were appended that nobody awaits yet: ship them at the end of this
        loop pass, or (``urgent=False``: settlements, which nobody will await) within a
        few milliseconds, with whatever follows."""
        leading = self.leading
        if leading is not None:
            if urgent:
                leading.kick()
            else:
                leading.kick_later()

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
        transfer = self.keys[TRANSFER]
        if transfer.value is not None and decode_node(transfer.value, "to") == self.ctx.node:
            self.ctx.spawn(self.ctx.transferred(self, transfer.revision))  # done: it goes
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
            held = self.keys[LEADER]
            if held.value and held.revision == leading.epoch and not self.closed:
                # its key may outlive the local deadline (a lease refreshed just in time):
                # give it up, or no one could be elected while it stands
                self.ctx.spawn(self.ctx.give_up(self, leading.epoch))
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
            elif value.value is None and self.had_isr:
                self.isr = ()  # the replica set was deleted (its queue too): no elections
        elif kind == TRANSFER and value.value is not None and self.leading is not None:
            target = decode_node(value.value, "to")
            if target is not None and target != self.ctx.node and target in self.members:
                self.ctx.spawn(self._hand_over(self.leading, target))
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

    async def _hand_over(self, leading: Leader, target: str) -> None:
        """A transfer to ``target``: the owner stops appending, ``target`` gets the rest,
        then this node gives up its leader key (fenced by its epoch) and ``target``, the
        only candidate while the transfer key names it, takes it. If ``target`` does not
        catch up within ``HAND_OVER`` seconds, this node leads on (the owner is told
        ``leader`` again and recovers as after any election)."""
        if leading.handing_over:
            return
        leading.handing_over = True
        self._tell(NO_ROLE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HAND_OVER
        try:
            while self.leading is leading and loop.time() < deadline:
                p = leading.progress.get(target)
                caught_up = (p is not None and p.acked >= self.log.next_offset
                             and target in self.isr)
                if caught_up and await self.ctx.give_up(self, leading.epoch):
                    self.step_down(f"handed over to node {target}", None)
                    return
                leading.kick()
                await asyncio.sleep(0.02)
        except Exception as exc:  # etcd away: lead on
            log.warning("hand-over of %s to %s failed: %s", self.id, target, exc)
        leading.handing_over = False
        if self.leading is leading:
            self._tell(LEADER_ROLE)

    def set_isr(self, record: IsrRecord, revision: int) -> None:
        if revision < self.isr_revision:
            return
        self.isr_revision = revision
        self.had_isr = True
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
            return
        held = self.keys[LEADER]
        if (held.value and self.electing is None and not self.giving_up
                and _leader_node(held.value) == self.ctx.node):
            # a key naming this node that it does not act on (an election whose answer
            # was lost, a give-up that failed): it goes, and a proper election follows
            self.giving_up = True
            task = self.ctx.spawn(self.ctx.give_up(self, held.revision))
            task.add_done_callback(lambda _t: setattr(self, "giving_up", False))
        elif self.leader is None:
            self.ctx.elect_soon(self)

    def close(self) -> None:
        """Stop replicating this log here (the owner closes the log itself)."""
        self.on_role_change = None
        self.step_down("the log is closed here")
        self.closed = True


@functools.lru_cache(maxsize=256)
def _leader_node(raw: bytes) -> str | None:
    """``decode_node``, cached: every log's tick asks it of the same few values (a JSON
    decode per log 4 times a second was most of what 2,000 idle followers cost)."""
    return decode_node(raw)
