"""The cluster's authorized operations (KIP-430), as a Kafka broker answers them: a user
allowed everything gets Kafka's whole cluster set (CREATE, ALTER, DESCRIBE, CLUSTER_ACTION,
DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE), from DescribeCluster (a bare socket)
and from Metadata (librdkafka's describe_cluster); a read-only user only the DESCRIBEs.
The topic set of a user allowed everything is Kafka's whole topic set too."""

from __future__ import annotations

import uuid

from smartbroker.launcher import BrokerProcess
from tests.kafka.raw_client import Raw
from tests.kafka.sasl_helpers import PASSWORD, add_user, confluent_sasl

CLUSTER_SET = {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS",
               "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}
TOPIC_SET = {"READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS",
             "ALTER_CONFIGS"}


def _names(ops: object) -> set[str]:
    return {op.name for op in ops}  # type: ignore[attr-defined]


def test_confluent_describe_cluster_and_topics_full_sets(kafka_broker: BrokerProcess) -> None:
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_broker.kafka_bootstrap})
    cluster = admin.describe_cluster(include_authorized_operations=True,
                                     request_timeout=10).result(timeout=15)
    assert _names(cluster.authorized_operations) == CLUSTER_SET
    topic = f"clusterops-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 1)])[topic].result(timeout=15)
    described = admin.describe_topics(TopicCollection([topic]),
                                      include_authorized_operations=True,
                                      request_timeout=10)[topic].result(timeout=15)
    assert _names(described.authorized_operations) == TOPIC_SET


def test_describe_cluster_request_full_set(kafka_broker: BrokerProcess) -> None:
    """DescribeCluster itself, on a bare socket with kafka-python's protocol classes
    (librdkafka asks Metadata instead)."""
    from kafka.protocol.admin import DescribeClusterRequest

    with Raw(kafka_broker.kafka_port) as raw:
        resp = raw.call(DescribeClusterRequest, 0, include_cluster_authorized_operations=True)
    # Kafka's AclOperation codes: CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
    # DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12
    assert set(resp.authorized_operations) == {5, 7, 8, 9, 10, 11, 12}


def test_a_read_only_user_may_only_describe_the_cluster(kafka_broker: BrokerProcess) -> None:
    from confluent_kafka.admin import AdminClient

    add_user(kafka_broker, "clusterreader", permissions=("^$", "^$", ".*"))
    admin = AdminClient(confluent_sasl(kafka_broker.kafka_bootstrap, "PLAIN", "clusterreader",
                                       PASSWORD))
    cluster = admin.describe_cluster(include_authorized_operations=True,
                                     request_timeout=10).result(timeout=15)
    assert _names(cluster.authorized_operations) == {"DESCRIBE", "DESCRIBE_CONFIGS"}


def test_describe_groups_lists_the_groups_operations_when_asked(
        kafka_broker: BrokerProcess) -> None:
    """DescribeGroups v3+ with include_authorized_operations: Kafka's group set (READ,
    DELETE, DESCRIBE) for a user allowed everything; not asked, "not provided"."""
    from kafka.protocol.admin import DescribeGroupsRequest

    group = f"opsgroup-{uuid.uuid4().hex[:8]}"
    with Raw(kafka_broker.kafka_port) as raw:
        asked = raw.call(DescribeGroupsRequest, 5, groups=[group],
                         include_authorized_operations=True)
        plain = raw.call(DescribeGroupsRequest, 5, groups=[group],
                         include_authorized_operations=False)
    assert set(asked.groups[0].authorized_operations) == {3, 6, 8}
    assert plain.groups[0].authorized_operations in (None, -2**31)
