"""Where a replicated stream's partitions live: each partition's replica set and log ids.

A stream declared with ``x-initial-cluster-size`` N > 1 (RabbitMQ's argument; Kafka's
CreateTopics ``replication_factor`` becomes it) has each partition copied on N nodes:
its leader first (the node ``placement.spread`` chose for it), then the next up nodes
in name order after it, as Kafka's replica assignment goes round the brokers. N is capped
at the nodes up at declare (RabbitMQ's and docs/replication.md's rule; Kafka refuses a
larger factor, ``kafka/admin.py`` does that before). Size 1 (the default, as Kafka's
``default.replication.factor``) leaves the placement as it was: today's code.

The placement of a replicated stream always carries ``partitions`` (each partition's
current leader, even for one partition) and ``partition_members``, so a stream of one
partition and one of many take one path: ``partition_spread.spread`` holds it on every
node, each partition appended on its leader only and copied by the replication core to
its members (``cluster/replication/stream_replica.py``).

Log ids (``replica/leader/<id>``, ``replica/isr/<id>`` in etcd, the replication core's
``LogName``): ``<vhost>/<queue>/<p>`` per partition, and ``<vhost>/<queue>`` for the
group offsets log (copied on partition 0's members; its leader is the stream's leader,
``placement.leader``: the Kafka group coordinator), each name part percent-encoded as
``definitions_keys.seg`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from smartbroker.cluster.definitions_keys import seg
from smartbroker.cluster.placement import Placement

ARGUMENT = "x-initial-cluster-size"
OFFSETS = "offsets"  # the group offsets log, where a partition index goes


def cluster_size(arguments: Mapping[str, Any]) -> int:
    """The replica count a stream asks for (validated at declare: ``stream_args``); 1
    when it asks for none."""
    size = arguments.get(ARGUMENT, 1)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 1


def members_after(leader: str, nodes: Sequence[str], size: int) -> tuple[str, ...]:
    """``leader`` then the next ``size - 1`` of ``nodes`` (name order, wrapping)."""
    ring = sorted(set(nodes) | {leader})
    start = ring.index(leader)
    return tuple(ring[(start + k) % len(ring)] for k in range(min(size, len(ring))))


def replicate(placement: Placement, partitions: int, size: int, up: Sequence[str]) -> Placement:
    """``placement`` with each partition's members when ``size`` > 1 (capped at the up
    nodes); unchanged otherwise."""
    if size <= 1 or len(set(up) | {placement.leader}) <= 1:
        return placement
    leaders = placement.partitions or (placement.leader,) * partitions
    return dataclasses.replace(placement, partitions=tuple(leaders), partition_members=tuple(
        members_after(leader, up, size) for leader in leaders))


def replicated(placement: Placement | None) -> bool:
    """Whether some partition of this stream placement has more than one replica."""
    return placement is not None and any(len(m) > 1 for m in placement.partition_members)


def log_id(vhost: str, queue: str, part: int | str) -> str:
    """The log id of partition ``part`` of stream ``queue``, or of its group offsets
    (``OFFSETS``: the stream's own id, as a quorum queue's)."""
    base = f"{seg(vhost).decode()}/{seg(queue).decode()}"
    return base if part == OFFSETS else f"{base}/{part}"


def with_leader(placement: Placement, part: int | str, node: str) -> Placement:
    """The placement once ``node`` leads partition ``part`` (or, for ``OFFSETS``, the
    stream: its groups and its Kafka description)."""
    if part == OFFSETS:
        return dataclasses.replace(placement, leader=node)
    assert isinstance(part, int)
    leaders = list(placement.partitions)
    if 0 <= part < len(leaders):
        leaders[part] = node
    return dataclasses.replace(placement, partitions=tuple(leaders))


__all__ = ["ARGUMENT", "OFFSETS", "cluster_size", "log_id", "members_after", "replicate",
           "replicated", "with_leader"]
