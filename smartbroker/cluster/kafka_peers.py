"""The Kafka front end on a cluster: every node a broker, a topic's leader its stream's node.

Implements ``kafka/cluster.Peers`` for ``KafkaHandlers.attach_peers``:

* **Brokers.** Every up node whose membership record has a Kafka port is one Kafka
  broker, at its advertised host and Kafka port. Its broker id is derived from its node
  name (``broker_id``: CRC-32, 31 bits), so every node computes the same id for a node,
  and a node keeps its id across restarts and data directories.
* **Topics.** A topic's leader is its stream's (its placement); a stream whose
  placement spreads its partitions over the nodes has each partition led by the node
  the placement names (``partition_layout``, ``partition_elsewhere``: see
  ``partition_spread.py``). The leader describes each stream of the Kafka vhost it
  leads under ``kafka/topics/<vhost>/<topic>`` (``{"leader", "id", "partitions"}``: the
  topic id kept with the stream and its current partition count, so a CreatePartitions on
  the leader is seen everywhere), rewritten by a look every ``SCAN`` seconds when it
  changed (the look goes through the vhost's streams only, and through all its queues
  when their number changed or every ``FULL_SCAN`` looks); the other nodes list the
  topic with that leader. A topic whose placement names
  another node but whose description has not arrived is LEADER_NOT_AVAILABLE (Kafka's
  answer while a topic's leader is elected; clients retry).
* **Group coordinators.** Kafka hashes a group id to a ``__consumer_offsets`` partition
  and its leader coordinates the group. Here a group's committed offsets live in the
  streams it consumes, on their leader, so the coordinator of a group is the leader of
  its topics: the first OffsetCommit or OffsetFetch that names a topic led by another
  node records ``kafka/groups/<vhost>/<group>`` = that node and answers NOT_COORDINATOR;
  the client asks FindCoordinator again, which (on any node) now names the leader, and
  the group rejoins there. A group whose recorded node is down is coordinated wherever
  it asks until it names a topic again. A group consuming topics led by different nodes
  is coordinated by the leader of the first one recorded; its offsets of the others are
  refused (NOT_LEADER_OR_FOLLOWER read as an unknown partition). Transactional ids stay
  with the node asked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

from smartbroker.cluster.definitions_keys import seg, unseg
from smartbroker.cluster.etcd_client import Delete, Put
from smartbroker.cluster.etcd_view import WatchedPrefix
from smartbroker.cluster.partition_spread import owner, spread, spread_of
from smartbroker.cluster.spread_replicas import log_id
from smartbroker.kafka.cluster import Endpoint, RemoteTopic

log = logging.getLogger("smartbroker.cluster")
ROOT = b"kafka/"
ISR = b"replica/isr/"  # the replication core's in-sync sets (docs/replication.md)
SCAN = 0.5  # seconds between two looks at the streams this node leads
FULL_SCAN = 10  # every 10th look (or when the number of queues changed) finds new streams


def broker_id(node: str) -> int:
    """A node's Kafka broker id: the same on every node, non-negative 32-bit."""
    return zlib.crc32(node.encode()) & 0x7FFFFFFF


