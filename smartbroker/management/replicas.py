"""The replica fields of ``/api/queues``: ``leader``, ``members`` and ``online``.

RabbitMQ 3.10 shows them for every quorum queue (``node`` and ``leader`` the leader,
``members`` its replica nodes, ``online`` those of them running) and ``members`` /
``online`` for a stream; on one node the node is all three. In a cluster the members
come from the queue's placement record (``cluster/placement.py``: ``members``, or one
list per partition for a partitioned stream), which ``queues grow|shrink`` rewrite with
the replica set, and ``online`` from the membership leases. A queue without replicas
(size 1, or a single node) has its leader as the only member. Everything here reads the
node's watched copies: no etcd round trip per listed queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smartbroker.management.state import ManagementState


def _placement(state: ManagementState, q: Any) -> Any:
    """The queue's placement in a cluster (None on a single node or unplaced)."""
    forwarding = getattr(state.cluster, "forwarding", None)
    return None if forwarding is None else forwarding.placement.get(q.vhost, q.name)


def _online(state: ManagementState, members: list[str]) -> list[str]:
    membership = getattr(state.cluster, "membership", None)
    if membership is None:  # one node: the only member is this one, running
        return list(members)
    return [m for m in members if membership.is_up(m)]


def leader_of(q: Any, state: ManagementState) -> str:
    """The node leading the queue (a spread stream: its first partition's leader)."""
    return (getattr(q, "leader", None) or getattr(getattr(q, "spread", None), "leader", None)
            or state.node)


def replica_fields(q: Any, state: ManagementState) -> dict[str, Any]:
    """``leader``, ``members``, ``online`` of a quorum queue or a stream."""
    leader = leader_of(q, state)
    placement = _placement(state, q)
    members: list[str] = []
    if placement is not None:
        if placement.partition_members:  # every node holding a partition, first seen first
            for part in placement.partition_members:
                members += [m for m in part if m not in members]
        else:
            members = list(placement.members)
    if not members:
        members = [leader]
    return {"leader": leader, "members": members, "online": _online(state, members)}


def describe_partitions(q: Any, state: ManagementState, partitions: list[dict[str, Any]]) -> None:
    """Each partition of a stream replicated per partition gets its own ``members`` and
    ``online`` (its ``leader`` comes from ``partition_spread``)."""
    placement = _placement(state, q)
    if placement is None or not placement.partition_members:
        return
    for part in partitions:
        index = part.get("partition")
        if isinstance(index, int):
            members = list(placement.replicas(index))
            if members:
                part["members"] = members
                part["online"] = _online(state, members)


def quorum_counts(q: Any, messages: int) -> dict[str, Any]:
    """RabbitMQ 3.10's counters a quorum queue shows beside the classic ones: every
    message is on disk (persistent), those waiting for at-least-once dead-lettering
    (``messages_dlx``, counted in ``messages`` as rabbit_fifo's messages_total does), and
    the single active consumer's tag."""
    sac = getattr(getattr(q, "settings", None), "single_active_consumer", False)
    consumers = list(q.consumers) if sac else []
    dlx = getattr(q, "messages_dlx", 0)
    return {"messages": messages + dlx, "messages_persistent": messages + dlx,
            "messages_dlx": dlx, "message_bytes_dlx": getattr(q, "message_bytes_dlx", 0),
            # 3.10's rabbit_fifo keeps no bodies in memory (query_in_memory_usage is
            # {0, 0}): x-max-in-memory-length/-bytes are accepted and change nothing
            "messages_ram": 0, "message_bytes_ram": 0,
            "single_active_consumer_ctag": consumers[0].tag if consumers else None}
