"""Authorized operations in Metadata v8+, which librdkafka's describe_topics and
describe_cluster ask for (Metadata v10/v12, not DescribeCluster): when asked they are a
set, as Kafka answers (confluent-kafka-python's test_describe_operations found None);
when not asked, None. A user's set follows its permissions on the topic."""

from __future__ import annotations

import uuid

import pytest

from smartbroker.launcher import BrokerProcess
from tests.kafka.sasl_helpers import PASSWORD, add_user, confluent_sasl


def _admin(conf: dict) -> object:
    from confluent_kafka.admin import AdminClient

    return AdminClient(conf)


def _topic(admin: object) -> str:
    from confluent_kafka.admin import NewTopic

    name = f"authops-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 1)])[name].result(timeout=15)  # type: ignore[attr-defined]
    return name


def _describe(admin: object, topic: str, include: bool) -> object:
    from confluent_kafka import TopicCollection

    return admin.describe_topics(  # type: ignore[attr-defined]
        TopicCollection([topic]), include_authorized_operations=include,
        request_timeout=10)[topic].result(timeout=15)


def test_authorized_operations_only_when_asked(kafka_broker: BrokerProcess) -> None:
    from confluent_kafka.admin import AclOperation

    admin = _admin({"bootstrap.servers": kafka_broker.kafka_bootstrap})
    topic = _topic(admin)
    assert _describe(admin, topic, False).authorized_operations is None
    ops = set(_describe(admin, topic, True).authorized_operations)
    assert {AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE} <= ops
    cluster = admin.describe_cluster(  # type: ignore[attr-defined]
        include_authorized_operations=True, request_timeout=10).result(timeout=15)
    assert AclOperation.DESCRIBE in cluster.authorized_operations
    plain = admin.describe_cluster(request_timeout=10).result(timeout=15)  # type: ignore[attr-defined]
    assert plain.authorized_operations is None


@pytest.mark.extension
def test_authorized_operations_follow_the_users_permissions(kafka_broker: BrokerProcess) -> None:
    from confluent_kafka.admin import AclOperation

    topic = _topic(_admin({"bootstrap.servers": kafka_broker.kafka_bootstrap}))
    add_user(kafka_broker, "opsreader", permissions=("^$", "^$", ".*"))  # read only
    reader = _admin(confluent_sasl(kafka_broker.kafka_bootstrap, "PLAIN", "opsreader", PASSWORD))
    ops = set(_describe(reader, topic, True).authorized_operations)
    assert ops == {AclOperation.READ, AclOperation.DESCRIBE}
