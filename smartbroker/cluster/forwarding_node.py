"""Queue forwarding on one node: the composition of the leader's service
(``forwarding.LeaderService``), the forwarders of publishes (``forwarding_publish``) and
the remote consumers (``remote_consumer``) over the cluster link, and the queue factory
that gives a vhost a ``RemoteQueue`` for a queue another node leads (whose counts
``queue_counts`` brings).

``ClusterNode`` (``cluster/node.py``) builds one, hands it the link, and calls
``peer_down`` when membership sees a node leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Protocol

from pamqp.commands import INDEX_MAPPING

from smartbroker.cluster import (
    exclusive_queues,
    partition_bounds,
    partition_spread,
    quorum_replicas,
    reply_to,
    spread_replicas,
    topic_configs,
)
from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster.forwarding import LeaderService, Link
from smartbroker.cluster.forwarding_intake import PublishIntake
from smartbroker.cluster.forwarding_publish import Forwarder
from smartbroker.cluster.forwarding_rehome import rehome
from smartbroker.cluster.forwarding_wire import CONFIRM, CONSUMER_OPS, DELIVERIES, PUBLISH, Op
from smartbroker.cluster.link_peer import PeerDown
from smartbroker.cluster.placement import Placement, PlacementTable
from smartbroker.cluster.queue_counts import LeaderCounts
from smartbroker.cluster.remote_consumer import Subscriptions
from smartbroker.cluster.remote_queue import RemoteQueue
from smartbroker.cluster.replication import stream_replica_sets
from smartbroker.errors import AMQPError, ConnectionError
from smartbroker.queues.base import NoHost, Queue, QueueSpec, Storage
from smartbroker.queues.capabilities import check_arguments
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_args import StreamSettings
from smartbroker.queues.types import declare_queue, queue_type

log = logging.getLogger("smartbroker.cluster")


class Registry(Protocol):
    """Where the link's handlers are registered (``cluster/link.py``)."""

    def on_messages(self, spec: Any, handler: Callable[[str, list[tuple]], None]) -> None: ...

    def on_call(self, method: str, handler: Callable[[str, bytes], Any]) -> None: ...

    def on_peer_down(self, callback: Callable[[str], None]) -> None: ...


class GuardedLink:
    """The link as forwarding uses it from inside queues and channels: a peer whose link
    just went down is "not writable" and a send to it is dropped (its ``peer_down``
    follows and settles what was in flight), never an exception in a dispatch loop."""

    def __init__(self, link: Any) -> None:
        self.link = link

    def send(self, peer: str, spec: Any, item: tuple) -> bool:
        try:
            return self.link.send(peer, spec, item)
        except PeerDown:
            return False

    def writable(self, peer: str, spec: Any) -> bool:
        try:
            return self.link.writable(peer, spec)
        except PeerDown:
            return False

    async def call(self, peer: str, method: str, payload: bytes) -> bytes:
        return await self.link.call(peer, method, payload)

    def connected(self, peer: str) -> bool:
        return self.link.connected(peer)


