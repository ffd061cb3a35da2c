"""Kafka request handlers: request -> broker lookup -> response body.

``SUPPORTED`` is the one list of what is implemented: ApiVersions advertises exactly it,
and ``KafkaConnection`` refuses anything outside it before a handler runs. Add an API by
adding its handler to ``HANDLERS`` and its versions to ``SUPPORTED``.

Topics are the stream queues of the Kafka vhost (``kafka_vhost``): a stream's partitions
are the topic's partitions. A single node is the only broker (node id 0), leader and only
in-sync replica of every partition, with no leader epochs (-1). In cluster mode
(``attach_peers``) every node is a broker and a topic's leader is its stream's node.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from smartbroker.broker.core import Broker
from smartbroker.kafka import (
    admin,
    alter_configs,
    cluster,
    codec,
    group_admin,
    groups,
    offsets,
    partitions,
    produce,
    reassignments,
    records_admin,
    sasl,
    scram_admin,
    slices,
    txn_api,
    txn_describe,
)
from smartbroker.kafka.authz import (
    acting_as,
    cluster_operations,
    topic_allowed,
    topic_operations,
)
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.fetch import Fetcher
from smartbroker.kafka.protocol import KafkaProtocolError

SUPPORTED: dict[int, tuple[int, int]] = {
    codec.API_VERSIONS: (0, 4),
    sasl.SASL_HANDSHAKE: sasl.HANDSHAKE_VERSIONS,
    sasl.SASL_AUTHENTICATE: sasl.AUTHENTICATE_VERSIONS,
    codec.METADATA: (0, 12),
    codec.FETCH: (4, 16),
    produce.PRODUCE: produce.VERSIONS,
    offsets.LIST_OFFSETS: offsets.VERSIONS,
    admin.CREATE_TOPICS: admin.CREATE_VERSIONS,
    admin.DELETE_TOPICS: admin.DELETE_VERSIONS,
    admin.DESCRIBE_CONFIGS: admin.DESCRIBE_VERSIONS,
    partitions.CREATE_PARTITIONS: partitions.PARTITIONS_VERSIONS,
    records_admin.DELETE_RECORDS: records_admin.RECORDS_VERSIONS,
    alter_configs.ALTER_CONFIGS: alter_configs.ALTER_VERSIONS,
    alter_configs.INCREMENTAL_ALTER_CONFIGS: alter_configs.INCREMENTAL_VERSIONS,
    cluster.DESCRIBE_CLUSTER: cluster.CLUSTER_VERSIONS,
    groups.FIND_COORDINATOR: groups.COORDINATOR_VERSIONS,
    groups.OFFSET_COMMIT: groups.COMMIT_VERSIONS,
    groups.OFFSET_FETCH: groups.FETCH_VERSIONS,
    **groups.MEMBERSHIP_VERSIONS,  # JoinGroup, SyncGroup, Heartbeat, LeaveGroup
    group_admin.LIST_GROUPS: group_admin.LIST_VERSIONS,
    group_admin.DESCRIBE_GROUPS: group_admin.DESCRIBE_VERSIONS,
    group_admin.DELETE_GROUPS: group_admin.DELETE_VERSIONS,
    group_admin.OFFSET_DELETE: group_admin.OFFSET_DELETE_VERSIONS,
    **txn_api.VERSIONS,  # InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, ...
    **scram_admin.VERSIONS,  # Describe/AlterUserScramCredentials
    **txn_describe.VERSIONS,  # DescribeProducers, DescribeTransactions, ListTransactions
    **reassignments.VERSIONS,  # Alter/ListPartitionReassignments
}
NODE_ID = 0
MAX_TOPIC_LENGTH = 249  # Kafka's Topic.MAX_NAME_LENGTH
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")
_NO_UUID = uuid.UUID(int=0)
_TOPIC_IDS = uuid.UUID("0a2d5e4e-8f4b-4a43-9c6e-6b61666b6131")  # uuid5 namespace of ours


def valid_topic_name(name: str) -> bool:
    """Kafka's Topic.validate: 1-249 characters of [a-zA-Z0-9._-], not "." or ".."."""
    return (0 < len(name) <= MAX_TOPIC_LENGTH and name not in (".", "..")
            and _LEGAL_TOPIC.fullmatch(name) is not None)