def cluster_id(cluster_name: str) -> str:
    """A Kafka-shaped cluster id (22 URL-safe base64 characters), one per cluster name."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"smartbroker-cluster:{cluster_name}").bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class KafkaPeers:
    """``kafka/cluster.Peers`` over membership, placement and the ``kafka/`` etcd prefix."""

    def __init__(self, node: Any, broker: Any, vhost: str) -> None:
        self.name: str = node.name
        self.membership = node.membership
        self.placement = node.forwarding.placement
        self.broker = broker
        self.vhost = vhost
        self.node_id = broker_id(self.name)
        self.cluster_id = cluster_id(node.cluster_name)
        self.view = WatchedPrefix(node.etcd, ROOT)
        self.isr = WatchedPrefix(node.etcd, ISR)  # replicated streams' in-sync replicas
        self._topics = ROOT + b"topics/" + seg(vhost) + b"/"
        self._groups = ROOT + b"groups/" + seg(vhost) + b"/"
        self._written: dict[str, bytes] = {}  # topic -> the description this node wrote
        self._streams: set[str] = set()  # the vhost's streams at the last full look
        self._size = -1  # how many queues the vhost had then
        self._looks = 0
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> KafkaPeers:
        await self.view.open()
        await self.isr.open()
        self._task = asyncio.create_task(self._scan_loop(), name="kafka-topics-scan")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.view.aclose()
        await self.isr.aclose()

    # -- brokers -------------------------------------------------------------------------
    def _endpoint(self, node: str) -> Endpoint | None:
        record = (self.membership.record if node == self.name
                  else self.membership.up.get(node))
        if record is None or not record.kafka_port:
            return None
        return broker_id(node), record.host, record.kafka_port

    def own(self) -> Endpoint | None:
        return self._endpoint(self.name)

    def brokers(self) -> Sequence[Endpoint]:
        names = sorted({self.name, *self.membership.up})
        return [e for e in map(self._endpoint, names) if e is not None]

    # -- topics --------------------------------------------------------------------------
    def _leader(self, name: str) -> str | None:
        return self.placement.leader(self.vhost, name)

    def led_elsewhere(self, name: str) -> bool:
        leader = self._leader(name)
        return leader is not None and leader != self.name

    def _remote(self, name: str, raw: bytes | None) -> RemoteTopic | None:
        leader = self._leader(name)
        if raw is None or leader is None or leader == self.name \
                or spread(self.placement.get(self.vhost, name)):  # held here too
            return None
        endpoint = self._endpoint(leader)
        try:
            doc = json.loads(raw)
            topic_id, partitions = uuid.UUID(doc["id"]), int(doc["partitions"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if endpoint is None or doc.get("leader") != leader or partitions < 1:
            return None  # its node is down, or it describes an older placement
        return RemoteTopic(name, endpoint[0], partitions, topic_id)

    def remote_topic(self, name: str) -> RemoteTopic | None:
        return self._remote(name, self.view.get(self._topics + seg(name)))

    def remote_topics(self) -> Sequence[RemoteTopic]:
        found = []
        for key, raw in self.view.view(self._topics).items():
            topic = self._remote(_name(key, self._topics), raw)
            if topic is not None:
                found.append(topic)
        return found

    def partition_layout(self, name: str, topic_id: uuid.UUID, partitions: int
                         ) -> tuple[uuid.UUID | None, tuple[int, ...]] | None:
        placement = self.placement.get(self.vhost, name)
        if placement is None or not spread(placement):
            return None
        held: Any = None  # the leader names a node once that node told it it holds it
        if placement.leader != self.name:  # the id the leader describes (one id everywhere)
            topic_id = None
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                doc = json.loads(self.view.get(self._topics + seg(name)) or b"{}")
                if doc.get("leader") == placement.leader:
                    topic_id = uuid.UUID(doc["id"])
        else:
            topic_id = self._kept_id(name, placement) or topic_id
            vhost = self.broker.vhosts.get(self.vhost)
            found = spread_of(None if vhost is None else vhost.queues.get(name))
            held = {} if found is None else found.bounds
        leaders = []
        for i in range(partitions):
            node = owner(placement, i)
            endpoint = self._endpoint(node)
            # a partition of a node that has not got the topic yet (its definitions watch
            # is behind: a Produce there could auto-create it anew) has no leader yet
            known = held is None or node == self.name or i in held
            leaders.append(endpoint[0] if endpoint is not None and known else -1)
        return topic_id, tuple(leaders)

    def partition_replicas(self, name: str, partitions: int
                           ) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] | None:
        """A replicated topic's (replicas, in-sync replicas) per partition, as broker
        ids: its placement's members, and the ISR its leader keeps under ``replica/isr/``
        (the members up until it wrote one). None when the topic is not replicated."""
        placement = self.placement.get(self.vhost, name)
        if placement is None or not placement.partition_members:
            return None
        out = []
        for i in range(partitions):
            members = placement.replicas(i) or (owner(placement, i),)
            isr: Any = None
            raw = self.isr.get(ISR + log_id(self.vhost, name, i).encode())
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                isr = json.loads(raw)["isr"] if raw is not None else None
            if not isinstance(isr, list):
                isr = [m for m in members if m == self.name or m in self.membership.up]
            out.append((tuple(broker_id(m) for m in members),
                        tuple(broker_id(m) for m in isr if isinstance(m, str))))
        return tuple(out)

    def _kept_id(self, name: str, placement: Any) -> uuid.UUID | None:
        """A replicated stream keeps the topic id its first leader described when its
        leadership moves here (each node's copy made its own id: a new one would look
        to clients like a topic deleted and created again)."""
        if placement is None or not placement.partition_members:
            return None
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            doc = json.loads(self.view.get(self._topics + seg(name)) or b"{}")
            return uuid.UUID(doc["id"]) if doc else None
        return None

    def partition_elsewhere(self, name: str, partition: int) -> bool:
        placement = self.placement.get(self.vhost, name)
        return placement is not None and bool(placement.partitions) \
            and owner(placement, partition) != self.name

    async def _scan_loop(self) -> None:
        while True:
            try:
                self.scan()
            except Exception as exc:  # never a dead task: one line, and the next look
                log.warning("describing this node's Kafka topics failed: %s", exc)
            await asyncio.sleep(SCAN)

    def scan(self) -> None:
        """Describe in etcd every stream of the Kafka vhost this node leads, when changed."""
        vhost = self.broker.vhosts.get(self.vhost)
        queues = vhost.queues if vhost is not None else {}
        self._looks += 1
        if len(queues) != self._size or self._looks % FULL_SCAN == 0:
            # the streams among every queue (an AMQP vhost may hold many classic ones):
            # only when the count changed, and now and then (a delete and a declare)
            self._size = len(queues)
            self._streams = {n for n, q in list(queues.items()) if q.capabilities.offset_log}
        seen = set()
        for name in list(self._streams):
            queue = queues.get(name)
            if queue is None or not queue.capabilities.offset_log \
                    or self._leader(name) != self.name:
                continue
            seen.add(name)
            topic_id = self._kept_id(name, self.placement.get(self.vhost, name)) \
                or queue.meta.topic_id
            value = json.dumps({"leader": self.name, "id": str(topic_id),
                                "partitions": len(queue.partitions)}, sort_keys=True).encode()
            if self._written.get(name) != value:
                self._written[name] = value
                self.view.write(Put(self._topics + seg(name), value))
        for name in [n for n in self._written if n not in seen]:
            del self._written[name]
            key = self._topics + seg(name)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                if json.loads(self.view.get(key) or b"{}").get("leader") == self.name:
                    self.view.write(Delete(key))

    # -- group coordinators ----------------------------------------------------------------
    def _group_node(self, group: str) -> str | None:
        raw = self.view.get(self._groups + seg(group))
        return None if raw is None else raw.decode(errors="replace")

    def coordinator(self, group: str) -> Endpoint | None:
        node = self._group_node(group)
        if node is None or node == self.name:
            return None
        return self._endpoint(node)

    def coordinated_elsewhere(self, group: str, topics: Sequence[str]) -> bool:
        node = self._group_node(group)
        if node is not None and (node == self.name or self._endpoint(node) is not None):
            return node != self.name  # recorded, and its node is up
        for name in sorted(set(topics)):
            leader = self._leader(name)
            if leader is not None and (leader == self.name or self._endpoint(leader)):
                self.view.write(Put(self._groups + seg(group), leader.encode()))
                return leader != self.name
        return False


def _name(key: bytes, prefix: bytes) -> str:
    return unseg(key[len(prefix):])


async def start_kafka_peers(node: Any, broker: Any, handlers: Any) -> KafkaPeers:
    """Cluster mode with a Kafka listener: its handlers see the whole cluster."""
    from smartbroker.cluster.kafka_reassign import StreamReassigner

    peers = await KafkaPeers(node, broker, broker.config.kafka_vhost).open()
    handlers.attach_peers(peers)
    handlers.reassignments.reassigner = StreamReassigner(node, broker.config.kafka_vhost)
    configs = getattr(node.forwarding, "topic_configs", None)
    if configs is not None:  # altered topic configs reach every node (topic_configs.py)
        handlers.admin.configs_changed = configs.publish
    return peers
