"""What one connection may do: RabbitMQ's permission checks (``Permissions``) with a cache
of what this connection was already allowed, dropped whenever any permission changes.

Broker policy, not I/O: it reads the connection's user and vhost (set at connection.open,
after this object is made) through the ``ClientConnection`` protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartbroker.broker.permissions import Permissions, indirect_targets

if TYPE_CHECKING:
    from smartbroker.broker.outbox import ClientConnection


def is_loopback(peer: str) -> bool:
    """Whether ``host:port`` is a loopback address (RabbitMQ's loopback_users rule)."""
    host = peer.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "localhost") or host.startswith("::ffff:127.")


def may_connect_from(config: Any, user_name: str, peer: str) -> bool:
    """RabbitMQ's loopback_users: those users may only connect from this machine."""
    return user_name not in config.loopback_users or is_loopback(peer)


class Access:
    __slots__ = ("conn", "permissions", "_allowed", "version")

    def __init__(self, permissions: Permissions, conn: ClientConnection) -> None:
        self.conn = conn
        self.permissions = permissions
        self._allowed: set[tuple[str, str, str]] = set()
        self.version = -1  # the Permissions.version the cache was filled under

    def check(self, kind: str, resource: str, name: str) -> None:
        """configure/write/read on a queue or exchange; 403 unless allowed."""
        perms = self.permissions
        if self.version != perms.version:
            self._allowed.clear()
            self.version = perms.version
        key = (kind, resource, name)
        if key not in self._allowed:
            conn = self.conn
            perms.check(conn.user.name, conn.vhost.name, kind, resource, name)  # type: ignore[arg-type]
            self._allowed.add(key)

    def check_declare(self, resource: str, name: str, arguments: dict[str, Any] | None,
                      exists: bool) -> None:
        """A declare that creates a queue with a dead-letter exchange (an exchange with an
        alternate exchange) also needs read on itself and write on that exchange, as in
        RabbitMQ: 403 naming the refused resource. Redeclaring an existing one is only
        compared for equivalence (no new route is made)."""
        if exists:
            return
        for target in indirect_targets(resource, arguments):
            self.check("read", resource, name)
            self.check("write", "exchange", target)

    def check_topic(self, kind: str, exchange: Any, routing_key: str) -> None:
        """Topic permissions: only on topic exchanges, only for users that have some."""
        perms = self.permissions
        if perms.topic and exchange is not None and exchange.type_name == "topic":
            conn = self.conn
            perms.check_topic(conn.user.name, conn.vhost.name, kind, exchange.name,  # type: ignore[arg-type]
                              routing_key)

    def check_topic_named(self, kind: str, exchange: str, routing_key: str) -> None:
        if self.permissions.topic:
            self.check_topic(kind, self.conn.vhost.exchanges.get(exchange), routing_key)