@dataclass(frozen=True)
class Node:
    """What Metadata says about this broker: where clients reach it, and the cluster id."""

    host: str | None  # None: the address each client connected to (Session.local_host)
    port: int
    cluster_id: str
    vhost: str

    @staticmethod
    def cluster_id_for(seed: str) -> str:
        """A Kafka-shaped cluster id (22 characters of URL-safe base64), stable for one
        data directory across restarts."""
        raw = uuid.uuid5(_TOPIC_IDS, seed).bytes
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass
class Session:
    """One connection as the handlers see it."""

    peer: str
    local_host: str  # the address the client reached us on
    port: int = 0  # the port Metadata advertises to it (its listener's: TLS or not); 0: Node's
    # the user it acts as: the default user without SASL (when its loopback rule allows),
    # the SASL user once authenticated; None until then (only ApiVersions and SASL served)
    user: str | None = None
    sasl: Any = None  # sasl.SaslExchange from the SaslHandshake on
    closing: bool = False  # a SASL refusal: close once its response is written


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    topic_id: uuid.UUID
    leader: int = NODE_ID  # the broker id of the node leading its stream
    leaders: tuple[int, ...] = ()  # cluster: each partition's, when spread (-1: down)
    # cluster: each partition's (replicas, in-sync replicas) when replicated
    replicas: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()


