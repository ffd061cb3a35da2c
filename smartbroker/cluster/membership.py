"""Who is in the cluster and who is up: each node's lease and record in etcd, watched.

Keys (relative to the cluster prefix, see ``etcd_client``):

* ``nodes/<name>``: the node's ``NodeRecord`` as JSON, attached to its lease. The key
  exists exactly while the node is up: a clean stop revokes the lease (the key goes at
  once), a kill -9 stops the keep-alives and etcd deletes the key when the lease expires
  (``cluster_lease_ttl`` seconds). That is RabbitMQ's "running" for a node.
* ``known/<name>``: the same record without a lease: the nodes that were ever members.
  A known node with no ``nodes/`` key is down (RabbitMQ lists it, ``running: false``)
  until ``smartbroker cluster forget`` deletes it (``forget_cluster_node``).

A name is held by one node at a time: registering is a create-if-absent transaction. A
live key of the same name is refused, unless it carries our own ``node_id`` (kept in the
data directory): then it is the lease of this data directory's previous process, killed
before the lease expired, and we revoke it and take the name over (a restart right after
a kill -9 is not a duplicate).

Losing etcd never stops the node serving its local clients: a warning is logged once,
the keep-alives go on being tried, and when etcd answers again the node registers again
(a new lease if the old one expired meanwhile). The view of the others then catches up
through the resumed watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smartbroker.cluster.etcd_client import (
    EtcdClient,
    EtcdUnavailable,
    RevisionCompactedError,
    stop_tasks,
)

log = logging.getLogger("smartbroker.cluster")

NODES = "nodes/"
KNOWN = "known/"
_RETRY = 0.5  # seconds between attempts to re-register or re-read after a failure


class MembershipError(Exception):
    """This node cannot join (its name is held by another live node): one line."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What a node tells the others about itself (the value of its ``nodes/`` key)."""

    name: str
    host: str  # the advertised host: where the others dial it
    amqp_port: int
    kafka_port: int  # 0: no Kafka listener
    http_port: int
    cluster_port: int
    version: str
    started_at: float  # epoch seconds
    node_id: str  # which data directory (a restart of the same node keeps it)
    handoff: str = ""  # serve --workers: where siblings hand it client sockets (cluster/handoff.py)
    host_id: str = ""  # which machine: sockets pass only between workers of one

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NodeRecord | None:
        """The record, or None for a value that is not one (a foreign or newer writer)."""
        try:
            doc = json.loads(data)
            return cls(**{f: doc[f] for f in cls.__dataclass_fields__ if f in doc})
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True, slots=True)
class Member:
    """One node as ``/api/nodes`` and ``cluster status`` show it."""

    name: str
    running: bool
    record: NodeRecord | None  # None: a known name whose record could not be read


def node_id(data_dir: Path) -> str:
    """This data directory's node id, created on first use: it tells a restart of this
    node from a second node started with the same name."""
    path = data_dir / "cluster-node-id"
    with contextlib.suppress(OSError):
        text = path.read_text().strip()
        if text:
            return text
    new = uuid.uuid4().hex
    path.write_text(new + "\n")
    return new


def _name(key: bytes, prefix: str) -> str:
    return key[len(prefix):].decode(errors="replace")


Listener = Callable[[str, bool], None]  # (node name, up)


