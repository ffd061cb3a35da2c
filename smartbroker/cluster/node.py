"""Cluster mode's composition root: one node's etcd client and membership, from its settings.

``server/app.py`` builds a ``ClusterNode`` only when ``--etcd`` is given (the single node
imports nothing from ``smartbroker.cluster``), in two steps:

* ``connect()`` before recovery: etcd must answer and the node name must be free, or the
  broker refuses to start with one line (``ClusterError``), having touched nothing;
* ``start(ports)`` once the listeners are bound: the cluster link listens (its port may
  be 0: a free one), the node registers itself with the ports it really serves on, and
  follows the others (the link dials the up nodes it must).

``stop()`` comes first at shutdown, so that the others see this node leave at once.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.etcd_client import EtcdClient, EtcdUnavailable
from smartbroker.cluster.membership import Membership, MembershipError, describe, record_for

if TYPE_CHECKING:
    from smartbroker.cluster.link import ClusterLink
    from smartbroker.config import Config

_WILDCARD = ("", "0.0.0.0", "::", "[::]")
ETCD_TIMEOUT = 5.0  # seconds for one etcd request


class ClusterError(Exception):
    """The node cannot join its cluster: one line for the operator."""


def default_node_name() -> str:
    """RabbitMQ's ``rabbit@<hostname>``, ours (also the single node's name in the API)."""
    return f"smartbroker@{socket.gethostname()}"


def advertise_host(config: Config) -> str:
    """Where the other nodes reach this one: the setting, else the listen address unless
    it is a wildcard, else the hostname."""
    if config.advertise_host:
        return config.advertise_host
    return socket.gethostname() if config.host in _WILDCARD else config.host


class ClusterNode:
    """One node of a cluster: ``etcd`` (the client every cluster module shares) and
    ``membership`` (this node's lease, and who is up)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.name = config.node_name or default_node_name()
        self.cluster_name = config.cluster_name
        self.etcd = EtcdClient(config.etcd, config.cluster_name, timeout=ETCD_TIMEOUT)
        record = record_for(self.name, advertise_host(config), {}, config.data_dir)
        self.membership = Membership(self.etcd, record, config.cluster_lease_ttl)
        self.link: ClusterLink | None = None  # the cluster link, once started
        self.forwarding: Any = None  # forwarding_node.QueueForwarding, once started
        self.definitions: Any = None  # definitions_etcd.EtcdDefinitionStore, once open
        self.definitions_sync: Any = None  # definitions_sync.DefinitionsSync
        self.kafka: Any = None  # kafka_peers.KafkaPeers, once the Kafka listener serves it
        self.clients: Any = None  # clients.ClusterClients, once the management API serves
        self.replication: Any = None  # replication.Replication, once the link runs

    async def connect(self) -> None:
        """etcd answers and the name is free, or ClusterError (and nothing left open)."""
        try:
            await self.etcd.connect()
            await self.membership.check_name()
        except EtcdUnavailable as exc:
            await self.etcd.close()
            raise ClusterError(f"cannot reach etcd at {', '.join(self.config.etcd)}: "
                               f"{_short(exc)}") from None
        except MembershipError as exc:
            await self.etcd.close()
            raise ClusterError(str(exc)) from None

    async def start(self, amqp: int, http: int, kafka: int = 0, broker: Any = None) -> None:
        """Listen for the other nodes (the cluster link), then register with the ports this
        node really serves on, and follow the others (the link dials those it must)."""
        from smartbroker.cluster.link_setup import start_link

        try:
            self.link = await start_link(self.name, self.cluster_name, self.config.host,
                                         self.config.cluster_port, self.config.cluster_secret,
                                         self.etcd, self.membership)
        except OSError as exc:
            raise ClusterError(f"cannot listen on {self.config.host}:"
                               f"{self.config.cluster_port} (cluster link): "
                               f"{exc.strerror or exc}") from None
        except (EtcdUnavailable, ValueError) as exc:
            raise ClusterError(f"cannot get the cluster secret: {_short(exc)}") from None
        from smartbroker.cluster.replication import Replication  # replicated logs' core

        try:
            self.replication = await Replication(self.name, self.link, self.etcd,
                                                 self.membership,
                                                 replica_lag_ms=self.config.replica_lag_ms).start()
        except EtcdUnavailable as exc:
            await self.link.close()
            raise ClusterError(f"cannot read the replicas: {_short(exc)}") from None
        if broker is not None:  # queues placed, forwarded and consumed across the nodes
            from smartbroker.cluster.forwarding_node import start_forwarding

            try:
                self.forwarding = await start_forwarding(self, broker)
            except EtcdUnavailable as exc:
                await self.link.close()
                raise ClusterError(f"cannot read the placements: {_short(exc)}") from None
        if broker is not None and self.definitions_sync is not None:
            from smartbroker.cluster.visibility import CatchUp  # a 404 waits for the watches

            broker.catch_up = CatchUp(self.etcd, self.definitions.view, self.definitions_sync,
                                      self.forwarding)
            from smartbroker.cluster.exclusive_queues import apply_at_start  # the others'

            apply_at_start(self.definitions, self.definitions_sync, self.name)
            from smartbroker.cluster.definitions_seen import DefinitionsSeen  # -ok when all have it

            self.definitions.seen = DefinitionsSeen(self.link, self.definitions.view,
                                                    self.definitions_sync, self.etcd).everywhere
        self.membership.record = dataclasses.replace(
            self.membership.record, amqp_port=amqp, http_port=http, kafka_port=kafka,
            cluster_port=self.link.port)
        try:
            await self.membership.start()
        except MembershipError as exc:
            await self.link.close()
            raise ClusterError(str(exc)) from None
        lease = lambda: self.membership.lease  # noqa: E731 - transients live on it
        if self.definitions is not None:
            self.definitions.lease = lease
        if self.forwarding is not None:
            self.forwarding.placement.lease = lease

    async def serve_kafka(self, handlers: Any, broker: Any) -> None:
        """The Kafka listener's ``handlers`` see every node as a broker (kafka_peers)."""
        from smartbroker.cluster.kafka_peers import start_kafka_peers

        if self.forwarding is None:
            return
        try:
            self.kafka = await start_kafka_peers(self, broker, handlers)
        except EtcdUnavailable as exc:
            raise ClusterError(f"cannot read the Kafka topics: {_short(exc)}") from None

    async def open_definitions(self) -> Any:
        """The cluster's definitions store (etcd), read and followed; ClusterError."""
        from smartbroker.cluster.definitions_sync import open_definitions

        try:
            self.definitions = await open_definitions(self.etcd)
            self.definitions.node = self.name  # the owner its exclusive queues are marked with
        except EtcdUnavailable as exc:
            raise ClusterError(f"cannot read the definitions: {_short(exc)}") from None
        self.definitions.timeout = self.config.cluster_metadata_timeout
        return self.definitions

    def follow_definitions(self, broker: Any, store: Any) -> None:
        """Other nodes' definition changes are applied to ``broker`` from now on."""
        from smartbroker.cluster.definitions_sync import DefinitionsSync

        self.definitions_sync = DefinitionsSync(broker, store, self._applying_peers)

    def _applying_peers(self) -> Any:
        """Forwarding's ``applying_peers`` once it runs (queues applied for other nodes
        are never placed here)."""
        import contextlib

        forwarding = self.forwarding
        return forwarding.applying_peers() if forwarding is not None else contextlib.nullcontext()

    def serve_clients(self, local: Any, close: Any) -> None:
        """Every node's connections, channels and consumers for the management API
        (cluster/clients.py): ``local()`` this node's rows, ``close(name, reason)``."""
        from smartbroker.cluster.clients import ClusterClients

        if self.link is not None:
            self.clients = ClusterClients(self.link,
                                          self.config.collect_statistics_interval / 1000,
                                          local, close)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node, up or down, for ``/api/nodes`` (RabbitMQ's field names)."""
        return [describe(m) for m in self.membership.members()]

    async def stop(self) -> None:
        """Leave (the lease revoked: the others see it at once), unlink, close the client."""
        await self.membership.stop()
        if self.kafka is not None:
            await self.kafka.close()
        if self.forwarding is not None:
            await self.forwarding.close()
        if self.replication is not None:
            await self.replication.stop()
        if self.link is not None:
            await self.link.close()
        await self.etcd.close()


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())