class KafkaHandlers:
    """The handlers of one listener, sharing the broker and this node's identity."""

    def __init__(self, broker: Broker, node: Node) -> None:
        self.broker = broker
        self.node = node
        self.sasl = sasl.SaslHandlers(broker, node.vhost)
        self.scram_admin = scram_admin.ScramAdmin(broker, node.vhost)
        self.fetcher = Fetcher(broker, node.vhost, self.topic_id)
        self.streams = produce.Topics(broker, node.vhost, valid_topic_name)
        self.producer = produce.Producer(broker, self.streams)
        self.txn = txn_api.TxnHandlers(broker, self.streams)  # idempotence, transactions
        self.producer.txn_lookup = self.txn.coordinator.lookup
        self.txn_describe = txn_describe.TxnDescriber(broker, self.streams, self.txn.coordinator)
        self.lister = offsets.OffsetLister(self.streams)
        self.admin = admin.TopicAdmin(broker, self.streams, self.topic_id)
        self.partitions = partitions.PartitionAdmin(self.admin)
        self.records_admin = records_admin.RecordsAdmin(self.admin)
        self.alterer = alter_configs.ConfigAlterer(self.admin)
        self.reassignments = reassignments.Reassignments(  # cluster mode: kafka_peers
            broker, node.vhost, reassignments.SingleNode(
                lambda name: None if (t := self.topic(name)) is None else t.partitions))
        self.peers: cluster.Peers | None = None  # cluster mode (attach_peers)
        self.node_id = NODE_ID  # this node's broker id
        self.cluster = cluster.ClusterInfo(
            node.cluster_id, lambda s: (self.node_id, self.node.host or s.local_host, self.node.port),
            lambda: cluster_operations(broker, self.node.vhost))
        self.groups = groups.GroupCoordinator(
            self.streams, self._coordinator_address, lambda: [t.name for t in self.topics()])
        self.coordinator = self.groups.coordinator  # the Kafka groups (kafka/coordinator.py)
        self.txn.group_of = self.coordinator.group  # TxnOffsetCommit checks member/generation
        self.groups.pending_txn_offset = self.txn.coordinator.pending_offset
        self.group_admin = group_admin.GroupAdmin(
            self.streams, lambda: getattr(self, "coordinator", None))
        self.table: dict[int, Callable[[Request, Session], Any]] = {
            codec.API_VERSIONS: self.api_versions,
            sasl.SASL_HANDSHAKE: self.sasl.handshake,
            sasl.SASL_AUTHENTICATE: self.sasl.authenticate,
            codec.METADATA: self.metadata,
            codec.FETCH: self.fetcher.fetch,
            produce.PRODUCE: self.producer.produce,
            offsets.LIST_OFFSETS: self.lister.list_offsets,
            admin.CREATE_TOPICS: self.admin.create_topics,
            admin.DELETE_TOPICS: self.admin.delete_topics,
            admin.DESCRIBE_CONFIGS: self.admin.describe_configs,
            partitions.CREATE_PARTITIONS: self.partitions.create_partitions,
            records_admin.DELETE_RECORDS: self.records_admin.delete_records,
            alter_configs.ALTER_CONFIGS: self.alterer.alter_configs,
            alter_configs.INCREMENTAL_ALTER_CONFIGS: self.alterer.incremental_alter_configs,
            cluster.DESCRIBE_CLUSTER: self.cluster.describe_cluster,
            groups.FIND_COORDINATOR: self.groups.find_coordinator,
            groups.OFFSET_COMMIT: self.groups.offset_commit,
            groups.OFFSET_FETCH: self.groups.offset_fetch,
            **self.groups.membership_table(),
            group_admin.LIST_GROUPS: self.group_admin.list_groups,
            group_admin.DESCRIBE_GROUPS: self.group_admin.describe_groups,
            group_admin.DELETE_GROUPS: self.group_admin.delete_groups,
            group_admin.OFFSET_DELETE: self.group_admin.offset_delete,
            **self.txn.table(),
            scram_admin.DESCRIBE_SCRAM: self.scram_admin.describe,
            scram_admin.ALTER_SCRAM: self.scram_admin.alter,
            txn_describe.DESCRIBE_PRODUCERS: self.txn_describe.describe_producers,
            txn_describe.DESCRIBE_TRANSACTIONS: self.txn_describe.describe_transactions,
            txn_describe.LIST_TRANSACTIONS: self.txn_describe.list_transactions,
            reassignments.ALTER_REASSIGNMENTS: self.reassignments.alter,
            reassignments.LIST_REASSIGNMENTS: self.reassignments.list,
        }
        assert self.table.keys() == SUPPORTED.keys(), "advertise exactly what is implemented"

    def attach_peers(self, peers: cluster.Peers) -> None:
        """Cluster mode: the other nodes are brokers too, their topics listed with them as
        leaders, and this node refuses what they lead (NOT_LEADER_OR_FOLLOWER)."""
        self.peers = self.cluster.peers = self.groups.peers = peers
        self.node_id = self.admin.node_id = peers.node_id
        self.admin.brokers = lambda: len(peers.brokers())  # a replication factor's bound
        self.node = dataclasses.replace(self.node, cluster_id=peers.cluster_id)
        self.cluster.cluster_id = peers.cluster_id
        self.streams.led_elsewhere = self.fetcher.led_elsewhere = peers.led_elsewhere
        self.lister.partition_elsewhere = peers.partition_elsewhere
        self.streams.partition_elsewhere = peers.partition_elsewhere
        # producer ids unique over the nodes: a partition's idempotence state is keyed by
        # them, and the producers of one partition may have asked different nodes
        self.txn.coordinator.pid_base = peers.node_id << 32
        self.fetcher.partition_elsewhere = peers.partition_elsewhere
        self.fetcher.remote_name = lambda tid: next(
            (t.name for t in peers.remote_topics() if t.topic_id == tid), None)

    def _coordinator_address(self, s: Session) -> tuple[int, str, int]:
        """Where FindCoordinator sends a client to reach this node: as Metadata names it."""
        own = self.peers.own() if self.peers is not None else None
        return own or (self.node_id, self.node.host or s.local_host, s.port or self.node.port)

    def handle(self, request: Request, session: Session) -> Any:
        """The response body for ``request`` (its api key is one of SUPPORTED), with the
        permission checks made as the session's user (authz.py)."""
        with acting_as(session.user or self.broker.config.default_user):
            return self.table[request.api_key](request, session)

    # -- topics ----------------------------------------------------------------------------

    def topics(self) -> Iterator[Topic]:
        """The Kafka vhost's stream queues whose names Kafka allows (a stream declared over
        AMQP as "a b" or "a/b" exists, but no Kafka client could name it)."""
        vhost = self.broker.vhosts.get(self.node.vhost)
        if vhost is None:
            return
        for name, queue in list(vhost.queues.items()):
            topic = self._topic(name, queue)
            if topic is not None and valid_topic_name(name):
                yield topic
        if self.peers is not None:
            for remote in self.peers.remote_topics():
                yield Topic(remote.name, remote.partitions, remote.topic_id, remote.leader)

    def topic(self, name: str) -> Topic | None:
        vhost = self.broker.vhosts.get(self.node.vhost)
        found = None if vhost is None else self._topic(name, vhost.queues.get(name))
        if found is None and self.peers is not None:
            remote = self.peers.remote_topic(name)
            if remote is not None:
                return Topic(remote.name, remote.partitions, remote.topic_id, remote.leader)
        return found

    def _topic(self, name: str, queue: Any) -> Topic | None:
        """A stream queue as a topic; None for a classic queue (not a topic) or nothing."""
        if queue is None or not queue.capabilities.offset_log:
            return None  # a queue leaves vhost.queues before it is deleted
        topic = Topic(name, len(queue.partitions), queue.meta.topic_id, self.node_id)
        layout = None if self.peers is None else self.peers.partition_layout(
            name, topic.topic_id, topic.partitions)
        if layout is None:
            return topic
        topic_id, leaders = layout  # partitions spread over the nodes
        if topic_id is None:  # its leader has not described it yet: LEADER_NOT_AVAILABLE
            return None
        replicas = self.peers.partition_replicas(name, topic.partitions) or ()
        return Topic(name, topic.partitions, topic_id, self.node_id, leaders, replicas)

    def topic_id(self, name: str) -> uuid.UUID:
        """What Metadata calls the topic, and Fetch v13+ names it by: the id stored with
        the stream (``StreamMeta``), new for a topic deleted and created again, as in
        Kafka; the zero id when there is no such topic."""
        topic = self.topic(name)
        return _NO_UUID if topic is None else topic.topic_id

    # -- ApiVersions -----------------------------------------------------------------------

    def api_versions(self, request: Request, session: Session) -> Any:
        cls = codec.response_class(codec.API_VERSIONS)
        return cls(version=request.api_version, error_code=ErrorCode.NONE, throttle_time_ms=0,
                   api_keys=[cls.ApiVersion(api_key=key, min_version=lo, max_version=hi)
                             for key, (lo, hi) in sorted(SUPPORTED.items())])

    # -- Metadata --------------------------------------------------------------------------

    def metadata(self, request: Request, session: Session, caught_up: bool = False) -> Any:
        cls = codec.response_class(codec.METADATA)
        body = request.body
        wanted = body.topics
        if wanted is None or (request.api_version == 0 and not wanted):
            topics = [self._topic_metadata(cls, t) for t in self.topics()]  # all topics
        else:
            if request.api_version < 12 and any(t.name is None for t in wanted):
                # Kafka's MetadataRequest: topic ids only from v12; refused as it parses
                raise KafkaProtocolError("Metadata before v12 with a null topic name")
            # Kafka: v0-3 may always auto-create, v4+ when the client allows it
            create = request.api_version < 4 or bool(body.allow_auto_topic_creation)
            # topic ids resolved through one map, not a scan of every topic per id
            by_id = {t.topic_id: t for t in self.topics()} if any(
                t.name is None for t in wanted) else {}
            topics = [self._requested(cls, t, create, by_id) for t in wanted]
        version = request.api_version
        if version >= 8 and body.include_topic_authorized_operations:  # describe_topics
            for t in topics:
                if t.error_code == ErrorCode.NONE:
                    t.authorized_operations = topic_operations(self.broker, self.node.vhost,
                                                               t.name)
        # v8-10 (librdkafka's describe_cluster): what DescribeCluster answers
        cluster_ops = (self.cluster.operations() if 8 <= version <= 10
                       and body.include_cluster_authorized_operations else None)
        found = ([(NODE_ID, self.node.host or session.local_host, session.port or self.node.port)]
                 if self.peers is None else self.peers.brokers())
        if not caught_up and self.broker.catch_up is not None and any(
                t.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION for t in topics):
            # cluster mode: another node may have created it a moment ago (as AMQP's 404s)
            return slices.detached(self._metadata_caught_up(request, session))
        return cls(version=request.api_version, throttle_time_ms=0,
                   brokers=[cls.MetadataResponseBroker(node_id=i, host=h, port=p, rack=None)
                            for i, h, p in found],
                   cluster_id=self.node.cluster_id, controller_id=self.node_id, topics=topics,
                   authorized_operations=cluster_ops)

    async def _metadata_caught_up(self, request: Request, session: Session) -> Any:
        """Metadata again once this node applied what etcd holds (cluster/visibility.py,
        bounded): only an unknown topic pays the etcd read."""
        catch_up = self.broker.catch_up
        assert catch_up is not None
        await catch_up(self.node.vhost)
        return self.metadata(request, session, caught_up=True)

    def _requested(self, cls: Any, wanted: Any, create: bool, by_id: dict[Any, Topic]) -> Any:
        name = wanted.name
        if name is None:  # v10+: by topic id
            tid = getattr(wanted, "topic_id", None)
            found = by_id.get(tid)
            if found is None:
                return self._topic_error(cls, None, ErrorCode.UNKNOWN_TOPIC_ID, tid)
            return self._topic_metadata(cls, found)
        if not valid_topic_name(name):
            return self._topic_error(cls, name, ErrorCode.INVALID_TOPIC_EXCEPTION)
        found = self.topic(name)
        if found is None and self.peers is not None and self.peers.led_elsewhere(name):
            # its stream is another node's, not yet described there: Kafka's answer while
            # a topic's leader is being elected, which clients retry
            return self._topic_error(cls, name, ErrorCode.LEADER_NOT_AVAILABLE)
        if found is None and create and self.broker.config.kafka_auto_create_topics and \
                not topic_allowed(self.broker, self.node.vhost, "configure", name):
            # Kafka's Metadata: a topic the client may not create is refused as such
            return self._topic_error(cls, name, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
        if found is None and create and (self.peers is None
                                         or not self.peers.led_elsewhere(name)):
            try:  # when kafka_auto_create_topics is on
                self.streams.stream(name, create=True)
            except produce.PartitionError as exc:
                return self._topic_error(cls, name, exc.code)
            found = self.topic(name)
        if found is None:
            return self._topic_error(cls, name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        return self._topic_metadata(cls, found)

    @staticmethod
    def _topic_error(cls: Any, name: str | None, code: ErrorCode,
                     topic_id: uuid.UUID | None = None) -> Any:
        return cls.MetadataResponseTopic(error_code=code, name=name,
                                         topic_id=topic_id or _NO_UUID, is_internal=False,
                                         partitions=[], authorized_operations=None)

    @staticmethod
    def _topic_metadata(cls: Any, topic: Topic) -> Any:
        part = cls.MetadataResponseTopic.MetadataResponsePartition
        leaders = topic.leaders or (topic.leader,) * topic.partitions
        alone = [((leader,), (leader,)) if leader >= 0 else ((), ()) for leader in leaders]
        sets = topic.replicas or alone  # replicated: its members and ISR, else the leader
        partitions = [part(error_code=ErrorCode.NONE if leader >= 0
                           else ErrorCode.LEADER_NOT_AVAILABLE, partition_index=i,
                           leader_id=leader, leader_epoch=-1,
                           replica_nodes=list(sets[i][0]), isr_nodes=list(sets[i][1]),
                           offline_replicas=[])
                      for i, leader in enumerate(leaders)]
        return cls.MetadataResponseTopic(error_code=ErrorCode.NONE, name=topic.name,
                                         topic_id=topic.topic_id, is_internal=False,
                                         partitions=partitions, authorized_operations=None)