class Membership:
    """This node's lease and record, and every node's state as etcd last said.

    ``start()`` registers (or raises MembershipError) and starts the keep-alive and the
    watches; ``members()`` is the view; ``listeners`` hear each node going up or down;
    ``stop()`` revokes the lease so the others see the stop at once."""

    def __init__(self, etcd: EtcdClient, record: NodeRecord, ttl: int) -> None:
        self.etcd = etcd
        self.record = record
        self.ttl = ttl
        self.up: dict[str, NodeRecord | None] = {}
        self.known: dict[str, NodeRecord | None] = {}
        self.listeners: list[Listener] = []
        self.lease = 0
        # loop time before which etcd cannot have expired ``lease`` (measured from when
        # the last grant or refresh that got through was SENT): replication's leaders
        # confirm nothing past it (cluster/replication)
        self.lease_deadline = 0.0
        self.etcd_lost = False  # the warning was logged; the node is cut off from etcd
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        return self.record.name

    def members(self) -> list[Member]:
        """Every known or up node, by name; this node always, and running."""
        names = set(self.known) | set(self.up) | {self.name}
        return [Member(n, n == self.name or n in self.up,
                       self.record if n == self.name else self.up.get(n) or self.known.get(n))
                for n in sorted(names)]

    def is_up(self, name: str) -> bool:
        return name == self.name or name in self.up

    # -- joining and leaving ---------------------------------------------------------------
    async def check_name(self) -> None:
        """Refuse early (before recovery) a name held by another live node."""
        current = await self.etcd.get(NODES + self.name)
        if current is not None and not self._ours(current.value):
            raise MembershipError(self._in_use(current.value))

    async def start(self) -> None:
        """Register and read the first view; MembershipError for a name in use. etcd gone
        since ``check_name`` is a lost etcd like any other: warned, retried, served."""
        try:
            await self._register()
            await self._seed(NODES, self.up)  # the first view, before this node serves
            await self._seed(KNOWN, self.known)
        except (EtcdUnavailable, TimeoutError) as exc:
            self._lost(exc)
        self._tasks = [asyncio.create_task(self._keep_alive(), name="cluster-lease"),
                       asyncio.create_task(self._follow(NODES, self.up), name="cluster-nodes"),
                       asyncio.create_task(self._follow(KNOWN, self.known), name="cluster-known")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)
        if self.lease:
            lease, self.lease = self.lease, 0
            self.lease_deadline = 0.0
            try:
                await asyncio.wait_for(self.etcd.revoke_lease(lease), 2.0)
            except (EtcdUnavailable, TimeoutError) as exc:
                log.warning("could not leave the cluster at once (%s): the others see this "
                            "node down when its lease expires", exc)

    async def _register(self) -> None:
        """A new lease, and ``nodes/<name>`` on it if nobody else holds the name."""
        key = NODES + self.name
        value = self.record.to_json()
        sent = asyncio.get_running_loop().time()
        lease = await self.etcd.grant_lease(self.ttl)
        try:
            created, current = await self.etcd.create_if_absent(key, value, lease)
            if not created and self._ours(current.value) and current.lease:
                # our data directory's previous process, killed: its lease is ours to end
                with contextlib.suppress(EtcdUnavailable):
                    await self.etcd.revoke_lease(current.lease)
                created, current = await self.etcd.create_if_absent(key, value, lease)
            if not created:
                raise MembershipError(self._in_use(current.value))
            await self.etcd.put(KNOWN + self.name, value)
        except BaseException:
            with contextlib.suppress(EtcdUnavailable):
                await self.etcd.revoke_lease(lease)
            raise
        self.lease = lease
        self.lease_deadline = sent + self.ttl
        log.info("joined cluster %s as node %s (lease %x, %ds)", self.etcd.cluster_name,
                 self.name, lease, self.ttl)

    def _ours(self, value: bytes) -> bool:
        other = NodeRecord.from_json(value)
        return other is not None and other.node_id == self.record.node_id

    def _in_use(self, value: bytes) -> str:
        other = NodeRecord.from_json(value)
        where = f" ({other.host}, AMQP port {other.amqp_port})" if other else ""
        return (f"node name {self.name!r} is in use by a running node{where} of cluster "
                f"{self.etcd.cluster_name!r}: give this node another --node-name")

    # -- the lease ---------------------------------------------------------------------------
    async def _keep_alive(self) -> None:
        """Refresh every ttl/3 s; a lease lost (etcd away longer than the TTL, or revoked)
        means registering again as soon as etcd answers."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                sent = asyncio.get_running_loop().time()
                if not self.lease:
                    await self._register()
                elif (left := await self.etcd.refresh_lease(self.lease)) <= 0:
                    log.warning("cluster lease of node %s expired: registering again",
                                self.name)
                    self.lease = 0  # (its deadline, past, stays: the link's ``given_up``)
                    await self._register()
                else:
                    self.lease_deadline = sent + left
            except (EtcdUnavailable, TimeoutError) as exc:
                self._lost(exc)
                continue
            except MembershipError as exc:  # someone took the name while we were away
                if not self.etcd_lost:
                    log.error("cannot rejoin the cluster: %s", exc)
                self.etcd_lost = True  # said once; "a member" again when it gets through
                continue
            except Exception as exc:  # never a dead keep-alive, never a traceback
                log.warning("cluster lease keep-alive failed: %s: %s", type(exc).__name__, exc)
                continue
            if self.etcd_lost:
                self.etcd_lost = False
                log.info("etcd reachable again: node %s is a member", self.name)

    def _lost(self, exc: BaseException) -> None:
        if not self.etcd_lost:
            self.etcd_lost = True
            log.warning("etcd unreachable (%s): still serving local clients; rejoining "
                        "when it answers", exc)

    # -- the view ----------------------------------------------------------------------------
    async def _seed(self, prefix: str, into: dict[str, NodeRecord | None]) -> int:
        """Read every key under ``prefix`` into ``into`` (telling listeners what changed)."""
        found, revision = await self.etcd.range(prefix)
        fresh = {_name(kv.key, prefix): NodeRecord.from_json(kv.value) for kv in found}
        for gone in set(into) - set(fresh):
            del into[gone]
            self._tell(prefix, gone, False)
        for name, record in fresh.items():
            new = name not in into
            into[name] = record
            if new:
                self._tell(prefix, name, True)
        return revision

    async def _follow(self, prefix: str, into: dict[str, NodeRecord | None]) -> None:
        """Keep ``into`` equal to etcd's keys under ``prefix``: a read, then the watch from
        the next revision; after compaction or an error, read again."""
        while True:
            try:
                revision = await self._seed(prefix, into)
                async for event in self.etcd.watch(prefix, start_revision=revision + 1):
                    name = _name(event.key, prefix)
                    if event.kind == "put":
                        new = name not in into
                        into[name] = NodeRecord.from_json(event.value)
                        if new:
                            self._tell(prefix, name, True)
                    elif into.pop(name, 0) != 0:
                        self._tell(prefix, name, False)
            except (EtcdUnavailable, RevisionCompactedError, TimeoutError):
                await asyncio.sleep(_RETRY)
            except Exception as exc:  # never a dead watch, never a traceback
                log.warning("cluster watch of %s failed: %s: %s", prefix, type(exc).__name__,
                            exc)
                await asyncio.sleep(_RETRY)

    def _tell(self, prefix: str, name: str, present: bool) -> None:
        if prefix != NODES or name == self.name:
            return
        log.info("cluster node %s is %s", name, "up" if present else "down")
        for listener in list(self.listeners):
            try:
                listener(name, present)
            except Exception:  # one listener's bug must not stop the view
                log.exception("cluster membership listener failed")


def record_for(name: str, host: str, ports: dict[str, int], data_dir: Path) -> NodeRecord:
    """This node's record: ``ports`` has amqp, kafka, http and cluster."""
    from smartbroker import __version__

    return NodeRecord(name=name, host=host, amqp_port=ports.get("amqp", 0),
                      kafka_port=ports.get("kafka", 0), http_port=ports.get("http", 0),
                      cluster_port=ports.get("cluster", 0), version=__version__,
                      started_at=time.time(), node_id=node_id(data_dir))


def describe(member: Member, now: float | None = None) -> dict[str, Any]:
    """A member under RabbitMQ's /api/nodes field names (what another node's record says;
    memory and disk figures only the node itself knows)."""
    record = member.record
    out: dict[str, Any] = {"name": member.name, "type": "disc", "running": member.running,
                           "being_drained": False, "partitions": []}
    if member.running and record is not None:
        out["uptime"] = max(0, int(((now or time.time()) - record.started_at) * 1000))
    else:
        out["uptime"] = 0
    if record is not None:
        out.update(host=record.host, amqp_port=record.amqp_port, kafka_port=record.kafka_port,
                   http_port=record.http_port, cluster_port=record.cluster_port,
                   product_version=record.version)
    return out
