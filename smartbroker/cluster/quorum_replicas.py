"""Replicated quorum queues on one cluster node: their replica sets and logs (issue 16).

A quorum queue declared on a cluster gets ``x-quorum-initial-group-size`` members
(default 3, capped at the nodes up): its leader, then the next up nodes in name order,
as ``spread_replicas`` picks a stream partition's. The placement record names them
(``members``). Size 1 (one node up, or asked for) is today's queue: nothing here runs.

Every member keeps the queue's own log (``queues/quorum_log.py``) under
``<data dir>/quorum/`` and hands it to the replication core (``Replication.open``). On
the leader the ``QuorumQueue`` writes to it (``quorum_replicated.lead``); on the others
the queue object stays a ``RemoteQueue`` for routing and the core appends the leader's
frames to the log beside it. When the core makes this node leader (failover), the
placement names it and ``rehome`` builds the ``QuorumQueue``, which ``attach`` rebuilds
from the local copy: a failover is a restart of the queue on another node. A placement
that goes (the queue was deleted) or no longer names this node deletes the local copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.forwarding_rehome import swap
from smartbroker.cluster.placement import Placement
from smartbroker.cluster.quorum_commits import CommitGate
from smartbroker.cluster.replication import LEADER_ROLE, LogName, NotLeader
from smartbroker.cluster.spread_replicas import members_after
from smartbroker.queues import quorum_replicated
from smartbroker.queues.base import QueueSpec
from smartbroker.queues.quorum import QuorumQueue
from smartbroker.queues.quorum_log import QuorumLog, directory
from smartbroker.queues.types import queue_type

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding

log = logging.getLogger("smartbroker.cluster")
GROUP_SIZE = "x-quorum-initial-group-size"
DEFAULT_SIZE = 3  # RabbitMQ's default for a quorum queue
FORGET_WAIT = 5.0  # seconds a deleted queue's replica keys wait for their creation


def group_size(arguments: Any) -> int:
    size = arguments.get(GROUP_SIZE, DEFAULT_SIZE)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 \
        else DEFAULT_SIZE


def replicate(proposal: Placement, spec: QueueSpec, up: Sequence[str]) -> Placement:
    """A new quorum queue's placement with its members (unchanged for other types, or
    a replica set of one)."""
    if queue_type(spec.arguments) is not QuorumQueue or not spec.durable or spec.exclusive:
        return proposal
    members = members_after(proposal.leader, up, group_size(spec.arguments))
    return dataclasses.replace(proposal, members=members) if len(members) > 1 else proposal


class Replica:
    """One queue's copy here: its log, and its ``ReplicatedLog`` once the core has it
    (opened later when an earlier replica set of the same name is still being deleted)."""

    def __init__(self, qlog: QuorumLog) -> None:
        self.qlog = qlog
        self.replicated: Any = None
        self.ready = asyncio.Event()
        self.stale = False  # its queue object here stopped leading: rebuilt if it leads again
        self.gate = CommitGate()  # when the leading queue's held enqueues are committed
        self._lapsed = False  # ``serving`` found the lease lapsed: a step-down is due
        qlog.on_written = self.appended

    def opened(self, replicated: Any) -> None:
        self.replicated = replicated
        self.gate.opened(replicated)
        self.ready.set()
        replicated.appended()

    def serving(self) -> bool:
        """Whether the queue led here may deliver now (``QuorumQueue.serves``): not once
        this node's lease has lapsed by its own clock, which the core's tick may not have
        seen yet (a node resumed from a pause reads its sockets first); the step-down
        follows at once, in its own callback (not inside the queue's dispatch)."""
        replicated = self.replicated
        leading = None if replicated is None else replicated.leading
        if leading is None or leading.lease_ok():
            return True  # before the first election here: as it accepts, it delivers
        if not self._lapsed:
            self._lapsed = True
            asyncio.get_running_loop().call_soon(self._step_down, leading)
        return False

    def _step_down(self, leading: Any) -> None:
        self._lapsed = False
        replicated = self.replicated
        if replicated is not None and replicated.leading is leading and not leading.lease_ok():
            replicated.step_down("its lease lapsed")

    async def committed(self, offset: int) -> None:
        if self.replicated is None:
            await self.ready.wait()
            if self.replicated is None:  # dropped before the core had it: a nack
                raise NotLeader(f"the replica of {self.qlog.queue} was dropped here")
        await self.replicated.committed(offset)

    def appended(self, urgent: bool = True) -> None:
        if self.replicated is not None:
            self.replicated.appended(urgent)  # settlements alone (False) may wait a little

    @property
    def role(self) -> str | None:
        return None if self.replicated is None else self.replicated.role


class QuorumReplicas:
    """This node's replicas of quorum queues, by (vhost, queue)."""

    def __init__(self, forwarding: QueueForwarding, node: Any) -> None:
        self.forwarding = forwarding
        self.node = node  # ClusterNode: its ``replication`` (the core), once built
        self.replicas: dict[tuple[str, str], Replica] = {}
        self.retiring: dict[tuple[str, str], asyncio.Task[None]] = {}  # keys being deleted
        self._hosts: set[int] = set()  # vhosts whose deletions are followed

    @property
    def replication(self) -> Any:
        return getattr(self.node, "replication", None)

    def attach(self, q: Any) -> Any:
        """Called with every queue object built (``queue_factory``) and after every
        placement change: opens the replica if this node is a member, and makes a
        ``QuorumQueue`` led here write to (and rebuild from) its log."""
        placement = self.forwarding.placement.get(q.vhost, q.name)
        if placement is None or len(placement.members) < 2 \
                or self.forwarding.node not in placement.members:
            return q
        replica = self._open(q.vhost, q.name, placement)
        if replica is not None and isinstance(q, QuorumQueue) \
                and placement.leader == self.forwarding.node:
            count = quorum_replicated.lead(q, replica.qlog, replica.committed,
                                           replica.gate.committed_end, replica.serving)
            if count >= 0:
                replica.gate.held(q.hold)
            if count > 0:
                log.info("quorum queue '%s' in vhost '%s' led here: %d message(s) from its log",
                         q.name, q.vhost, count)
        return q

    def _open(self, vhost: str, queue: str, placement: Placement) -> Replica | None:
        key = (vhost, queue)
        found = self.replicas.get(key)
        if found is not None:
            return found
        replication = self.replication
        host = self.forwarding.vhosts.get(vhost)
        storage = getattr(host, "storage", None)
        if replication is None or storage is None:
            return None
        if id(host) not in self._hosts:
            self._hosts.add(id(host))
            host.on_queue_deleted.append(self.deleted)
        qlog = QuorumLog(directory(storage.data_dir, vhost, queue), vhost, queue,
                         fsync=storage.fsync, executors=storage.executors)
        replica = self.replicas[key] = Replica(qlog)
        members = tuple(placement.members)

        def open_replica() -> None:
            if self.replicas.get(key) is replica:
                replica.opened(replication.open(
                    LogName(vhost, queue), qlog.log, members, None,
                    lambda role: self._role_changed(vhost, queue, role)))

        retiring = self.retiring.get(key)
        if retiring is None:
            open_replica()
        else:  # the queue's previous replica set is being deleted: then this one opens
            retiring.add_done_callback(lambda _done: open_replica())
        return replica

    def _role_changed(self, vhost: str, queue: str, role: str) -> None:
        """The core's news. Leader: the election wrote the placement naming this node;
        applied now rather than when the watch brings it back, so the queue is rebuilt
        from the log at once (or again, if its object here had stopped leading: the log
        may have changed under it since). Anything else: a queue object leading here
        stops writing (its publishes are nacked) until the placement moves it."""
        replica = self.replicas.get((vhost, queue))
        host = self.forwarding.vhosts.get(vhost)
        q = None if host is None else host.queues.get(queue)
        if replica is None or host is None:
            return
        if role != LEADER_ROLE:
            if isinstance(q, QuorumQueue) and q.own_log is not None:
                quorum_replicated.release(q)
                replica.stale = True
            return
        replica.gate.elected()
        table = self.forwarding.placement
        placement = table.get(vhost, queue)
        if placement is not None and placement.leader != self.forwarding.node:
            table.queues[(vhost, queue)] = dataclasses.replace(
                placement, leader=self.forwarding.node)
            self.forwarding.placement_changed(vhost, queue)
        elif replica.stale and isinstance(q, QuorumQueue):
            swap(self.forwarding, host, q)  # a fresh object, rebuilt from the log
        replica.stale = False

    def placement_changed(self, vhost: str, queue: str) -> None:
        """After ``rehome``: the object here follows its (maybe new) role; a replica this
        node no longer holds (queue deleted, or shrunk away) is closed and deleted."""
        placement = self.forwarding.placement.get(vhost, queue)
        host = self.forwarding.vhosts.get(vhost)
        q = None if host is None else host.queues.get(queue)
        if placement is None:
            if q is None:  # deleted (its vhost's deletion dropped it already, normally)
                self._drop((vhost, queue), deleted=True)
            return  # else: declared again here, its new placement on its way
        if self.forwarding.node not in placement.members:
            self._drop((vhost, queue), deleted=False)  # shrunk away: the others go on
        elif q is not None:
            self.attach(q)

    def deleted(self, q: Any) -> None:
        """The vhost dropped the queue: its copy here goes (the leader's replica keys too:
        the node whose queue object led it)."""
        self._drop((q.vhost, q.name), deleted=True, led=getattr(q, "led", False))

    def attach_all(self, vhosts: Any) -> None:
        """At start: the queues restored before forwarding existed."""
        for host in vhosts:
            for q in list(host.queues.values()):
                self.attach(q)

    def _drop(self, key: tuple[str, str], deleted: bool, led: bool = False) -> None:
        replica = self.replicas.pop(key, None)
        if replica is None:
            return
        replica.ready.set()  # a commit still waiting for the core fails (a nack)
        replication = self.replication
        try:
            if replication is None or replica.replicated is None:
                pass
            elif deleted and (led or replica.role == LEADER_ROLE):  # its replica keys too
                rlog = replica.replicated
                replication.close(LogName(*key))
                task = self.forwarding._keep(self._forget(replication, LogName(*key), rlog))
                self.retiring[key] = task
                task.add_done_callback(lambda done: self.retiring.pop(key, None)
                                       if self.retiring.get(key) is done else None)
            else:
                replication.close(LogName(*key))
        finally:
            replica.qlog.destroy()

    async def _forget(self, replication: Any, name: LogName, rlog: Any) -> None:
        """Delete the replica keys, after the replica set's creation if it is still
        under way (a queue deleted right after its declare), so none are left behind."""
        try:
            for task in (getattr(rlog, "opening", None), getattr(rlog, "electing", None)):
                if isinstance(task, asyncio.Task) and not task.done():
                    await asyncio.wait([task], timeout=FORGET_WAIT)
            await replication.forget(name)
        except Exception as exc:  # noqa: BLE001 - etcd away: the keys stay behind
            log.warning("replica keys of deleted quorum queue '%s' in vhost '%s' not "
                        "deleted: %s", name.queue, name.vhost, exc)

    def close(self) -> None:
        """Node shutdown: the logs are closed (kept)."""
        replicas, self.replicas = self.replicas, {}
        replication = self.replication
        for key, replica in replicas.items():
            replica.ready.set()
            if replication is not None and replica.replicated is not None:
                replication.close(LogName(*key))
            replica.qlog.close()
