"""Changing the replica set of one replicated stream partition in etcd: what
``smartbroker streams add-replica|delete-replica`` (RabbitMQ's ``rabbitmq-streams
add_replica|delete_replica``) and Kafka's AlterPartitionReassignments write.

The nodes do the work (docs/replication.md): a partition's leader ships its log to a new
member and adds it to the ISR once it has caught up; a node that becomes a member opens
its copy when its placement names it (``stream_replicas``); a leader named in
``replica/transfer/<log id>`` hands over to that member. So a change is records only:

- one transaction rewrites ``members`` of the partition's ``replica/isr/<log id>``
  record (a removed member leaves ``isr`` too) and its entry of the placement's
  ``partition_members``, comparing every key's mod revision (a leader that changed the
  ISR meanwhile makes it fail; it is read and tried again). Partition 0's members also
  hold the stream's group offsets log (log id ``<vhost>/<stream>``), so a change of
  partition 0 rewrites that log's record in the same transaction;
- a member that leads the partition (or, for partition 0, the offsets log) is asked to
  hand over first: a transfer key on a short lease of the caller's, so a caller that
  dies leaves nothing behind;
- a stream declared without replicas (``x-initial-cluster-size`` 1, Kafka's
  ``replication.factor`` 1) gains its first one the same way: ``read_stream`` shows each
  partition as a replica set of one, its owner, in sync (what it is), and the first
  change writes its ISR records (the owner alone in sync: the new member must catch up
  before it may be elected), the placement's ``partitions`` and ``partition_members``
  (one list per partition, the others' of one member) in the same transaction, which
  compares the placement and each ISR key (absent, or a stale one from a deleted
  namesake, overwritten). The owner's node then leads its partitions' logs with the data
  where it is; the new member copies it as any follower catches up. Partition 0 goes
  first: its replica set also holds the stream's group offsets.

Shared by the CLI (imported when a command runs) and the Kafka front end of a cluster
node; it never imports either. Errors are ``ReplicaError`` with a ``kind`` each caller
maps to its own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smartbroker.cluster import definitions_keys as dk
from smartbroker.cluster.etcd_client import Delete, Put
from smartbroker.cluster.membership import KNOWN, NODES
from smartbroker.cluster.placement import key as placement_key
from smartbroker.cluster.replication.records import (
    ISR,
    LEADER,
    TRANSFER,
    LogName,
    decode_node,
    encode_transfer,
)

TRANSFER_TTL = 10  # seconds: the transfer key's lease, kept alive while the caller waits
RETRIES = 20  # compare-and-swap attempts against a leader changing the ISR meanwhile

UNKNOWN = "unknown"  # no such stream or partition
INVALID = "invalid"  # a change that cannot be made (bad node, last member, none in sync)
TIMEOUT = "timeout"  # a hand-over did not finish in time
BUSY = "busy"  # the records kept changing


class ReplicaError(Exception):
    """Why a replica change cannot be made; ``kind`` is one of the constants above."""

    def __init__(self, text: str, kind: str = INVALID) -> None:
        super().__init__(text)
        self.kind = kind


def _json(raw: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _names(value: Any) -> list[str]:
    return [n for n in value if isinstance(n, str)] if isinstance(value, list) else []


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


@dataclass
class LogState:
    """One replicated log's ISR record as read, with its revision and current leader."""

    name: LogName
    record: dict[str, Any]
    revision: int
    leader: str | None

    @property
    def members(self) -> list[str]:
        return _names(self.record.get("members"))

    @property
    def isr(self) -> list[str]:
        return _names(self.record.get("isr"))


@dataclass
class StreamState:
    """A replicated stream's placement and the records of its logs, read together."""

    vhost: str
    stream: str
    placement: dict[str, Any]
    placement_revision: int
    logs: dict[int | None, LogState] = field(default_factory=dict)  # None: group offsets
    up: set[str] = field(default_factory=set)
    known: set[str] = field(default_factory=set)
    unreplicated: bool = False  # declared without replicas: none was ever added

    def describe(self, partition: int | None = None) -> str:
        where = "" if partition is None else f" partition {partition}"
        return f"stream '{self.stream}'{where} in vhost '{self.vhost}'"

    @property
    def partition_members(self) -> list[list[str]]:
        parts = self.placement.get("partition_members")
        return [_names(p) for p in parts] if isinstance(parts, list) else []

    def partition(self, p: int) -> LogState:
        """Partition ``p``'s log (ReplicaError when the stream has no such partition, or
        its replica set is not written yet)."""
        if not 0 <= p < len(self.partition_members):
            raise ReplicaError(f"{self.describe()} has no partition {p}", UNKNOWN)
        found = self.logs.get(p)
        if found is None:
            raise ReplicaError(f"{self.describe(p)}: its replica set is not created yet; "
                               "try again", BUSY)
        return found

    def affected(self, p: int) -> list[LogState]:
        """The logs a change of partition ``p``'s members changes: p's, and for p 0 the
        group offsets log, whose members are partition 0's."""
        logs = [self.partition(p)]
        if p == 0 and None in self.logs:
            logs.append(self.logs[None])
        elif p != 0 and self.unreplicated:
            raise ReplicaError(f"{self.describe()} has no replicas yet: add one to partition "
                               "0 first (its replicas also hold the group offsets)")
        return logs

    def check_node(self, node: str, *, running: bool) -> None:
        if node not in self.known | self.up:
            raise ReplicaError(f"no node '{node}' in the cluster")
        if running and node not in self.up:
            raise ReplicaError(f"node '{node}' is not running")


