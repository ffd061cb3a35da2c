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

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.forwarding_rehome import swap
from smartbroker.cluster.placement import Placement
from smartbroker.cluster.replication import LEADER_ROLE, LogName
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


@dataclass
class Replica:
    qlog: QuorumLog
    replicated: Any  # the core's ReplicatedLog
    members: tuple[str, ...]
    stale: bool = False  # its queue object here stopped leading: rebuilt if it leads again


class QuorumReplicas:
    """This node's replicas of quorum queues, by (vhost, queue)."""

    def __init__(self, forwarding: QueueForwarding, node: Any) -> None:
        self.forwarding = forwarding
        self.node = node  # ClusterNode: its ``replication`` (the core), once built
        self.replicas: dict[tuple[str, str], Replica] = {}

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
            count = quorum_replicated.lead(q, replica.qlog, replica.replicated.committed)
            if count:
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
        qlog = QuorumLog(directory(storage.data_dir, vhost, queue), vhost, queue,
                         fsync=storage.fsync, executors=storage.executors)
        members = tuple(placement.members)
        replicated = replication.open(LogName(vhost, queue), qlog.log, members, None,
                                      lambda role: self._role_changed(vhost, queue, role))
        qlog.on_written = replicated.appended
        replica = self.replicas[key] = Replica(qlog, replicated, members)
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
        if placement is None or self.forwarding.node not in placement.members:
            self._drop((vhost, queue))
            return
        host = self.forwarding.vhosts.get(vhost)
        q = None if host is None else host.queues.get(queue)
        if q is not None:
            self.attach(q)

    def attach_all(self, vhosts: Any) -> None:
        """At start: the queues restored before forwarding existed."""
        for host in vhosts:
            for q in list(host.queues.values()):
                self.attach(q)

    def _drop(self, key: tuple[str, str]) -> None:
        replica = self.replicas.pop(key, None)
        if replica is None:
            return
        replication = self.replication
        try:
            if replication is None:
                pass
            elif replica.replicated.role == LEADER_ROLE:  # the queue was deleted: keys go
                self.forwarding._keep(self._forget(replication, LogName(*key)))
            else:
                replication.close(LogName(*key))
        finally:
            replica.qlog.destroy()

    async def _forget(self, replication: Any, name: LogName) -> None:
        try:
            await replication.forget(name)
        except Exception as exc:  # noqa: BLE001 - etcd away: the keys stay behind
            log.warning("replica keys of deleted quorum queue '%s' in vhost '%s' not "
                        "deleted: %s", name.queue, name.vhost, exc)

    def close(self) -> None:
        """Node shutdown: the logs are closed (kept)."""
        replicas, self.replicas = self.replicas, {}
        replication = self.replication
        for key, replica in replicas.items():
            if replication is not None:
                replication.close(LogName(*key))
            replica.qlog.close()
