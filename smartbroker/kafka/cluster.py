"""DescribeCluster, and what a cluster of nodes tells the Kafka front end (``Peers``).

On a single node this node is the whole cluster, its only broker and its controller. In
cluster mode (``--etcd``) the front end is given a ``Peers`` (cluster/kafka_peers.py):
every up node with a Kafka listener is a broker, a topic led by another node is listed
with that node as its partitions' leader, and this node answers NOT_LEADER_OR_FOLLOWER for
its partitions (Kafka's answer: the client refreshes Metadata and goes to the leader).

Any client that got this far may ask (before authentication only ApiVersions and SASL are
served), as Kafka lets any principal with DESCRIBE on the cluster, which the default
authorizer-less broker grants everyone. A request for controller endpoints (v1+,
endpoint type 2) is UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker answers it; with
``include_cluster_authorized_operations`` the answer lists what the asking user may do to
the cluster (``authz.cluster_operations``: Kafka's full cluster set for a user allowed
everything, as a broker without an authorizer answers every principal).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from smartbroker.kafka import codec
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode

DESCRIBE_CLUSTER, CLUSTER_VERSIONS = 60, (0, 2)
BROKERS = 1  # EndpointType: brokers (controllers: 2)
UNSUPPORTED_ENDPOINT_TYPE = 119  # Kafka's Errors.UNSUPPORTED_ENDPOINT_TYPE
OMITTED = None  # authorized_operations not asked for (the codec writes -2^31)


Endpoint = tuple[int, str, int]  # Kafka broker id, host, port


@dataclass(frozen=True)
class RemoteTopic:
    """A topic whose stream another node leads: what Metadata says about it here."""

    name: str
    leader: int  # the leading node's broker id
    partitions: int
    topic_id: uuid.UUID


class Peers(Protocol):
    """The cluster as the Kafka front end sees it (cluster/kafka_peers.py implements it)."""

    node_id: int  # this node's Kafka broker id
    cluster_id: str  # the same on every node

    def brokers(self) -> Sequence[Endpoint]:
        """Every up node with a Kafka listener (this one included)."""

    def own(self) -> Endpoint | None:
        """This node as ``brokers`` names it (``serve --workers``: its own port, not the
        shared one a client may have reached it on)."""

    def remote_topics(self) -> Sequence[RemoteTopic]:
        """The Kafka vhost's topics led by other up nodes."""

    def remote_topic(self, name: str) -> RemoteTopic | None: ...

    def led_elsewhere(self, name: str) -> bool:
        """Whether another node leads topic ``name`` (so it is not created or served here)."""

    def coordinator(self, group: str) -> Endpoint | None:
        """The node coordinating ``group`` when it is not this one."""

    def partition_layout(self, name: str, topic_id: uuid.UUID, partitions: int
                         ) -> tuple[uuid.UUID | None, tuple[int, ...]] | None:
        """A topic whose partitions are led by several nodes (held here, ``topic_id`` the
        local stream's): (the id its leader gives it, None until described; each
        partition's leader's broker id, -1 while that node is down). None otherwise."""

    def partition_replicas(self, name: str, partitions: int
                           ) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] | None:
        """A replicated topic held here: each partition's (replica broker ids, in-sync
        ones), for Metadata; None when it is not replicated."""

    def partition_elsewhere(self, name: str, partition: int) -> bool:
        """Whether another node leads ``partition`` of a topic held here (its Produce,
        Fetch and ListOffsets answer NOT_LEADER_OR_FOLLOWER)."""

    def coordinated_elsewhere(self, group: str, topics: Sequence[str]) -> bool:
        """Whether another node coordinates ``group`` (or must: ``topics`` are led there);
        the group's requests then answer NOT_COORDINATOR."""


class ClusterInfo:
    """The DescribeCluster handler; ``endpoint`` gives (node id, host, port) for a session,
    the host being the one the client reached unless one is advertised."""

    def __init__(self, cluster_id: str, endpoint: Callable[[Any], tuple[int, str, int]],
                 operations: Callable[[], set[int]]) -> None:
        self.cluster_id = cluster_id
        self.endpoint = endpoint
        self.operations = operations  # the requesting user's (authz.cluster_operations)
        self.peers: Peers | None = None  # cluster mode: every node is a broker

    def describe_cluster(self, request: Request, session: Any) -> Any:
        body = request.body
        cls = codec.response_class(DESCRIBE_CLUSTER)
        version = request.api_version
        node_id, host, port = self.endpoint(session)
        endpoint_type = body.endpoint_type if version >= 1 else BROKERS
        if endpoint_type != BROKERS:
            return cls(version=version, throttle_time_ms=0, error_code=UNSUPPORTED_ENDPOINT_TYPE,
                       error_message="The request was sent to an endpoint of type BROKER, "
                                     f"but we wanted an endpoint of type {endpoint_type}",
                       endpoint_type=endpoint_type, cluster_id=self.cluster_id,
                       controller_id=-1, brokers=[], authorized_operations=OMITTED)
        # the codec takes the bitfield as the set of its bits
        operations = (self.operations() if body.include_cluster_authorized_operations
                      else OMITTED)
        found = [(node_id, host, port)] if self.peers is None else self.peers.brokers()
        brokers = [cls.DescribeClusterBroker(broker_id=i, host=h, port=p, rack=None,
                                             is_fenced=False) for i, h, p in found]
        return cls(version=version, throttle_time_ms=0, error_code=ErrorCode.NONE,
                   error_message=None, endpoint_type=BROKERS, cluster_id=self.cluster_id,
                   controller_id=node_id, brokers=brokers, authorized_operations=operations)