async def read_stream(etcd: Any, vhost: str, stream: str) -> StreamState:
    """The stream's placement, its logs' records and leaders, the nodes up and known."""
    where = placement_key(vhost, stream)
    found, _ = await etcd.range(where, prefix=False)
    definition = await etcd.get(dk.ROOT + b"queues/" + dk.seg(vhost) + b"/" + dk.seg(stream))
    kind = (_json(definition.value) or {}).get("type", "classic") if definition else None
    if not found or kind is None:
        raise ReplicaError(f"stream '{stream}' not found in vhost '{vhost}'", UNKNOWN)
    if kind != "stream":
        raise ReplicaError(f"queue '{stream}' in vhost '{vhost}' is a {kind} queue, not a "
                           "stream", UNKNOWN)
    data = _json(found[0].value) or {}
    state = StreamState(vhost, stream, data, found[0].mod_revision)
    if not state.partition_members:  # never replicated: each partition on its owner alone
        owners = _names(data.get("partitions")) or _names([data.get("leader")])
        if not owners:
            raise ReplicaError(f"{state.describe()}: its placement names no node", BUSY)
        state.placement = {**data, "partitions": owners,
                           "partition_members": [[o] for o in owners]}
        state.unreplicated = True
    base = LogName(vhost, stream).id
    leaders: dict[str, str] = {}
    for kv in (await etcd.range(LEADER + base))[0]:
        node = decode_node(kv.value)
        if node is not None:
            leaders[kv.key[len(LEADER):].decode(errors="replace")] = node
    for kv in (await etcd.range(ISR + base))[0]:
        text = kv.key[len(ISR):].decode(errors="replace")
        name, record = LogName.parse(text), _json(kv.value)
        if name is None or record is None or (name.vhost, name.queue) != (vhost, stream):
            continue  # another stream whose encoded name starts with this one's
        state.logs[name.partition] = LogState(name, record, kv.mod_revision, leaders.get(text))
    _never_replicated(state)
    up, _ = await etcd.range(NODES)
    known, _ = await etcd.range(KNOWN)
    state.up = {kv.key[len(NODES):].decode(errors="replace") for kv in up}
    state.known = {kv.key[len(KNOWN):].decode(errors="replace") for kv in known}
    return state


def _never_replicated(state: StreamState) -> None:
    """The partitions (and group offsets) never replicated get the ISR record they would
    have: their one member, its owner, in sync. It does not exist yet (revision 0: the
    change creates it), or, on a stream declared without replicas, it is a deleted
    namesake's left behind (overwritten at its revision)."""
    parts = state.partition_members
    logs = state.logs
    for p, members in [*enumerate(parts), (None, parts[0] if parts else [])]:
        found = logs.get(p)
        if len(members) != 1 or (found is not None and not state.unreplicated):
            continue
        record = {"members": list(members), "isr": list(members), "epoch": 0}
        logs[p] = LogState(LogName(state.vhost, state.stream, p), record,
                           found.revision if found is not None else 0, None)


async def set_members(etcd: Any, state: StreamState, p: int, members: list[str],
                      extra: Sequence[Any] = (), compare: dict[str, int] | None = None
                      ) -> int | None:
    """One compare-and-swap of partition ``p``'s replica set (and the offsets log's, for
    p 0) to ``members``: the transaction's revision, None when a key changed since
    ``state`` was read. ``extra`` operations (and ``compare`` revisions) go in the same
    transaction."""
    ops: list[Any] = list(extra)
    revisions: dict[str, int] = dict(compare or {})
    for one in state.affected(p):
        key = ISR + one.name.id
        record = {**one.record, "members": members,
                  "isr": [n for n in one.isr if n in members]}
        ops.append(Put(key, _encode(record)))
        revisions[key] = one.revision
        if one.revision == 0 or state.unreplicated:  # a first replica: no leader yet, and
            ops.append(Delete(LEADER + one.name.id))  # none left by a deleted namesake
    parts = state.partition_members
    parts[p] = list(members)
    where = placement_key(state.vhost, state.stream)
    ops.append(Put(where, _encode({**state.placement, "partition_members": parts})))
    revisions[where] = state.placement_revision
    return await etcd.commit(ops, mod_revisions=revisions)


