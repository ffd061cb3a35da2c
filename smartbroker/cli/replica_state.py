"""The replica sets of a cluster as etcd holds them, read in one pass for the operator
commands (``queues grow|shrink|add-member|delete-member``, ``cluster rebalance``,
``cluster status``).

A replicated log (a quorum queue, or one stream partition) has, under the cluster
prefix (docs/replication.md):

- ``replica/isr/<log id>`` = ``{"members", "isr", "epoch"}``: its replica set, the
  members in sync, the leader's epoch. The leader changes ``isr``; these commands change
  ``members``, with compare-and-swap on the key's mod revision;
- ``replica/leader/<log id>`` = ``{"node"}`` on the leader's lease (gone with it);
- ``placement/<vhost>/<queue>``: the queue's leader and, for routing and the management
  API, the same ``members`` (rewritten with them in the same transaction).

Names and values are the replication core's (``cluster/replication/records.py``).
Everything here is pure but ``read``: the plans (``grow_targets``, ``rebalance_moves``)
are tested without etcd. Imported only when a command runs (a single node's CLI loads
nothing of cluster mode).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from smartbroker.cli.common import CliError
from smartbroker.cluster.replication.records import ISR, LEADER, TRANSFER, LogName, decode_node

__all__ = ["ISR", "LEADER", "TRANSFER", "ClusterReplicas", "Replicas", "grow_targets",
           "leader_counts", "log_id", "read", "rebalance_moves"]


def log_id(vhost: str, queue: str, partition: int | None = None) -> str:
    """``<vhost>/<queue>[/<partition>]``, each name one percent-encoded segment."""
    return LogName(vhost, queue, partition).id


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _names(value: Any) -> list[str]:
    return [n for n in value if isinstance(n, str)] if isinstance(value, list) else []


@dataclass
class Replicas:
    """One replicated log as read: its record and the revisions a change compares."""

    vhost: str
    queue: str
    partition: int | None
    record: dict[str, Any]  # the ISR record's JSON (fields kept as read)
    revision: int  # of the ISR key
    leader: str | None  # the leader key's node; None while there is no leader

    @property
    def log(self) -> str:
        return log_id(self.vhost, self.queue, self.partition)

    @property
    def members(self) -> list[str]:
        return _names(self.record.get("members"))

    @property
    def isr(self) -> list[str]:
        return _names(self.record.get("isr"))

    def describe(self) -> str:
        where = "" if self.partition is None else f" partition {self.partition}"
        return f"queue '{self.queue}'{where} in vhost '{self.vhost}'"


@dataclass
class ClusterReplicas:
    """Nodes up and known, queue types, placements and every replicated log."""

    up: set[str] = field(default_factory=set)
    known: set[str] = field(default_factory=set)
    types: dict[tuple[str, str], str] = field(default_factory=dict)  # (vhost, queue) -> type
    placements: dict[tuple[str, str], tuple[dict[str, Any], int]] = field(default_factory=dict)
    logs: list[Replicas] = field(default_factory=list)

    def quorum(self, vhost: str, queue: str) -> Replicas | None:
        """The replica set of a quorum queue (None: not replicated)."""
        return next((r for r in self.logs if (r.vhost, r.queue) == (vhost, queue)
                     and r.partition is None), None)

    def check_queue(self, vhost: str, queue: str) -> Replicas:
        """The quorum queue's replica set, or CliError saying why there is none."""
        kind = self.types.get((vhost, queue))
        if kind is None:
            raise CliError(f"queue '{queue}' not found in vhost '{vhost}'")
        if kind != "quorum":
            raise CliError(f"queue '{queue}' in vhost '{vhost}' is a {kind} queue, not a "
                           "quorum queue")
        found = self.quorum(vhost, queue)
        if found is None:
            raise CliError(f"queue '{queue}' in vhost '{vhost}' has no replica set (declared "
                           "with x-quorum-initial-group-size 1, or on a single node)")
        return found

    def check_node(self, node: str, *, running: bool) -> None:
        """CliError for a node the cluster never had (or, ``running``, one that is down)."""
        if node not in self.known | self.up:
            raise CliError(f"no node '{node}' in the cluster")
        if running and node not in self.up:
            raise CliError(f"node '{node}' is not running")

    def quorum_logs(self, vhost_pattern: str = ".*", queue_pattern: str = ".*") -> list[Replicas]:
        """Every replicated quorum queue whose names match (RabbitMQ's patterns:
        regular expressions searched in the name)."""
        vhosts, queues = _pattern(vhost_pattern, "vhost"), _pattern(queue_pattern, "queue")
        return sorted((r for r in self.logs if r.partition is None
                       and self.types.get((r.vhost, r.queue)) == "quorum"
                       and vhosts.search(r.vhost) and queues.search(r.queue)),
                      key=lambda r: (r.vhost, r.queue))

    def stream_logs(self, vhost_pattern: str = ".*", queue_pattern: str = ".*") -> list[Replicas]:
        """Every replicated stream partition whose names match (not the group offsets
        logs: a partition's leader is where its publishes and reads go)."""
        vhosts, queues = _pattern(vhost_pattern, "vhost"), _pattern(queue_pattern, "queue")
        return sorted((r for r in self.logs if r.partition is not None
                       and self.types.get((r.vhost, r.queue)) == "stream"
                       and vhosts.search(r.vhost) and queues.search(r.queue)),
                      key=lambda r: (r.vhost, r.queue, r.partition or 0))


