"""What one connection may do: RabbitMQ's permission checks (``Permissions``) with a cache
of what this connection was already allowed, dropped whenever any permission changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartbroker.broker.permissions import indirect_targets

if TYPE_CHECKING:
    from smartbroker.server.connection import AMQPConnection


class Access:
    __slots__ = ("conn", "_allowed", "version")

    def __init__(self, conn: AMQPConnection) -> None:
        self.conn = conn
        self._allowed: set[tuple[str, str, str]] = set()
        self.version = -1  # the Permissions.version the cache was filled under

    def check(self, kind: str, resource: str, name: str) -> None:
        """configure/write/read on a queue or exchange; 403 unless allowed."""
        conn = self.conn
        perms = conn.broker.permissions
        if self.version != perms.version:
            self._allowed.clear()
            self.version = perms.version
        key = (kind, resource, name)
        if key not in self._allowed:
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
        conn = self.conn
        perms = conn.broker.permissions
        if perms.topic and exchange is not None and exchange.type_name == "topic":
            perms.check_topic(conn.user.name, conn.vhost.name, kind, exchange.name,  # type: ignore[arg-type]
                              routing_key)

    def check_topic_named(self, kind: str, exchange: str, routing_key: str) -> None:
        if self.conn.broker.permissions.topic:
            self.check_topic(kind, self.conn.vhost.exchanges.get(exchange), routing_key)
