"""Changing a replica set in etcd: add or remove a member, hand the leadership over.

The nodes do the work (docs/replication.md): the leader starts shipping its log to a new
member and puts it in the ISR once it has caught up; a removed member stops being a
replica and deletes its copy; a leader named in ``replica/transfer/<log id>`` stops
accepting, waits until the named member has everything and gives up its leader key,
which that member then takes. These functions only write the records, as
``rabbitmq-queues add_member`` asks Ra for a membership change:

- a membership change is one transaction that rewrites the ISR record's ``members``
  (dropping a removed member from ``isr`` too) and the placement's ``members``,
  comparing both keys' mod revisions: a leader that changed the ISR meanwhile (a member
  caught up or fell behind) makes it fail, and it is tried again on a fresh read;
- removing the leader first moves the leadership to another member in sync (a transfer
  key on a short lease of this command's, so a command that dies leaves nothing behind).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from smartbroker.cli.common import CliError
from smartbroker.cli.replica_state import ClusterReplicas, Replicas, read
from smartbroker.cluster import stream_members
from smartbroker.cluster.replication.records import (
    ISR,
)

RETRIES = 20  # compare-and-swap attempts against a leader changing the ISR meanwhile


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


async def set_members(etcd: Any, r: Replicas, members: list[str],
                      placement: tuple[dict[str, Any], int] | None) -> bool:
    """One compare-and-swap of the replica set to ``members``; False when a key changed
    since it was read."""
    from smartbroker.cluster.etcd_client import Put
    from smartbroker.cluster.placement import key as placement_key

    record = {**r.record, "members": members, "isr": [n for n in r.isr if n in members]}
    ops = [Put(ISR + r.log, _encode(record))]
    revisions: dict[bytes | str, int] = {ISR + r.log: r.revision}
    data, revision = placement or ({}, 0)
    if r.partition is None:  # a quorum queue's (a stream's offsets log: its partitions')
        shown: dict[str, Any] | None = (None if "partition_members" in data
                                        else {**data, "members": members})
    else:  # a stream partition: its entry of partition_members
        parts = data.get("partition_members")
        shown = None
        if isinstance(parts, list) and 0 <= r.partition < len(parts):
            shown = {**data, "partition_members": [
                members if i == r.partition else part for i, part in enumerate(parts)]}
    if placement is not None and shown is not None:
        where = placement_key(r.vhost, r.queue)
        ops.append(Put(where, _encode(shown)))
        revisions[where] = revision
    return await etcd.commit(ops, mod_revisions=revisions) is not None


async def drop_everywhere(etcd: Any, node: str) -> int:
    """Remove a forgotten ``node`` from every replica set it is a member of and does not
    lead, never as the last member (RabbitMQ's forget_cluster_node shrinks the quorum
    queues too): how many. Partitions of one stream share a placement, so each round
    writes what it can and the next reads again."""
    done = failed_rounds = 0
    while failed_rounds < RETRIES:
        state = await read(etcd)
        pending = [r for r in state.logs
                   if node in r.members and len(r.members) > 1 and r.leader != node]
        if not pending:
            break
        made = 0
        for r in pending:
            after = [m for m in r.members if m != node]
            made += await set_members(etcd, r, after, state.placements.get((r.vhost, r.queue)))
        done += made
        failed_rounds += not made
    return done


async def change_members(etcd: Any, vhost: str, queue: str, node: str, *, add: bool,
                         timeout: float = 30.0, state: ClusterReplicas | None = None
                         ) -> tuple[str, int]:
    """Add or remove ``node`` as a member of a quorum queue: ("ok" or "already a member"
    / "not a member", the number of members after). CliError when it cannot be done;
    ``timeout``: seconds a leader being removed has to hand over.
    ``state``: a read to start from (``grow`` and ``shrink`` read once for every queue);
    a failed compare-and-swap reads again."""
    for _ in range(RETRIES):
        state = state or await read(etcd)
        r = state.check_queue(vhost, queue)
        members = r.members
        if add:
            state.check_node(node, running=True)
            if node in members:
                return "already a member", len(members)
            after = [*members, node]
        else:
            if node not in members:
                if node not in state.known | state.up:
                    raise CliError(f"no node '{node}' in the cluster")
                return "not a member", len(members)
            if members == [node]:
                raise CliError(f"{r.describe()}: the last member cannot be removed")
            if r.leader == node:  # hand over first: the record then names the new leader
                await transfer(etcd, r, _successor(r, state.up), timeout)
                state = None
                continue
            after = [m for m in members if m != node]
            if not [m for m in r.isr if m in after]:
                raise CliError(f"{r.describe()}: no other member is in sync (in sync: "
                               f"{', '.join(r.isr) or 'none'}); without '{node}' none could "
                               "lead it")
        if await set_members(etcd, r, after, state.placements.get((vhost, queue))):
            return "ok", len(after)
        state = None
    raise CliError(f"{r.describe()}: its replica set kept changing; try again")


def _successor(r: Replicas, up: set[str]) -> str:
    """The member the leadership goes to: the first running one in sync (the members'
    order is the order of preference)."""
    for node in r.isr:
        if node != r.leader and node in up:
            return node
    raise CliError(f"{r.describe()}: no other member is in sync to take the leadership "
                   f"from '{r.leader}' (in sync: {', '.join(r.isr) or 'none'}); wait until "
                   "one has caught up")


async def transfer(etcd: Any, r: Replicas, to: str, timeout: float) -> None:
    """Move the leadership of ``r`` to ``to`` and wait until ``to`` holds the leader key
    (CliError after ``timeout`` seconds)."""
    try:
        await stream_members.transfer(etcd, r.log, r.leader, to, timeout, r.describe())
    except stream_members.ReplicaError as exc:
        raise CliError(str(exc)) from None


async def move_leaders(etcd: Any, moves: list[tuple[Replicas, str]], timeout: float,
                       at_once: int = 8) -> list[str | None]:
    """Each (log, node) transfer, ``at_once`` at a time: None when it moved, else why not."""
    gate = asyncio.Semaphore(at_once)

    async def one(r: Replicas, to: str) -> str | None:
        async with gate:
            try:
                await transfer(etcd, r, to, timeout)
            except CliError as exc:
                return str(exc)
            return None

    return list(await asyncio.gather(*(one(r, to) for r, to in moves)))
