"""Replication of a ``SegmentLog`` from its leader to its followers (issue 16; the design
is docs/replication.md, the contract /tmp/h5/spec.md's).

The API the owners of replicated logs (quorum queues, stream partitions) code against::

    from smartbroker.cluster.replication import LogName, NotLeader, Replication

    replication: Replication = cluster_node.replication   # one per node, started with it
    rlog = replication.open(LogName(vhost, queue[, partition]) or "<log id>", segment_log,
                            members, min_insync=None,   # default: a majority
                            on_role_change=callback)    # callback("leader"|"follower"|"none")
    await rlog           # optional: its etcd keys read (a new set created here: led here)
    rlog.role            # "leader", "follower" or "none" (no leader known: an election)
    rlog.leader          # the node leading it, if known; rlog.epoch its epoch
    rlog.isr, rlog.members, rlog.min_insync, rlog.high_watermark
    rlog.on_high_watermark.append(fn)   # fn(hw) when the leader's high watermark rises
    await rlog.committed(offset)  # leader only: fsynced here AND held by every ISR member
                                  # and >= min_insync replicas; NotLeader if not/no longer
    rlog.appended()      # records nobody awaits were appended: ship them soon
    replication.close(name)          # stop replicating it here (keys stay)
    await replication.forget(name)   # the log is deleted everywhere: its keys go too

Rules for the owner: append to the log only while ``role == "leader"``; on "leader"
rebuild state from the log (the core has appended the old leader's frames to it, and
cut what the new leader does not hold); on anything else stop serving, leave the log
to the core. A record confirmed by ``committed`` is on every in-sync member, so any of
them can take over without losing it.

Modules: ``records`` (names, etcd values, ``NotLeader``), ``wire`` (link channels),
``isr`` (the leader's arithmetic, sans-IO), ``election`` (etcd transactions), ``leader``,
``follower``, ``replicated_log``, ``service``; ``store/replica.py`` reads and writes the
frames. ``stream_*.py`` are the replicated streams' (helper S).
"""

from smartbroker.cluster.replication.records import LogName, NotLeader, default_min_insync
from smartbroker.cluster.replication.replicated_log import (
    FOLLOWER_ROLE,
    LEADER_ROLE,
    NO_ROLE,
    ReplicatedLog,
)
from smartbroker.cluster.replication.service import Replication

__all__ = ["FOLLOWER_ROLE", "LEADER_ROLE", "NO_ROLE", "LogName", "NotLeader", "Replication",
           "ReplicatedLog", "default_min_insync"]
