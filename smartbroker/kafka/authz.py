"""What a Kafka client may do to a topic: the broker's permissions, as over AMQP.

Until SASL exists, every Kafka connection acts as the default user (``listener.may_connect``
has already applied that user's loopback rule). Kafka operations map to RabbitMQ's
permission kinds on the topic's queue name in the Kafka vhost (issue 14): Produce is
``write``, Fetch, ListOffsets and offset reads are ``read``, creating (also by
auto-creation) and deleting a topic is ``configure``. A refusal is Kafka's
TOPIC_AUTHORIZATION_FAILED (29) for that topic.
"""

from __future__ import annotations

from typing import Any

from smartbroker.errors import AMQPError


def topic_allowed(broker: Any, vhost: str, kind: str, topic: str) -> bool:
    """Whether the default user may ``kind`` (configure/write/read) the topic ``topic``."""
    user = broker.config.default_user
    permissions = broker.permissions
    if user not in broker.users.users or not permissions.can_access(vhost, user):
        return False
    try:
        permissions.check(user, vhost, kind, "queue", topic)
    except AMQPError:
        return False
    return True
