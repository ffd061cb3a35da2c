"""Kafka operations map to the default user's configure/write/read permissions on the topic
(kafka/authz.py): a refusal is TOPIC_AUTHORIZATION_FAILED (29) for that topic."""

from __future__ import annotations

import pytest

from smartbroker.broker.core import Broker
from smartbroker.broker.permissions import Permission
from smartbroker.config import Config
from smartbroker.kafka.authz import topic_allowed
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import KafkaHandlers, Node, valid_topic_name
from smartbroker.kafka.produce import PartitionError, Topics


def _broker(configure: str = ".*", write: str = ".*", read: str = ".*") -> Broker:
    broker = Broker(Config())
    broker.permissions.set(Permission("guest", "/", configure, write, read))
    return broker


def test_each_kind_is_the_permission_of_that_kind_on_the_topic_name() -> None:
    broker = _broker(configure="^admin-.*", write="^orders$", read="^(orders|audit)$")
    assert topic_allowed(broker, "/", "write", "orders")
    assert not topic_allowed(broker, "/", "write", "audit")
    assert topic_allowed(broker, "/", "read", "audit")
    assert not topic_allowed(broker, "/", "configure", "orders")
    assert topic_allowed(broker, "/", "configure", "admin-x")


def test_no_access_to_the_vhost_or_no_default_user_refuses_everything() -> None:
    broker = _broker()
    broker.permissions.delete("/", "guest")
    assert not topic_allowed(broker, "/", "read", "orders")
    broker = _broker()
    broker.users.users.pop("guest")
    assert not topic_allowed(broker, "/", "read", "orders")


def test_produce_to_a_topic_without_write_is_29_and_auto_creation_needs_configure() -> None:
    broker = _broker(configure="^$", write="^orders$")
    topics = Topics(broker, "/", valid_topic_name)
    with pytest.raises(PartitionError) as refused:
        topics.stream("audit", create=True, need="write")
    assert refused.value.code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(PartitionError) as unknown:  # may write, may not create it
        topics.stream("orders", create=True, need="write")
    assert unknown.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert "orders" not in broker.vhosts["/"].queues
    broker.permissions.set(Permission("guest", "/", "^orders$", "^orders$", ".*"))
    assert topics.stream("orders", create=True, need="write").capabilities.offset_log



def test_committing_a_group_offset_needs_read_on_the_topic(broker_with_streams: Broker) -> None:
    from tests.unit.kafka.test_kafka_groups import commit

    broker_with_streams.permissions.set(Permission("guest", "/", ".*", ".*", "^orders$"))
    handlers = KafkaHandlers(broker_with_streams, Node(None, 19092, Node.cluster_id_for("x"), "/"))
    codes = commit(handlers, "g1", {"orders": {0: 5}, "single": {0: 2}})
    assert codes == {("orders", 0): 0, ("single", 0): ErrorCode.TOPIC_AUTHORIZATION_FAILED}
    assert broker_with_streams.vhosts["/"].queues["single"].groups.book.get("g1", 0) is None


@pytest.fixture
def broker_with_streams() -> Broker:
    broker = Broker(Config())
    vhost = broker.vhosts["/"]
    vhost.declare_queue("orders", durable=True, arguments={"x-queue-type": "stream"})
    vhost.declare_queue("single", durable=True, arguments={"x-queue-type": "stream"})
    return broker
