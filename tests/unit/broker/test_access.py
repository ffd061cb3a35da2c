"""Access (broker/access.py): a connection's permission cache, dropped on any change, and
the indirect permissions a declare needs (RabbitMQ's texts)."""

from __future__ import annotations

import pytest
from broker_fakes import FakeConnection, new_broker

from smartbroker.broker.access import Access
from smartbroker.broker.permissions import Permission, TopicPermission
from smartbroker.errors import AMQPError


@pytest.fixture
def access() -> Access:
    return FakeConnection(new_broker()).session.access


def code_text(call, *args) -> tuple[int, str]:
    with pytest.raises(AMQPError) as err:
        call(*args)
    return err.value.code, err.value.text


def test_allowed_checks_are_cached_until_any_permission_changes(access: Access) -> None:
    access.check("write", "exchange", "x")
    perms = access.permissions
    perms.entries[("/", "guest")] = Permission("guest", "/", write="^y$")  # no version bump
    access.check("write", "exchange", "x")  # served from the cache
    perms.set(Permission("guest", "/", write="^y$"))
    assert code_text(access.check, "write", "exchange", "x") == (
        403, "access to exchange 'x' in vhost '/' refused for user 'guest'")


def test_declaring_a_queue_with_a_dead_letter_exchange_needs_read_and_write(access: Access) -> None:
    access.permissions.set(Permission("guest", "/", read="^$"))
    args = {"x-dead-letter-exchange": "dlx"}
    access.check_declare("queue", "q", args, exists=True)  # redeclare: nothing new
    assert code_text(access.check_declare, "queue", "q", args, False) == (
        403, "access to queue 'q' in vhost '/' refused for user 'guest'")


def test_topic_permissions_only_on_topic_exchanges(access: Access) -> None:
    conn = access.conn
    conn.vhost.declare_exchange("d", "direct")
    conn.vhost.declare_exchange("t", "topic")
    access.permissions.set_topic(TopicPermission("guest", "/", "t", read="^a$"))
    access.check_topic_named("read", "d", "b")
    access.check_topic_named("read", "t", "a")
    assert code_text(access.check_topic_named, "read", "t", "b") == (
        403, "access to topic 'b' in exchange 't' in vhost '/' refused for user 'guest'")
