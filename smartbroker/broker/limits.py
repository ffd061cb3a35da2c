"""Per-vhost and per-user limits, RabbitMQ's names: vhost ``max-connections`` and
``max-queues``; user ``max-connections`` and ``max-channels``. Absent or negative means
unlimited. Exceeding one is RabbitMQ's reply: 530 NOT_ALLOWED for connections and
channels, 406 PRECONDITION_FAILED for a queue declare."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartbroker.errors import not_allowed, precondition_failed

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker
    from smartbroker.broker.outbox import ClientConnection

VHOST_LIMITS = ("max-connections", "max-queues")
USER_LIMITS = ("max-connections", "max-channels")


def _limit(limits: dict[str, int], name: str) -> int | None:
    value = limits.get(name)
    return value if value is not None and value >= 0 else None


def check_connection(broker: Broker, conn: ClientConnection, vhost: Any) -> None:
    """At connection.open: the vhost's and the user's connection limits."""
    others = [c for c in broker.connections if c is not conn and c.vhost is not None]
    limit = _limit(vhost.limits, "max-connections")
    if limit is not None and sum(1 for c in others if c.vhost is vhost) >= limit:
        raise not_allowed(f"access to vhost '{vhost.name}' refused for user '{conn.user.name}': "
                          f"connection limit ({limit}) is reached")
    limit = _limit(conn.user.limits, "max-connections")
    if limit is not None and sum(1 for c in others if c.user is conn.user) >= limit:
        raise not_allowed(f"Connection refused for user '{conn.user.name}': user connection "
                          f"limit ({limit}) is reached")


def check_channel(broker: Broker, conn: ClientConnection) -> None:
    """At channel.open: the user's channel limit, across all its connections."""
    limit = _limit(conn.user.limits, "max-channels")
    if limit is None:
        return
    opened = sum(len(c.channels) for c in broker.connections if c.user is conn.user)
    if opened >= limit:
        raise not_allowed(f"number of channels opened for user '{conn.user.name}' has reached "
                          f"the maximum allowed user limit of ({limit})")


def check_queue(vhost: Any, name: str) -> None:
    """Before a new queue is created."""
    limit = _limit(vhost.limits, "max-queues")
    if limit is not None and len(vhost.queues) >= limit:
        raise precondition_failed(f"cannot declare queue '{name}': queue limit in vhost "
                                  f"'{vhost.name}' ({limit}) is reached")
