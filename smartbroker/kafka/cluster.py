"""DescribeCluster: this node is the whole cluster, its only broker and its controller.

Any client that got this far may ask (before authentication only ApiVersions and SASL are
served), as Kafka lets any principal with DESCRIBE on the cluster, which the default
authorizer-less broker grants everyone. A request for controller endpoints (v1+,
endpoint type 2) is UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker answers it; with
``include_cluster_authorized_operations`` the answer lists what the asking user may do to
the cluster (``authz.cluster_operations``: Kafka's full cluster set for a user allowed
everything, as a broker without an authorizer answers every principal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode

DESCRIBE_CLUSTER, CLUSTER_VERSIONS = 60, (0, 2)
BROKERS = 1  # EndpointType: brokers (controllers: 2)
UNSUPPORTED_ENDPOINT_TYPE = 119  # Kafka's Errors.UNSUPPORTED_ENDPOINT_TYPE
OMITTED = None  # authorized_operations not asked for (the codec writes -2^31)


class ClusterInfo:
    """The DescribeCluster handler; ``endpoint`` gives (node id, host, port) for a session,
    the host being the one the client reached unless one is advertised."""

    def __init__(self, cluster_id: str, endpoint: Callable[[Any], tuple[int, str, int]],
                 operations: Callable[[], set[int]]) -> None:
        self.cluster_id = cluster_id
        self.endpoint = endpoint
        self.operations = operations  # the requesting user's (authz.cluster_operations)

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
        broker = cls.DescribeClusterBroker(broker_id=node_id, host=host, port=port, rack=None,
                                           is_fenced=False)
        return cls(version=version, throttle_time_ms=0, error_code=ErrorCode.NONE,
                   error_message=None, endpoint_type=BROKERS, cluster_id=self.cluster_id,
                   controller_id=node_id, brokers=[broker], authorized_operations=operations)
