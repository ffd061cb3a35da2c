"""How far this node reads each partition of a replicated stream (``StreamQueue.limits``)
when the stream gains replicas after its declare, or keeps partitions of one replica.

A stream declared replicated starts every partition unreadable here until the core says
this node leads it (``stream_replicated.lead``: up to the high watermark) or follows it
(never read here). A stream declared without replicas that gains its first one
(``streams add-replica``, a Kafka reassignment: ``cluster/stream_members.py``) was
served by this node up to its log end a moment before: made unreadable until its
election, a Kafka consumer fetching meanwhile would be told its offset is out of range
(and reset), and AMQP readers would stall. So:

* a partition this node served with one replica and that now has several starts at its
  log end (every record in it was acknowledged by the one replica it had: the new
  members copy them, the leader's high watermark takes over from there);
* a partition still of one replica (a Kafka reassignment of some partitions only, or
  partitions added by CreatePartitions past the placement's list) is read freely on its
  node (``NO_LIMIT``), as before; elsewhere it is empty and reads nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartbroker.cluster.partition_spread import owner
from smartbroker.queues.stream_replicated import NO_LIMIT

if TYPE_CHECKING:
    from smartbroker.cluster.placement import Placement
    from smartbroker.queues.stream import StreamQueue


def _single(placement: Placement, p: int) -> bool:
    return len(placement.replicas(p)) <= 1


def initial(stream: StreamQueue, placement: Placement, node: str, served: bool) -> list[int]:
    """The limits of a stream replicated from now on; ``served``: this node held it
    without replicas before (its partitions were read up to their ends)."""
    out = []
    for p, lg in enumerate(stream.logs):
        if _single(placement, p):
            out.append(NO_LIMIT if owner(placement, p) == node else 0)
        else:
            out.append(lg.next_offset if served else 0)
    return out


def follow(stream: StreamQueue, placement: Placement, node: str, copies: Any) -> None:
    """The placement changed: a partition read freely that gained replicas starts at its
    end; one of a single replica on this node without a copy here is read freely."""
    limits = stream.limits
    if limits is None:
        return
    woken = False
    for p, lg in enumerate(stream.logs[:len(limits)]):
        if not _single(placement, p):
            if limits[p] == NO_LIMIT:
                limits[p] = lg.next_offset
        elif p not in copies and owner(placement, p) == node and limits[p] != NO_LIMIT:
            limits[p] = NO_LIMIT
            woken = True
    if woken and stream.readers:
        stream.dispatch()


__all__ = ["follow", "initial"]
