"""Replication's etcd transactions: create a replica set, elect a leader, change the ISR.

Every one is a compare-and-swap, so two nodes racing cannot both win:

* ``create``: the first leader (the replica set's first member) writes the ISR record
  (every member in sync: all logs are empty) and its leader key, both absent before.
* ``elect``: the leader key is absent, the ISR record is the one the candidate read (and
  names it), the queue's placement is the one it read -> the leader key on the
  candidate's lease and the placement naming it. The transaction's revision is the new
  epoch (the leader key's mod_revision).
* ``write_isr``: only while the leader key's mod_revision is still the writer's epoch
  (it has not lapsed and no one else was elected) and the ISR record is the one it read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from smartbroker.cluster import placement as placements
from smartbroker.cluster.etcd_client import Put
from smartbroker.cluster.replication.records import (
    ISR,
    LEADER,
    IsrRecord,
    LogName,
    Versioned,
    encode_node,
    key_of,
)


async def read(etcd: Any, name: LogName, kind: str) -> Versioned:
    """One key as of now (absent: None at the read's revision)."""
    found, revision = await etcd.range(key_of(kind, name), prefix=False)
    if not found:
        return Versioned(None, revision)
    kv = found[0]
    return Versioned(kv.value, kv.mod_revision, kv.lease)


async def create(etcd: Any, name: LogName, me: str, members: tuple[str, ...],
                 lease: int) -> int | None:
    """The replica set's first leader: its epoch, or None if it exists already."""
    record = IsrRecord(members, members, 0)
    return await etcd.commit([Put(key_of(ISR, name), record.encode()),
                              Put(key_of(LEADER, name), encode_node(me), lease)],
                             absent=[key_of(ISR, name), key_of(LEADER, name)])


def lead_placement(held: placements.Placement | None, name: LogName,
                   me: str) -> placements.Placement | None:
    """The queue's placement with ``me`` leading the log (its partition's entry, or the
    queue's ``leader`` for a queue; a replicated stream's ``leader`` is its group offsets
    log's, named like a queue: ``stream_replicas.py``)."""
    if held is None:
        return None
    parts = list(held.partitions)
    if name.partition is not None and 0 <= name.partition < len(parts):
        parts[name.partition] = me
    lead = me if name.partition is None else held.leader
    return dataclasses.replace(held, leader=lead, partitions=tuple(parts))


async def elect(etcd: Any, name: LogName, me: str, lease: int, isr_revision: int) -> int | None:
    """One attempt to take the leader key: the new epoch, or None (someone else won,
    the ISR record or the placement changed under us: read again)."""
    pkey = placements.key(name.vhost, name.queue)
    found, _ = await etcd.range(pkey, prefix=False)
    held = placements.Placement.decode(found[0].value) if found else None
    ops: list[Put] = [Put(key_of(LEADER, name), encode_node(me), lease)]
    new = lead_placement(held, name, me)
    if new is not None and new != held:
        ops.append(Put(pkey, new.encode()))
    return await etcd.commit(ops, absent=[key_of(LEADER, name)],
                             mod_revisions={key_of(ISR, name): isr_revision,
                                            pkey: found[0].mod_revision if found else 0})


async def write_isr(etcd: Any, name: LogName, epoch: int, isr_revision: int,
                    record: IsrRecord) -> int | None:
    """The leader of ``epoch`` changes the ISR record: its revision, or None when the
    leader key or the record moved (then the caller re-reads, or steps down)."""
    return await etcd.commit([Put(key_of(ISR, name), record.encode())],
                             mod_revisions={key_of(LEADER, name): epoch,
                                            key_of(ISR, name): isr_revision})