class QueueForwarding:
    """``link``: a ``ClusterLink``; ``is_up``: whether a node is up (default: its link
    is connected)."""

    def __init__(self, node: str, vhosts: dict[str, Any], link: Any,
                 placement: PlacementTable, is_up: Callable[[str], bool] | None = None,
                 connections: set[Any] | None = None) -> None:
        self.node = node
        self.vhosts = vhosts
        self.link: Link = GuardedLink(link)
        self.placement = placement
        self._is_up = is_up or link.connected
        self.leader = LeaderService(vhosts, self.link)  # guarded: no PeerDown in a dispatch
        self.intake = PublishIntake(vhosts, self.link)
        self.subscriptions = Subscriptions(self)
        self.forwarders: dict[str, Forwarder] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._applying = 0  # inside applying_peers()
        self.connections = connections if connections is not None else set()
        self._throttled: set[Any] = set()  # publishers not read while a link is full
        self._full: set[str] = set()  # peers whose PUBLISH channel is out of credit
        self.throttles = 0  # how often publishers were held back (tests, metrics)
        self.counts = LeaderCounts(vhosts, self.link)  # for the management API (queue_counts.py)
        self.bounds: Any = None  # partition_bounds.BoundsFollower, once started
        self.replicas: Any = None  # quorum_replicas.QuorumReplicas, once started
        self.stream_replicas: Any = None  # replication/stream_replica_sets.StreamReplicas
        self.topic_configs: Any = None  # topic_configs.TopicConfigs (Kafka topic configs)
        self.running: Callable[[], Iterable[str]] = tuple  # members etcd says are running

    def register(self, registry: Registry) -> None:
        """The link channels and calls this node answers, and its peer-down callback."""
        registry.on_peer_down(self.peer_down)
        registry.on_messages(PUBLISH, self.intake.on_publish)
        registry.on_messages(CONFIRM, self.on_confirms)
        registry.on_messages(CONSUMER_OPS, self.leader.on_consumer_ops)
        registry.on_messages(DELIVERIES, self.subscriptions.on_deliveries)
        for method, handler in self.leader.calls().items():
            registry.on_call(method, handler)

    # -- what remote queues use ----------------------------------------------------------
    def is_up(self, peer: str) -> bool:
        return self._is_up(peer)

    def forwarder(self, peer: str) -> Forwarder | None:
        if not self._is_up(peer):
            return None
        found = self.forwarders.get(peer)
        if found is None:
            found = self.forwarders[peer] = Forwarder(peer, self.link, self._forwarder_full)
        return found

    def _forwarder_full(self, peer: str) -> None:
        """Stop reading every connection that publishes here until the link drains."""
        if peer not in self._full:
            self.throttles += 1
        self._full.add(peer)
        for conn in self.connections:
            transport = getattr(conn, "transport", None)
            if conn in self._throttled or not getattr(conn, "has_published", False) \
                    or transport is None or transport.is_closing():
                continue
            self._throttled.add(conn)
            transport.pause_reading()

    def _drained(self, peer: str) -> None:
        self._full.discard(peer)
        if self._full:
            return
        throttled, self._throttled = self._throttled, set()
        for conn in throttled:
            transport = getattr(conn, "transport", None)
            if transport is None or transport.is_closing() or conn.blocked \
                    or getattr(conn, "held", None) is not None:
                continue  # an alarm or a held answer resumes it itself
            transport.resume_reading()

    def on_confirms(self, peer: str, items: list[tuple]) -> None:
        forwarder = self.forwarders.get(peer)
        if forwarder is None:
            return
        for seq, nack in items:
            forwarder.on_confirm(seq, bool(nack))

    def send_op(self, peer: str, op: Op, sub: int, handle: int, count: int) -> None:
        self.link.send(peer, CONSUMER_OPS, (op, sub, handle, count))

    def settle(self, peer: str, op: Op, sub: int, handle: int) -> None:
        if handle:
            self.send_op(peer, op, sub, handle, 0)

    async def call(self, peer: str, method: str, payload: bytes) -> bytes:
        return await self.link.call(peer, method, payload)

    def spawn(self, coro: Coroutine[Any, Any, None], conn: Any, ch: Any,
              ids: tuple[int, int]) -> None:
        """Run a method's answer that waits for the leader; its refusal closes the channel
        (or the connection) as the method's own would have. The connection reads and
        handles nothing more until the answer is out (AMQP answers in order, as
        ``server/held.py`` does for a declare that waits for the disk)."""
        async def run() -> None:
            try:
                await coro
            except ConnectionError as err:
                conn.server_close(err.code, err.text)
            except TimeoutError:  # etcd did not take the change in time (held.py's answer)
                method = INDEX_MAPPING.get((ids[0] << 16) | ids[1])
                name = method.name.lower() if method is not None else "the operation"
                conn.server_close(541, f"INTERNAL_ERROR - could not {name} because the "
                                       f"metadata store operation timed out")
            except AMQPError as err:
                if not ch.closing and not ch.torn_down:
                    conn.channel_failed(ch, err.at(*ids))
            except Exception:
                log.exception("forwarded call failed on connection %s", getattr(conn, "name", "?"))
                if not ch.closing and not ch.torn_down:
                    conn.channel_failed(ch, AMQPError(541, "internal error").at(*ids))

        task = self._keep(run())
        transport = getattr(conn, "transport", None)
        if transport is None or not hasattr(conn, "handle_buffered"):
            return
        conn.held = task
        transport.pause_reading()

        def release(_done: asyncio.Task[Any]) -> None:
            conn.held = None
            if transport.is_closing():
                return
            if not conn.blocked:  # a resource alarm keeps it paused (it resumes it)
                transport.resume_reading()
            conn.handle_buffered()

        task.add_done_callback(release)

    def spawn_call(self, peer: str, method: str, payload: bytes,
                   done: Callable[[dict[str, Any] | None], None]) -> None:
        async def run() -> None:
            try:
                reply = wire.decode(await self.link.call(peer, method, payload))
            except Exception as exc:  # the peer is gone, or answered garbage
                log.info("call %s to %s failed: %s", method, peer, exc)
                reply = None
            done(reply)

        self._keep(run())

    def _keep(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Node shutdown: counts and placements are no longer followed."""
        await self.counts.close()
        if self.bounds is not None:
            await self.bounds.close()
        if self.replicas is not None:
            self.replicas.close()
        if self.stream_replicas is not None:
            self.stream_replicas.close()
        if self.topic_configs is not None:
            self.topic_configs.close()
        await self.placement.close()

    # -- membership ----------------------------------------------------------------------
    def peer_down(self, peer: str) -> None:
        """``peer`` left: its consumers of our queues are gone (what they held is
        requeued), our consumers of its queues are cancelled, our unconfirmed publishes to
        it are nacked."""
        self.leader.peer_down(peer)
        self.intake.peer_down(peer)
        self.subscriptions.peer_down(peer)
        forwarder = self.forwarders.pop(peer, None)
        if forwarder is not None:
            forwarder.peer_down()
        self._drained(peer)

    # -- building queues -----------------------------------------------------------------
    @contextlib.contextmanager
    def applying_peers(self) -> Iterator[None]:
        """Declares inside this block apply another node's definitions (the etcd watch):
        they never place a queue, they wait for its placement (a local stand-in until it
        comes, see ``forwarding_rehome``)."""
        self._applying += 1
        try:
            yield
        finally:
            self._applying -= 1

    def queue_factory(self, spec: QueueSpec, host: Any, storage: Storage | None) -> Queue:
        """``VirtualHost.queue_factory`` in cluster mode (``_build``); a stream whose
        partitions are spread over the nodes is held on every node (``partition_spread``)."""
        q = partition_spread.attach(self, self._build(spec, host, storage))
        if self.topic_configs is not None:  # before its replicas: min.insync.replicas
            q = self.topic_configs.attach(q)
        if self.stream_replicas is not None:
            q = self.stream_replicas.attach(q)
        return q if self.replicas is None else self.replicas.attach(q)

    def _build(self, spec: QueueSpec, host: Any, storage: Storage | None) -> Queue:
        """A queue nobody placed yet is placed now by its locator (declared here:
        client-local puts it on this node), unless the declare applies another node's
        definitions. Then: the queue itself where this node leads it, else a
        ``RemoteQueue``."""
        if spec.exclusive:  # its connection's alone: on its node, unplaced; 405 elsewhere
            return exclusive_queues.locked_remote(self, spec) or declare_queue(spec, host, storage)
        leader = self.placement.leader(spec.vhost, spec.name)
        if leader is not None and not self._applying:
            # a new queue declared here under a placement this node knows: written again
            # (create-if-absent), so etcd holds one even if the old record was just deleted
            self.placement.claim(spec.vhost, spec.name, self.placement.queues[
                (spec.vhost, spec.name)], not spec.durable)
        if leader is None and not self._applying:
            proposal = self._propose(spec)
            if proposal.leader == self.node:
                q = declare_queue(spec, host, storage)  # refused here: nothing claimed
                self.placement.claim(spec.vhost, spec.name, proposal, not spec.durable)
                return q
            validate(spec)  # built by the leader, refused here with RabbitMQ's reply
            self.placement.claim(spec.vhost, spec.name, proposal, not spec.durable)
            leader = proposal.leader
        if leader is None or leader == self.node \
                or partition_spread.spread(self.placement.get(spec.vhost, spec.name)):
            return declare_queue(spec, host, storage)
        kind = queue_type(spec.arguments)
        # the type's refusals (a stream's basic.get, prefetch...), but neither an offset
        # log nor browsable here: the Kafka front end, /api/streams and the DLQ tools
        # read a stream's partitions or a queue's ready list, which live on its leader
        return RemoteQueue(spec.name, spec.vhost, leader, self, durable=spec.durable,
                           auto_delete=spec.auto_delete, arguments=spec.arguments,
                           capabilities=dataclasses.replace(kind.capabilities, offset_log=False,
                                                                 supports_browse=False),
                           type_name=getattr(kind, "type_name", "classic"))

    def _propose(self, spec: QueueSpec) -> Placement:
        partitions = 1
        if queue_type(spec.arguments).capabilities.offset_log:
            asked = spec.arguments.get("x-partitions", 1)
            partitions = asked if isinstance(asked, int) and 0 < asked <= 1024 else 1
        proposal = self.placement.propose(spec.vhost, spec.name, spec.arguments, spec.policy,
                                          self.up_nodes(), durable=spec.durable,
                                          exclusive=spec.exclusive, partitions=partitions)
        if queue_type(spec.arguments).capabilities.offset_log:  # x-initial-cluster-size
            proposal = spread_replicas.replicate(proposal, partitions, spread_replicas.cluster_size(
                spec.arguments), self.replica_nodes())
        elif self.replicas is not None and self.replicas.replication is not None:
            proposal = quorum_replicas.replicate(proposal, spec, self.replica_nodes())
        return proposal

    def up_nodes(self) -> list[str]:
        """This node and every node it is linked to."""
        peers = getattr(self.link.link, "peers", None)
        return sorted({self.node, *(peers() if peers is not None else ())})

    def replica_nodes(self) -> list[str]:
        """Where replicas may go: the linked nodes and every member etcd says is running,
        as RabbitMQ picks a quorum queue's members among its running nodes (a node just
        back, its link still being dialled, gets its copy once linked)."""
        return sorted({*self.up_nodes(), *self.running()})

    def attach(self, vhosts: Iterable[Any]) -> None:
        """Serve ``vhosts`` (and, through ``rehome``, fix the queues they restored before
        forwarding existed)."""
        for vhost in vhosts:
            vhost.queue_factory = self.queue_factory
            vhost.on_queue_deleted.append(self._deleted)
            reply_to.install(self, vhost)  # direct reply-to across the nodes
            for name in list(vhost.queues):
                rehome(self, vhost, name)

    def placement_changed(self, vhost_name: str, queue: str) -> None:
        vhost = self.vhosts.get(vhost_name)
        if vhost is not None:
            rehome(self, vhost, queue)

    def _deleted(self, q: Queue) -> None:
        """A queue led here was deleted: its placement goes with it."""
        if not isinstance(q, RemoteQueue) and self.placement.leader(q.vhost, q.name) == self.node:
            self.placement.release(q.vhost, q.name)

    def writable(self, peer: str, spec: Any) -> None:
        """The link to ``peer`` takes items again: publishers are read again (PUBLISH),
        parked consumers rejoin their queues (DELIVERIES)."""
        if spec is None or spec == PUBLISH:
            self._drained(peer)
        if spec is not None and spec != DELIVERIES:
            return
        for (node, _sub), consumer in list(self.leader.consumers.items()):
            if node == peer and consumer.parked and not consumer.cancelled:
                consumer.queue.wake(consumer)
                consumer.queue.dispatch()


def validate(spec: QueueSpec) -> None:
    """The declare's checks (its type's 406s) without building a queue here."""
    if queue_type(spec.arguments).capabilities.offset_log:  # a stream: no files made here
        check_arguments(StreamQueue.capabilities, spec)
        StreamSettings.parse(spec.name, spec.vhost, spec.durable, spec.exclusive,
                             spec.auto_delete, spec.arguments)
    else:
        declare_queue(spec, NoHost(), None).close()


async def start_forwarding(node: Any, broker: Any) -> QueueForwarding:
    """Cluster mode: placements read and followed from etcd, forwarding on the node's
    link, every vhost (now and later) building its queues through it."""
    placement = await PlacementTable(node.name, node.etcd).open()
    forwarding = QueueForwarding(node.name, broker.vhosts, node.link, placement,
                                 connections=broker.connections)
    forwarding.register(node.link)
    forwarding.running = lambda: [m.name for m in node.membership.members() if m.running]
    node.link.on_writable(forwarding.writable)
    placement.on_change.append(forwarding.placement_changed)
    forwarding.replicas = quorum_replicas.QuorumReplicas(forwarding, node)
    placement.on_change.append(forwarding.replicas.placement_changed)  # after rehome
    forwarding.attach(broker.vhosts.values())
    forwarding.replicas.attach_all(broker.vhosts.values())
    forwarding.stream_replicas = stream_replica_sets.StreamReplicas(forwarding, node)
    placement.on_change.append(forwarding.stream_replicas.placement_changed)
    forwarding.topic_configs = await topic_configs.start(forwarding, node.etcd)
    forwarding.stream_replicas.attach_all(broker.vhosts.values())
    broker.on_vhost_added.append(lambda vhost: forwarding.attach([vhost]))
    forwarding.counts.start(broker.config.collect_statistics_interval / 1000)
    forwarding.bounds = partition_bounds.start(forwarding, node.link)
    return forwarding
