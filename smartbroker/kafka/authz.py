"""What a Kafka client may do to a topic or group: the broker's permissions, as over AMQP.

A Kafka connection acts as the user it authenticated as with SASL, or without SASL as the
default user (``listener`` has already applied that user's loopback rule). Kafka operations
map to RabbitMQ's permission kinds on the topic's queue name in the Kafka vhost (issue 14):
Produce is ``write``, Fetch, ListOffsets and committing group offsets are ``read``, reading
them (OffsetFetch) any of the three (Kafka's DESCRIBE), creating (also by auto-creation) and
deleting a topic is ``configure``. A refusal is Kafka's
TOPIC_AUTHORIZATION_FAILED (29) for that topic, GROUP_AUTHORIZATION_FAILED (30) for a group
the user may not use at all (``group_allowed``).

Who is asking: ``KafkaHandlers.handle`` runs each handler inside ``acting_as(session.user)``
(a context variable, so the handlers of topics and groups need no user argument threaded
through them); a caller may also pass ``user`` explicitly. Outside any request (unit tests
calling a handler's helper directly) the default user is assumed, as before SASL existed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from smartbroker.errors import AMQPError

_ACTING_AS: contextvars.ContextVar[str | None] = contextvars.ContextVar("kafka_user", default=None)


@contextmanager
def acting_as(user: str) -> Iterator[None]:
    """Run the permission checks inside as ``user`` (the connection's)."""
    token = _ACTING_AS.set(user)
    try:
        yield
    finally:
        _ACTING_AS.reset(token)


def current_user(broker: Any, user: str | None = None) -> str:
    """``user``, else the connection's user of the request being handled, else the
    default user."""
    return user or _ACTING_AS.get() or broker.config.default_user


def vhost_allowed(broker: Any, vhost: str, user: str) -> bool:
    """Whether ``user`` exists and may use ``vhost`` at all (RabbitMQ's vhost access)."""
    return user in broker.users.users and broker.permissions.can_access(vhost, user)


def topic_allowed(broker: Any, vhost: str, kind: str, topic: str, user: str | None = None) -> bool:
    """Whether the user may ``kind`` (configure/write/read) the topic ``topic``."""
    name = current_user(broker, user)
    if not vhost_allowed(broker, vhost, name):
        return False
    try:
        broker.permissions.check(name, vhost, kind, "queue", topic)
    except AMQPError:
        return False
    return True


def group_allowed(broker: Any, vhost: str, group: str, user: str | None = None) -> bool:
    """Whether the user may use the consumer group ``group`` at all: group operations need
    ``read`` on the topics they name (check those with ``topic_allowed``); a request naming
    no topic (FindCoordinator, JoinGroup, Heartbeat, ListGroups...) is refused with
    GROUP_AUTHORIZATION_FAILED only when the user may read nothing in the Kafka vhost (no
    access to it, or an empty read pattern, RabbitMQ's "deny all"). Groups themselves have
    no permissions in RabbitMQ's model, so ``group`` names no resource here."""
    name = current_user(broker, user)
    if not vhost_allowed(broker, vhost, name):
        return False
    perm = broker.permissions.get(vhost, name)
    return perm is not None and perm.read not in ("", "^$")


# Kafka's AclOperation codes a topic can have, by the permission kind that grants them;
# DESCRIBE comes with any of them, as Kafka implies it from READ, WRITE, DELETE and ALTER
_TOPIC_OPERATIONS = {"read": (3,), "write": (4,), "configure": (5, 6, 7, 10, 11)}
DESCRIBE = 8


def topic_operations(broker: Any, vhost: str, topic: str) -> set[int]:
    """What Metadata v8+ lists as the topic's authorized operations when a client asks
    (librdkafka's describe_topics): READ, WRITE, CREATE/DELETE/ALTER/DESCRIBE_CONFIGS/
    ALTER_CONFIGS from read, write and configure on it, DESCRIBE with any."""
    ops = {op for kind, granted in _TOPIC_OPERATIONS.items()
           if topic_allowed(broker, vhost, kind, topic) for op in granted}
    return ops | {DESCRIBE} if ops else ops


# Kafka's AclOperation codes for the cluster resource (AclEntry.supportedOperations:
# CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE)
CREATE, ALTER, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 5, 7, 9, 10, 11, 12
_GRANTS_NOTHING = ("", "^$")  # RabbitMQ's "deny all" patterns


def cluster_operations(broker: Any, vhost: str, user: str | None = None) -> set[int]:
    """The cluster's authorized operations (DescribeCluster, Metadata v8-10), as Kafka
    computes them per principal (KIP-430): everything for a user allowed everything.
    DESCRIBE and DESCRIBE_CONFIGS with access to the Kafka vhost, CREATE (topics) with a
    configure permission there, IDEMPOTENT_WRITE with a write permission, and the
    cluster-wide changes (ALTER, ALTER_CONFIGS, CLUSTER_ACTION) for an ``administrator``
    (RabbitMQ's tag for broker-wide changes); nothing without vhost access."""
    name = current_user(broker, user)
    if not vhost_allowed(broker, vhost, name):
        return set()
    ops = {DESCRIBE, DESCRIBE_CONFIGS}
    perm = broker.permissions.get(vhost, name)
    if perm is not None and perm.configure not in _GRANTS_NOTHING:
        ops.add(CREATE)
    if perm is not None and perm.write not in _GRANTS_NOTHING:
        ops.add(IDEMPOTENT_WRITE)
    if "administrator" in broker.users.users[name].tags:
        ops |= {ALTER, ALTER_CONFIGS, CLUSTER_ACTION}
    return ops


def topic_describable(broker: Any, vhost: str, topic: str) -> bool:
    """Kafka's DESCRIBE on a topic (OffsetFetch needs it): any of configure, write or read
    on it, as Kafka implies DESCRIBE from READ, WRITE, DELETE and ALTER."""
    return any(topic_allowed(broker, vhost, kind, topic) for kind in _TOPIC_OPERATIONS)