def successor(one: LogState, up: set[str], among: Sequence[str] | None = None) -> str:
    """Who takes the leadership of ``one`` from its leader: the first running in-sync
    member (of ``among``, when given)."""
    for node in one.isr:
        if node != one.leader and node in up and (among is None or node in among):
            return node
    raise ReplicaError(f"no other member of {one.name.id} is in sync to take the "
                       f"leadership from '{one.leader}' (in sync: "
                       f"{', '.join(one.isr) or 'none'}); wait until one has caught up")


async def transfer(etcd: Any, log: str, old: str | None, to: str, timeout: float,
                   what: str | None = None) -> None:
    """Move the leadership of ``log`` from ``old`` to ``to`` and wait until ``to`` holds
    its leader key (ReplicaError after ``timeout`` seconds, or when another took it;
    its text starts with ``what``, the log id by default). The CLI's quorum commands
    and the stream/Kafka replica changes all move leaders through this one function."""
    what = what or log
    lease = await etcd.grant_lease(TRANSFER_TTL)
    keeper = asyncio.get_running_loop().create_task(etcd.keep_alive(lease, TRANSFER_TTL))
    try:
        await etcd.commit([Put(TRANSFER + log, encode_transfer(to), lease)])
        try:
            went = await asyncio.wait_for(_new_leader(etcd, log, old), timeout)
        except TimeoutError:
            raise ReplicaError(f"{what}: the leadership did not move from '{old}' to "
                               f"'{to}' within {timeout:g} s", TIMEOUT) from None
        if went != to:
            raise ReplicaError(f"{what}: the leadership went to '{went}', not '{to}'")
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await keeper
        with contextlib.suppress(Exception):
            await etcd.revoke_lease(lease)  # the transfer key goes with it


async def _new_leader(etcd: Any, log: str, old: str | None) -> str:
    found, revision = await etcd.range(LEADER + log, prefix=False)
    node = decode_node(found[0].value) if found else None
    if node is not None and node != old:
        return node
    async for event in etcd.watch(LEADER + log, start_revision=revision + 1, prefix=False):
        node = decode_node(event.value) if event.kind == "put" else None
        if node is not None and node != old:
            return node
    raise TimeoutError  # the watch ended: etcd closed


async def hand_over(etcd: Any, state: StreamState, p: int, keep: Sequence[str],
                    timeout: float) -> bool:
    """Move the leadership of every log of partition ``p`` led by a node not in
    ``keep`` to a member in ``keep``; whether anything moved (then read again)."""
    moved = False
    for one in state.affected(p):
        if one.leader is not None and one.leader not in keep:
            await transfer(etcd, one.name.id, one.leader,
                           successor(one, state.up, keep), timeout)
            moved = True
    return moved


async def change(etcd: Any, vhost: str, stream: str, p: int,
                 plan: Callable[[StreamState, list[str]], list[str] | None],
                 timeout: float = 30.0, extra: Sequence[Any] = (),
                 compare: dict[str, int] | None = None) -> tuple[list[str] | None, int]:
    """Apply ``plan(state, members) -> new members`` (None: nothing to do) to partition
    ``p``, handing leaderships over first, retrying on a changed record: (the members
    written or None, the transaction's revision). ``extra`` and ``compare``: more of
    the same transaction (a compared key that changed fails it for good)."""
    for _ in range(RETRIES):
        state = await read_stream(etcd, vhost, stream)
        members = state.partition(p).members
        after = plan(state, members)
        if after is None:
            return None, 0
        if await hand_over(etcd, state, p, after, timeout):
            continue
        if not [n for n in state.partition(p).isr if n in after]:
            raise ReplicaError(f"{state.describe(p)}: no member left would be in sync (in "
                               f"sync: {', '.join(state.partition(p).isr) or 'none'}); "
                               "none could lead it")
        revision = await set_members(etcd, state, p, after, extra, compare)
        if revision is not None:
            return after, revision
        if compare and await _changed(etcd, compare):
            raise ReplicaError(f"{state.describe(p)}: changed by another request", BUSY)
    raise ReplicaError(f"stream '{stream}' partition {p} in vhost '{vhost}': its replica "
                       "set kept changing; try again", BUSY)


async def _changed(etcd: Any, compare: dict[str, int]) -> bool:
    for key, revision in compare.items():
        found = await etcd.get(key)
        if (found.mod_revision if found is not None else 0) != revision:
            return True
    return False


def adding(node: str) -> Callable[[StreamState, list[str]], list[str] | None]:
    """The plan of ``add-replica``: ``node`` last (the members' order is the order of
    preference for the leadership)."""
    def plan(state: StreamState, members: list[str]) -> list[str] | None:
        state.check_node(node, running=True)
        return None if node in members else [*members, node]
    return plan


def removing(node: str) -> Callable[[StreamState, list[str]], list[str] | None]:
    """The plan of ``delete-replica``: never the last member (RabbitMQ's last_node)."""
    def plan(state: StreamState, members: list[str]) -> list[str] | None:
        if node not in members:
            state.check_node(node, running=False)
            return None
        if members == [node]:
            raise ReplicaError("the last replica cannot be removed")
        return [m for m in members if m != node]
    return plan