def _pattern(text: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise CliError(f"bad --{what}-pattern {text!r}: {exc}") from None


async def read(etcd: Any) -> ClusterReplicas:
    """Everything the commands look at (several prefix reads; a change compares the
    revisions it depends on, so a read that is a moment old is safe)."""
    from smartbroker.cluster import definitions_keys as dk
    from smartbroker.cluster.membership import KNOWN, NODES
    from smartbroker.cluster.placement import PREFIX, parse_key

    out = ClusterReplicas()
    up, _ = await etcd.range(NODES)
    known, _ = await etcd.range(KNOWN)
    out.up = {kv.key[len(NODES):].decode(errors="replace") for kv in up}
    out.known = {kv.key[len(KNOWN):].decode(errors="replace") for kv in known}
    queues, _ = await etcd.range(dk.ROOT + b"queues/")
    for kv in queues:
        data, names = _json(kv.value), dk.split(kv.key)[1]
        if data is not None and len(names) == 2:
            out.types[(names[0], names[1])] = str(data.get("type", "classic"))
    placements, _ = await etcd.range(PREFIX)
    for kv in placements:
        data, found = _json(kv.value), parse_key(kv.key)
        if data is not None and found is not None:
            out.placements[found] = (data, kv.mod_revision)
    leaders: dict[str, str] = {}
    for kv in (await etcd.range(LEADER))[0]:
        node = decode_node(kv.value)
        if node is not None:
            leaders[kv.key[len(LEADER):].decode(errors="replace")] = node
    for kv in (await etcd.range(ISR))[0]:
        text = kv.key[len(ISR):].decode(errors="replace")
        data, names = _json(kv.value), LogName.parse(text)
        if data is not None and names is not None:
            out.logs.append(Replicas(*names, data, kv.mod_revision, leaders.get(text)))
    return out


def grow_targets(logs: Iterable[Replicas], node: str, strategy: str) -> list[Replicas]:
    """The logs ``grow NODE all|even`` adds ``node`` to (rabbit_quorum_queue:grow): those
    it is not a member of; with ``even``, only those with an even number of members."""
    return [r for r in logs if node not in r.members
            and (strategy == "all" or len(r.members) % 2 == 0)]


def leader_counts(logs: Iterable[Replicas], nodes: Iterable[str]) -> Counter[str]:
    counts: Counter[str] = Counter(dict.fromkeys(nodes, 0))
    counts.update(r.leader for r in logs if r.leader is not None)
    return counts


def rebalance_moves(logs: list[Replicas], up: set[str]) -> list[tuple[Replicas, str]]:
    """Leader moves that leave each running node leading about as many logs (at most one
    apart where the replica sets allow: rabbit_amqqueue:rebalance's goal). A log moves
    only to a running member in its ISR, from the node leading the most, to the
    candidate leading the fewest, while that narrows the gap by at least two."""
    counts = leader_counts((r for r in logs if r.leader in up), up)
    moves: list[tuple[Replicas, str]] = []
    moved: set[int] = set()
    while True:
        best: tuple[int, int, Replicas, str] | None = None
        for i, r in enumerate(logs):
            if i in moved or r.leader not in up:
                continue
            for candidate in r.isr:
                if candidate == r.leader or candidate not in up:
                    continue
                gap = counts[r.leader] - counts[candidate]
                if gap >= 2 and (best is None or gap > best[0]):
                    best = (gap, i, r, candidate)
        if best is None:
            return moves
        _, i, r, to = best
        moved.add(i)
        assert r.leader is not None
        counts[r.leader] -= 1
        counts[to] += 1
        moves.append((r, to))
